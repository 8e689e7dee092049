package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

func TestAppendReadRestart(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "node")
	n := startNode(t, dir)
	ctx := context.Background()

	batch := []*piledgerv1.Event{collectFace("resident-1"), accessFootage("resident-1"), collectFace("resident-2")}
	receipts, err := n.l.Append(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range receipts {
		if r.GetEventId() != batch[i].GetEventId() || r.GetIndex() != uint64(i) || r.GetDuplicate() {
			t.Errorf("receipt %d = %v, want event %s at index %d, not duplicate", i, r, batch[i].GetEventId(), i)
		}
	}
	if receipts[0].GetPseudonym() != receipts[1].GetPseudonym() || receipts[0].GetPseudonym() == receipts[2].GetPseudonym() {
		t.Errorf("pseudonyms: same subject must share one, different subjects must not: %v", receipts)
	}
	check := func(l *ledger.Ledger) {
		t.Helper()
		got := entries(t, l, 0, 0)
		if len(got) != len(batch) {
			t.Fatalf("read %d entries, want %d", len(got), len(batch))
		}
		for i, e := range got {
			if e.GetIndex() != uint64(i) || e.GetShredded() || !proto.Equal(e.GetEvent(), batch[i]) {
				t.Errorf("entry %d = %v, want %v", i, e, batch[i])
			}
			if e.GetHeader().GetPseudonym() != receipts[i].GetPseudonym() {
				t.Errorf("entry %d pseudonym differs from its receipt", i)
			}
		}
		if tail := entries(t, l, 1, 1); len(tail) != 1 || tail[0].GetIndex() != 1 {
			t.Errorf("Entries(1, 1) = %v, want the entry at index 1", tail)
		}
		if past := entries(t, l, 3, 0); len(past) != 0 {
			t.Errorf("Entries past the end = %v, want none", past)
		}
	}
	check(n.l)

	n.stop()
	n = startNode(t, dir)
	check(n.l)
	if got := n.l.Size(); got != 3 {
		t.Errorf("Size after restart = %d, want 3", got)
	}
}

func TestAppendIsIdempotent(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "node")
	n := startNode(t, dir)
	ctx := context.Background()
	ev := collectFace("resident-1")
	first, err := n.l.Append(ctx, []*piledgerv1.Event{ev})
	if err != nil {
		t.Fatal(err)
	}
	again := func(l *ledger.Ledger) {
		t.Helper()
		fresh := collectFace("resident-2")
		got, err := l.Append(ctx, []*piledgerv1.Event{fresh, ev})
		if err != nil {
			t.Fatal(err)
		}
		if !got[1].GetDuplicate() || got[1].GetIndex() != first[0].GetIndex() || got[1].GetBlockSequence() != first[0].GetBlockSequence() {
			t.Errorf("retried id: receipt %v, want the original %v marked duplicate", got[1], first[0])
		}
		if got[0].GetDuplicate() {
			t.Errorf("new id in the same batch marked duplicate: %v", got[0])
		}
	}
	again(n.l)

	// After a restart, and after the event-id index is deleted and rebuilt
	// from the log, a retry is still recognised (JetStream's own window is
	// irrelevant here).
	n.stop()
	n = startNode(t, dir)
	again(n.l)
	n.stop()
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, dir)
	again(n.l)

	// An index written in the layout before 2026-11 (state keys under 'm')
	// is rebuilt on open, and the retry is still recognised.
	n.stop()
	toOldIndexLayout(t, filepath.Join(dir, "index"))
	n = startNode(t, dir)
	again(n.l)
	if got := n.l.Size(); got != 5 {
		t.Errorf("Size = %d, want 5 (one original and four fresh events)", got)
	}
	n.stop()
	db, err := pebble.Open(filepath.Join(dir, "index"), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, k := range []string{"mapplied", "mnext", "mstream"} {
		if _, closer, err := db.Get([]byte(k)); err == nil {
			closer.Close()
			t.Errorf("old-layout key %q survived the rebuild", k)
		}
	}
}

