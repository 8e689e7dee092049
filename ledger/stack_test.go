package ledger_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// node is one piledger node under test: real embedded NATS (unless it
// shares another node's), a real keyring and a real Pebble index.
type node struct {
	t      *testing.T
	dir    string
	srv    *ledger.EmbeddedServer
	nc     *nats.Conn
	js     jetstream.JetStream
	keys   *crypto.Keyring
	l      *ledger.Ledger
	cancel context.CancelFunc
	ran    chan error
}

// startNode starts NATS with its store under dir/nats and a ledger with its
// state under dir. Stop it with stop (also registered as cleanup).
func startNode(t testing.TB, dir string) *node {
	t.Helper()
	srv, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	n := joinNode(t, srv, dir)
	n.srv = srv
	return n
}

// joinNode starts a ledger node on an existing server, with its own state
// under dir (a second node of a cluster shares the stream, not the state).
func joinNode(t testing.TB, srv *ledger.EmbeddedServer, dir string) *node {
	t.Helper()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "..", "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(dir, "keyring")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(ctx, js, keys, ledger.Config{IndexDir: filepath.Join(dir, "index")})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	n := &node{dir: dir, nc: nc, js: js, keys: keys, l: l, cancel: cancel, ran: make(chan error, 1)}
	go func() { n.ran <- l.Run(runCtx) }()
	t.Cleanup(n.stop)
	return n
}

// stop shuts the node down in order: appends drained, index and keyring
// closed, then NATS. Safe to call twice.
func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	if err := <-n.ran; err != nil {
		panic(fmt.Sprintf("ledger.Run: %v", err))
	}
	n.l.Close()
	n.keys.Close()
	n.nc.Close()
	if n.srv != nil {
		n.srv.Shutdown()
	}
}

var epoch = time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)

// collectFace is a camera collecting a face in a public place.
func collectFace(ref string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId:        uuid.Must(uuid.NewV7()).String(),
		SubjectRef:     ref,
		Operation:      piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt:     timestamppb.New(epoch),
		Processor:      "city-police",
		System:         "gate-cam-7",
		DataCategories: []string{"face"},
		Purpose:        "public-safety",
		LegalBasis:     "legal-duty",
		Retention:      &piledgerv1.Retention{Minimum: durationpb.New(30 * 24 * time.Hour), KeepFor: durationpb.New(90 * 24 * time.Hour)},
		Place:          &piledgerv1.Place{Kind: "public-street", NoticeSignRef: "sign-12"},
		Attributes:     map[string]string{"note": "north entrance"},
	}
}

// accessFootage is a police officer retrieving footage with a reason.
func accessFootage(ref string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId:        uuid.Must(uuid.NewV7()).String(),
		SubjectRef:     ref,
		Operation:      piledgerv1.Operation_OPERATION_ACCESS,
		OccurredAt:     timestamppb.New(epoch.Add(time.Hour)),
		Processor:      "city-police",
		DataCategories: []string{"face"},
		Access:         &piledgerv1.Access{Actor: "officer-88", Reason: "case 2026-114: lost child", Kind: piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE},
	}
}

func entries(t testing.TB, l *ledger.Ledger, start, limit uint64) []*piledgerv1.LogEntry {
	t.Helper()
	var got []*piledgerv1.LogEntry
	if err := l.Entries(context.Background(), start, limit, func(e *piledgerv1.LogEntry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// append appends events in one batch and returns their receipts.
func (n *node) append(t testing.TB, events ...*piledgerv1.Event) []*piledgerv1.Receipt {
	t.Helper()
	r, err := n.l.Append(context.Background(), events)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return r
}
