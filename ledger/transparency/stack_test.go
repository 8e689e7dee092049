package transparency_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
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
	"github.com/piledger/piledger/ledger/tlog"
	"github.com/piledger/piledger/ledger/transparency"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// node is one piledger node under test: embedded NATS (unless it joined
// another node's), a real keyring, ledger and transparency log, with their
// state under dir. Every part is real.
type node struct {
	dir  string
	srv  *ledger.EmbeddedServer // nil when the node joined another's server
	nc   *nats.Conn
	js   jetstream.JetStream
	keys *crypto.Keyring
	led  *ledger.Ledger
	tl   *transparency.Log

	stopLedger, stopTL context.CancelFunc
	ledgerDone, tlDone chan error
}

// startNode starts NATS with its store in dir/nats and a node on it.
func startNode(t testing.TB, dir string, cfg transparency.Config) *node {
	t.Helper()
	srv, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	n := joinNode(t, srv, dir, cfg)
	n.srv = srv
	return n
}

// joinNode starts a node on an existing server with its own state under
// dir; the KEK is shared through dir/../kek.
func joinNode(t testing.TB, srv *ledger.EmbeddedServer, dir string, cfg transparency.Config) *node {
	t.Helper()
	ctx := context.Background()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "..", "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(dir, "keyring")})
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(ctx, js, keys, ledger.Config{IndexDir: filepath.Join(dir, "index")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(dir, "tree")
	}
	tl, err := transparency.Open(ctx, js, led, keys, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{dir: dir, nc: nc, js: js, keys: keys, led: led, tl: tl, ledgerDone: make(chan error, 1), tlDone: make(chan error, 1)}
	var lctx, tctx context.Context
	lctx, n.stopLedger = context.WithCancel(ctx)
	tctx, n.stopTL = context.WithCancel(ctx)
	go func() { n.ledgerDone <- led.Run(lctx) }()
	go func() { n.tlDone <- tl.Run(tctx) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop shuts the node down in the order serve uses: appends drained, the
// transparency log stopped and closed, ledger, keyring, NATS. Safe twice.
func (n *node) stop(t testing.TB) {
	if n.stopLedger == nil {
		return
	}
	n.stopLedger()
	if err := <-n.ledgerDone; err != nil {
		t.Errorf("ledger.Run: %v", err)
	}
	n.stopTL()
	if err := <-n.tlDone; err != nil {
		t.Errorf("transparency.Run: %v", err)
	}
	n.stopLedger = nil
	if err := n.tl.Close(); err != nil {
		t.Errorf("transparency.Close: %v", err)
	}
	n.led.Close()
	n.keys.Close()
	n.nc.Close()
	if n.srv != nil {
		n.srv.Shutdown()
	}
}

var epoch = time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)

// event returns a valid event of operation op about subject ref.
func event(ref string, op piledgerv1.Operation) *piledgerv1.Event {
	ev := &piledgerv1.Event{
		EventId:        uuid.Must(uuid.NewV7()).String(),
		SubjectRef:     ref,
		Operation:      op,
		OccurredAt:     timestamppb.New(epoch),
		Processor:      "city-police",
		DataCategories: []string{"face"},
	}
	switch op {
	case piledgerv1.Operation_OPERATION_COLLECT:
		ev.System = "gate-cam-7"
		ev.Purpose = "public-safety"
		ev.LegalBasis = "legal-duty"
		ev.Retention = &piledgerv1.Retention{Minimum: durationpb.New(30 * 24 * time.Hour), KeepFor: durationpb.New(90 * 24 * time.Hour)}
		ev.Place = &piledgerv1.Place{Kind: "public-street", NoticeSignRef: "sign-12"}
	case piledgerv1.Operation_OPERATION_ACCESS:
		ev.Access = &piledgerv1.Access{Actor: "officer-88", Reason: "case 2026-114", Kind: piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE}
	}
	return ev
}

// appendN appends n events about ref, in one batch, and returns their
// receipts.
func (n *node) appendN(t testing.TB, ref string, op piledgerv1.Operation, count int) []*piledgerv1.Receipt {
	t.Helper()
	evs := make([]*piledgerv1.Event, count)
	for i := range evs {
		evs[i] = event(ref, op)
	}
	rs, err := n.led.Append(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// waitSigned waits for a checkpoint covering the whole log.
func (n *node) waitSigned(t testing.TB) *tlog.Checkpoint {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cp, err := n.tl.WaitCheckpoint(ctx, n.led.Size())
	if err != nil {
		t.Fatalf("no checkpoint covers the %d events: %v", n.led.Size(), err)
	}
	return cp
}

// export writes the node's bundle to a buffer.
func (n *node) export(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tlog.NewBundleWriter(&buf)
	if err := n.tl.Export(context.Background(), w.Write); err != nil {
		t.Fatalf("Export: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// shred simulates the erasure of a subject (the real erasure feature comes
// later): it destroys every key message of the subject in the key stream
// with SecureDeleteMsg, which overwrites the stored bytes.
func (n *node) shred(t testing.TB, ref string) int {
	t.Helper()
	ctx := context.Background()
	pseudonym := n.keys.Pseudonym(ref)
	s, err := n.js.Stream(ctx, crypto.DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	last := s.CachedInfo().State.LastSeq
	destroyed := 0
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var wk piledgerv1.WrappedKey
		if msg.Subject != crypto.DefaultPrefix+".keys.subject" || proto.Unmarshal(msg.Data, &wk) != nil || wk.GetPseudonym() != pseudonym {
			continue
		}
		if err := s.SecureDeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
		destroyed++
	}
	if destroyed == 0 {
		t.Fatalf("no key message of the subject found")
	}
	return destroyed
}

func ref(i int) string { return fmt.Sprintf("resident-%04d", i) }