// toOldIndexLayout rewrites the event-id index in dir as the layout before
// 2026-11 had it: the state keys under 'm' instead of 'a'.
func toOldIndexLayout(t *testing.T, dir string) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, name := range []string{"applied", "next", "stream"} {
		v, closer, err := db.Get([]byte("a" + name))
		if err != nil {
			t.Fatalf("index key %q: %v", "a"+name, err)
		}
		v = slices.Clone(v)
		closer.Close()
		if err := db.Set([]byte("m"+name), v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Delete([]byte("a"+name), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConcurrentAppendsAreContiguous(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "node"))
	const callers, each = 64, 20
	var (
		mu   sync.Mutex
		seen = make(map[uint64]string)
		wg   sync.WaitGroup
	)
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				ev := collectFace("resident-" + string(rune('a'+c%26)))
				rs, err := n.l.Append(context.Background(), []*piledgerv1.Event{ev})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := seen[rs[0].GetIndex()]; dup {
					t.Errorf("index %d given to %s and %s", rs[0].GetIndex(), prev, ev.GetEventId())
				}
				seen[rs[0].GetIndex()] = ev.GetEventId()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := uint64(callers * each)
	for i := uint64(0); i < total; i++ {
		if _, ok := seen[i]; !ok {
			t.Fatalf("index %d missing: receipts are not contiguous", i)
		}
	}
	got := entries(t, n.l, 0, 0)
	if uint64(len(got)) != total {
		t.Fatalf("log holds %d events, want %d", len(got), total)
	}
	for i, e := range got {
		if seen[uint64(i)] != e.GetHeader().GetEventId() {
			t.Fatalf("log index %d holds %s, receipt said %s", i, e.GetHeader().GetEventId(), seen[uint64(i)])
		}
	}
}

func TestConcurrentRetriesAppendOnce(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "node"))
	ev := collectFace("resident-1")
	const callers = 32
	var wg sync.WaitGroup
	receipts := make([]*piledgerv1.Receipt, callers)
	for c := range receipts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs, err := n.l.Append(context.Background(), []*piledgerv1.Event{proto.Clone(ev).(*piledgerv1.Event)})
			if err != nil {
				t.Error(err)
				return
			}
			receipts[c] = rs[0]
		}()
	}
	wg.Wait()
	originals := 0
	for _, r := range receipts {
		if !r.GetDuplicate() {
			originals++
		}
		if r.GetIndex() != 0 {
			t.Errorf("receipt %v, want index 0", r)
		}
	}
	if originals != 1 || n.l.Size() != 1 {
		t.Errorf("%d callers got an original receipt and the log holds %d events; want exactly one of each", originals, n.l.Size())
	}
}

func TestInvalidBatchAppendsNothing(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "node"))
	bad := collectFace("resident-1")
	bad.Processor = ""
	_, err := n.l.Append(context.Background(), []*piledgerv1.Event{collectFace("resident-2"), bad})
	var inv *ledger.InvalidEventError
	if !errors.As(err, &inv) || !errors.Is(err, ledger.ErrInvalidEvent) {
		t.Fatalf("Append = %v, want an InvalidEventError", err)
	}
	if len(inv.Violations) == 0 || inv.Violations[0].Field != "events[1].processor" {
		t.Errorf("violations = %v, want events[1].processor first", inv.Violations)
	}
	if n.l.Size() != 0 {
		t.Errorf("log holds %d events after a rejected batch, want 0", n.l.Size())
	}
}

func TestOversizedBatchIsRejected(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "node"))
	// Every event is within the per-event limits, but together they do
	// not fit one block, and a batch is never split.
	var batch []*piledgerv1.Event
	value := strings.Repeat("v", ledger.DefaultMaxAttributeValueBytes)
	for i := 0; i < 200; i++ {
		ev := collectFace("resident-1")
		ev.Attributes = make(map[string]string)
		for a := 0; a < ledger.DefaultMaxAttributes; a++ {
			ev.Attributes[fmt.Sprintf("attr-%d", a)] = value
		}
		batch = append(batch, ev)
	}
	_, err := n.l.Append(context.Background(), batch)
	var inv *ledger.InvalidEventError
	if !errors.As(err, &inv) || inv.Violations[0].Field != "events" {
		t.Fatalf("Append of a %d KiB batch = %v, want an InvalidEventError on events", len(batch)*ledger.DefaultMaxAttributes, err)
	}
	if n.l.Size() != 0 {
		t.Errorf("log holds %d events, want 0", n.l.Size())
	}
}

func TestTwoNodesShareOneLog(t *testing.T) {
	root := t.TempDir()
	a := startNode(t, filepath.Join(root, "a"))
	b := joinNode(t, a.srv, filepath.Join(root, "b"))
	var wg sync.WaitGroup
	const each = 100
	for _, n := range []*node{a, b} {
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each/4; i++ {
					if _, err := n.l.Append(context.Background(), []*piledgerv1.Event{collectFace("shared-resident")}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	for name, n := range map[string]*node{"a": a, "b": b} {
		got := entries(t, n.l, 0, 0)
		if len(got) != 2*each {
			t.Fatalf("node %s reads %d events, want %d", name, len(got), 2*each)
		}
		for i, e := range got {
			if e.GetIndex() != uint64(i) || e.GetEvent() == nil {
				t.Fatalf("node %s entry %d: index %d, event %v", name, i, e.GetIndex(), e.GetEvent())
			}
		}
	}
}

func TestUnsafeStreamIsRefused(t *testing.T) {
	root := t.TempDir()
	srv, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(root, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: ledger.DefaultStreamName, Subjects: []string{"piledger.log"}, Storage: jetstream.FileStorage, MaxAge: 3600e9,
	}); err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenLocalKEK(filepath.Join(root, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(root, "keyring")})
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	_, err = ledger.Open(ctx, js, keys, ledger.Config{IndexDir: filepath.Join(root, "index")})
	if !errors.Is(err, ledger.ErrUnsafeStream) {
		t.Fatalf("Open on a stream with max_age and deletes allowed = %v, want ErrUnsafeStream", err)
	}
	for _, want := range []string{"deny_delete", "deny_purge", "max_age"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
