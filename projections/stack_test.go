package projections_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// stack is the real write path and read models under test: an embedded
// nats-server with its store in a temp dir, a keyring, a ledger and a Store
// whose projector runs, all with their state under dir.
type stack struct {
	t     testing.TB
	dir   string
	ns    *ledger.EmbeddedServer
	nc    *nats.Conn
	js    jetstream.JetStream
	keys  *crypto.Keyring
	led   *ledger.Ledger
	clock *clock

	stopLedger func()
	store      *projections.Store
	stopProj   func() error
}

// clock is a settable clock for the read models' evaluation time.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }

// startStack starts NATS, keyring and ledger with their state under dir,
// and a projector on dir/projections. Everything stops at the end of the
// test, in the production order: projector, ledger, keyring, NATS.
func startStack(t testing.TB, dir string) *stack {
	t.Helper()
	s := startLog(t, dir)
	s.startProjector(projections.Config{Dir: filepath.Join(dir, "projections")})
	return s
}

// startLog starts everything but the projector.
func startLog(t testing.TB, dir string) *stack {
	t.Helper()
	s := newStack(t, dir)
	t.Cleanup(s.stop)
	return s
}

// newStack is startLog without the cleanup: the caller stops the stack.
func newStack(t testing.TB, dir string) *stack {
	t.Helper()
	ns, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, ns: ns, clock: newClock(day(100))}
	s.connect(ns.Connect)
	return s
}

// connect opens the keyring and the ledger over a connection from dial.
func (s *stack) connect(dial func(...nats.Option) (*nats.Conn, error)) {
	t := s.t
	t.Helper()
	ctx := context.Background()
	nc, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenLocalKEK(filepath.Join(s.dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(s.dir, "keyring")})
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(ctx, js, keys, ledger.Config{IndexDir: filepath.Join(s.dir, "index")})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- led.Run(runCtx) }()
	s.nc, s.js, s.keys, s.led = nc, js, keys, led
	s.stopLedger = func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("ledger.Run: %v", err)
		}
		if err := led.Close(); err != nil {
			t.Errorf("ledger.Close: %v", err)
		}
		if err := keys.Close(); err != nil {
			t.Errorf("keyring.Close: %v", err)
		}
		nc.Close()
	}
}

// startProjector opens a Store with cfg (its clock is the stack's unless
// cfg sets one) and runs its projector.
func (s *stack) startProjector(cfg projections.Config) *projections.Store {
	s.t.Helper()
	store := s.openStore(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.Run(ctx) }()
	s.store = store
	s.stopProj = func() error {
		cancel()
		err := <-done
		return errors.Join(err, store.Close())
	}
	return store
}

// openStore opens a Store without running its projector.
func (s *stack) openStore(cfg projections.Config) *projections.Store {
	s.t.Helper()
	if cfg.Now == nil {
		cfg.Now = s.clock.now
	}
	store, err := projections.Open(cfg, s.led, s.keys)
	if err != nil {
		s.t.Fatal(err)
	}
	return store
}

// stopProjector stops the running projector and closes its Store.
func (s *stack) stopProjector() {
	s.t.Helper()
	if s.stopProj == nil {
		return
	}
	if err := s.stopProj(); err != nil {
		s.t.Errorf("projector: %v", err)
	}
	s.stopProj, s.store = nil, nil
}

func (s *stack) stop() {
	s.stopProjector()
	if s.stopLedger != nil {
		s.stopLedger()
		s.stopLedger = nil
	}
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns = nil
	}
}

// append appends events in one batch and returns their receipts.
func (s *stack) append(events ...*piledgerv1.Event) []*piledgerv1.Receipt {
	s.t.Helper()
	r, err := s.led.Append(context.Background(), events)
	if err != nil {
		s.t.Fatalf("append: %v", err)
	}
	return r
}

// sync waits until the running projector applied everything appended.
func (s *stack) sync() {
	s.t.Helper()
	s.waitFor(s.store, s.led.Size())
}

// waitFor waits until store applied size log entries.
func (s *stack) waitFor(store *projections.Store, size uint64) {
	s.t.Helper()
	if size == 0 {
		return
	}
	if err := store.Wait(context.Background(), size-1); err != nil {
		s.t.Fatalf("waiting for log size %d: %v", size, err)
	}
}

