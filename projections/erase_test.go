package projections_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestReadModelsAfterKeyDestroyed: once a subject's keys are destroyed
// (crypto.Keyring.Destroy), the read models are blinded: the data map counts
// the holdings it can no longer show and the timeline shows no event
// content, without error, and another subject is unaffected. (The ledger-level
// erase that also records when and how many events is not built yet; see
// docs/ERASURE.md.)
func TestReadModelsAfterKeyDestroyed(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	ctx := context.Background()
	s.append(cameraFace("erased-person", "city-police", 1), policeAccess("erased-person", "city-police", 2),
		cameraFace("kept-person", "city-police", 1))
	s.sync()
	before := s.dataMap("erased-person")
	if len(before.GetHoldings()) == 0 {
		t.Fatal("no holdings before erasure")
	}
	timeline := func() string {
		t.Helper()
		evs, err := s.store.SubjectEvents(ctx, s.pseudonym("erased-person"), 100, "", nil)
		if err != nil {
			t.Fatalf("SubjectEvents: %v", err)
		}
		out, err := protojson.Marshal(evs)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	plains := []string{"gate-cam", "officer", "lost child"}
	// Control: the timeline shows them before erasure.
	for _, plain := range plains {
		if !strings.Contains(timeline(), plain) {
			t.Fatalf("control: the timeline does not show %q before erasure", plain)
		}
	}
	if _, err := s.keys.Destroy(ctx, s.pseudonym("erased-person")); err != nil {
		t.Fatal(err)
	}

	dm := s.dataMap("erased-person")
	if len(dm.GetHoldings()) != 0 || int(dm.GetShreddedHoldingCount()) != len(before.GetHoldings()) {
		t.Errorf("data map after erasure: %d holdings shown, %d counted shredded; want 0 and %d",
			len(dm.GetHoldings()), dm.GetShreddedHoldingCount(), len(before.GetHoldings()))
	}
	out := timeline()
	for _, plain := range plains {
		if strings.Contains(out, plain) {
			t.Errorf("timeline after erasure shows %q: %s", plain, out)
		}
	}
	if kept := s.dataMap("kept-person"); len(kept.GetHoldings()) == 0 {
		t.Error("another subject's data map lost its holdings")
	}
}

// TestReadModelsShowErasures: after a ledger erasure, the data map and the
// timeline say the subject was erased, when, and how many log entries it
// made unreadable (from the clear headers, so a rebuild says the same), and
// events recorded after it are shown and counted towards the next one.
func TestReadModelsShowErasures(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	s := startStack(t, dir)
	ctx := context.Background()
	first := s.append(cameraFace("erased-twice", "city-police", 1), policeAccess("erased-twice", "city-police", 2),
		cameraFace("bystander", "city-police", 1))
	again := s.append(policeAccess("erased-twice", "city-police", 3)) // in another block
	p := s.pseudonym("erased-twice")
	res, err := s.led.Erase(ctx, p, ledger.ErasureRequest{RequestedBy: "subject"})
	if err != nil {
		t.Fatal(err)
	}
	later := s.append(marketingCollect("erased-twice", "shop-9", 5))
	s.sync()

	check := func(store *projections.Store) {
		t.Helper()
		dm, err := store.DataMap(ctx, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := &piledgerv1.SubjectErasure{
			LogIndex: res.Receipt.GetIndex(), EraseTime: res.Receipt.GetRecordedAt(), Generation: 1,
			EventCount: 3, FirstIndex: first[0].GetIndex(), LastIndex: again[0].GetIndex(),
		}
		if len(dm.GetErasures()) != 1 || !proto.Equal(dm.GetErasures()[0], want) {
			t.Fatalf("data map erasures %v, want %v", dm.GetErasures(), want)
		}
		if len(dm.GetHoldings()) != 1 || dm.GetHoldings()[0].GetProcessor() != "shop-9" {
			t.Errorf("data map after the erasure: %v; want only the later holding", dm.GetHoldings())
		}
		evs, err := store.SubjectEvents(ctx, p, 10, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs.GetErasures()) != 1 || len(evs.GetSubjectEvents()) != 1 ||
			evs.GetSubjectEvents()[0].GetIndex() != later[0].GetIndex() {
			t.Errorf("timeline after the erasure: %d erasures, events %v", len(evs.GetErasures()), evs.GetSubjectEvents())
		}
	}
	check(s.store)

	// Rebuilt from the log, after the keys are gone: the same numbers.
	s.stopProjector()
	if err := os.RemoveAll(filepath.Join(dir, "projections")); err != nil {
		t.Fatal(err)
	}
	s.startProjector(projections.Config{Dir: filepath.Join(dir, "projections")})
	s.sync()
	check(s.store)

	// The second erasure counts the one entry recorded since the first.
	res2, err := s.led.Erase(ctx, p, ledger.ErasureRequest{RequestedBy: "admin", Reason: "again"})
	if err != nil {
		t.Fatal(err)
	}
	s.sync()
	dm, err := s.store.DataMap(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := dm.GetErasures(); len(e) != 2 || e[1].GetLogIndex() != res2.Receipt.GetIndex() || e[1].GetEventCount() != 1 ||
		e[1].GetFirstIndex() != later[0].GetIndex() || e[1].GetGeneration() != 2 {
		t.Fatalf("after the second erasure: %v", e)
	}
}

// racingLog is the ledger with a hook that runs once, right after the
// projector decrypted the first event of one subject and before it applies
// it: the moment an erasure can slip in.
type racingLog struct {
	*ledger.Ledger
	pseudonym string
	once      sync.Once
	hook      func()
}

func (r *racingLog) OpenEnvelope(ctx context.Context, env []byte) (*piledgerv1.LogEntry, error) {
	e, err := r.Ledger.OpenEnvelope(ctx, env)
	if err == nil && e.GetEvent() != nil && e.GetHeader().GetPseudonym() == r.pseudonym {
		r.once.Do(r.hook)
	}
	return e, err
}

// TestEventReadBeforeErasureStaysErased: an event the projector decrypted
// just before its subject was erased, and a new key generation was created
// for a later event, is not written under the new generation, where it
// would outlive the erasure.
func TestEventReadBeforeErasureStaysErased(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	s := startLog(t, dir)
	ctx := context.Background()
	s.append(policeAccess("raced", "city-police", 2))
	p := s.pseudonym("raced")
	rl := &racingLog{Ledger: s.led, pseudonym: p}
	rl.hook = func() {
		if _, err := s.led.Erase(ctx, p, ledger.ErasureRequest{RequestedBy: "subject"}); err != nil {
			t.Error(err)
		}
		s.append(marketingCollect("raced", "shop-9", 5)) // creates generation 2
	}
	store, err := projections.Open(projections.Config{Dir: filepath.Join(dir, "projections"), Now: s.clock.now}, rl, s.keys)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- store.Run(runCtx) }()
	defer func() {
		cancel()
		if err := errors.Join(<-done, store.Close()); err != nil {
			t.Errorf("projector: %v", err)
		}
	}()
	if err := store.Wait(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := store.Wait(ctx, s.led.Size()-1); err != nil {
		t.Fatal(err)
	}
	evs, err := store.SubjectEvents(ctx, p, 10, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, se := range evs.GetSubjectEvents() {
		if se.GetEvent().GetOperation() == piledgerv1.Operation_OPERATION_ACCESS {
			t.Errorf("the erased access event is readable after the erasure: %v", se)
		}
	}
	dm, err := store.DataMap(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range dm.GetHoldings() {
		if h.GetProcessor() == "city-police" {
			t.Errorf("the erased holding at city-police is readable after the erasure: %v", h)
		}
	}
}