func (s *stack) pseudonym(ref string) string { return s.keys.Pseudonym(ref) }

func (s *stack) dataMap(ref string) *piledgerv1.DataMap {
	s.t.Helper()
	dm, err := s.store.DataMap(context.Background(), s.pseudonym(ref), nil)
	if err != nil {
		s.t.Fatalf("DataMap: %v", err)
	}
	return dm
}

// Event builders. Times are days after day0, which lies far enough in the
// past for every scenario to be over: the ledger refuses events from the
// future, the read models' clock is the stack's.

var day0 = time.Now().UTC().Truncate(24 * time.Hour).Add(-400 * 24 * time.Hour)

func day(d float64) time.Time { return day0.Add(time.Duration(d * float64(24*time.Hour))) }

func newID() string { return uuid.Must(uuid.NewV7()).String() }

func days(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * 24 * time.Hour) }

// cameraFace: a public-security camera captures a face in a public street,
// with the prominent notice the law asks for; footage is kept at least 30
// days and at most 90.
func cameraFace(ref, processor string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, System: "gate-cam-7",
		DataCategories: []string{"face"}, Purpose: "public-safety", LegalBasis: "legal-duty",
		Retention:  &piledgerv1.Retention{Minimum: days(30), KeepFor: days(90)},
		Place:      &piledgerv1.Place{Kind: "public-street", NoticeSignRef: "sign-12"},
		Attributes: map[string]string{"note": "north entrance"},
	}
}

// policeAccess: an officer retrieves the footage, with a case number.
func policeAccess(ref, processor string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_ACCESS,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, DataCategories: []string{"face"},
		Access: &piledgerv1.Access{Actor: "officer-88", Reason: "case 2026-114: lost child", Kind: piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE},
	}
}

// provide: the footage goes to another department, kept 60 days there.
func provide(ref, from, to string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_PROVIDE,
		OccurredAt: timestamppb.New(day(d)), Processor: from, DataCategories: []string{"face"},
		Purpose: "public-safety", LegalBasis: "legal-duty",
		Recipient: &piledgerv1.Recipient{Processor: to, System: "archive"},
		Retention: &piledgerv1.Retention{KeepFor: days(60)},
	}
}

func destroy(ref, processor string, d float64, categories ...string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_DESTROY,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, DataCategories: categories,
	}
}

// epidemicCollect: a health-code check collects the code status and travel
// history "until epidemic prevention ends".
func epidemicCollect(ref, processor string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, System: "health-code",
		DataCategories: []string{"health-code-status", "travel-history"}, Purpose: "epidemic-prevention",
		LegalBasis: "public-health-emergency",
		Retention:  &piledgerv1.Retention{UntilPurposeEnds: "epidemic-prevention"},
	}
}

// purposeEnded: the processor declares a purpose over, for one subject or
// (ref "") for all of them.
func purposeEnded(ref, processor, purpose string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_PURPOSE_ENDED,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, Purpose: purpose,
	}
}

func consent(ref, processor string, op piledgerv1.Operation, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: op, OccurredAt: timestamppb.New(day(d)),
		Processor: processor, Purpose: "marketing",
		Consent: &piledgerv1.Consent{Separate: true, Reference: "consent-form-3"},
	}
}

// marketingCollect: a shop collects a phone number on the strength of
// consent, with no retention stated.
func marketingCollect(ref, processor string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, DataCategories: []string{"phone"},
		Purpose: "marketing", LegalBasis: "consent", Consent: &piledgerv1.Consent{Separate: true, Reference: "consent-form-3"},
	}
}

func transferAbroad(ref, processor string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_TRANSFER_ABROAD,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, DataCategories: []string{"name", "address"},
		Purpose: "contract-performance", LegalBasis: "contract-or-hr",
		Consent:   &piledgerv1.Consent{Separate: true, Reference: "consent-77"},
		Recipient: &piledgerv1.Recipient{Processor: "logistics-hk", Country: "HK", System: "dispatch"},
		Retention: &piledgerv1.Retention{KeepFor: days(180)},
	}
}

// marshal is the deterministic encoding the rebuild tests compare.
func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ref(name string, i int) string { return fmt.Sprintf("%s-%04d", name, i) }
