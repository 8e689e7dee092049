package ledger_test

import (
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger/ledgertest"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestErasedSubjectAtRest crypto-shreds a subject whose events carry a
// marker (crypto.Keyring.Destroy; the ledger-level erase with its log event
// and receipt is not built yet, see docs/ERASURE.md). Afterwards its entries
// replay as headers marked shredded while another subject's stay readable, a
// new event for the subject is recorded under a new key generation, and a
// scan of every file finds neither the marker nor the destroyed wrapped key
// bytes.
func TestErasedSubjectAtRest(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "node")
	n := startNode(t, dir)
	ctx := context.Background()
	m := ledgertest.NewMarker(t)
	erased := markedEvents(m)
	kept := collectFace("resident-kept")
	receipts, err := n.l.Append(ctx, append(erased, kept))
	if err != nil {
		t.Fatal(err)
	}
	pseudonym := receipts[0].GetPseudonym()

	// Record the subject's wrapped key before erasing it.
	keys, err := n.js.Stream(ctx, crypto.DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	var wrapped, keptWrapped [][]byte
	keptPseudonym := receipts[len(erased)].GetPseudonym()
	for seq := uint64(1); seq <= keys.CachedInfo().State.LastSeq; seq++ {
		msg, err := keys.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var wk piledgerv1.WrappedKey
		if msg.Subject != crypto.DefaultPrefix+".keys.subject" || proto.Unmarshal(msg.Data, &wk) != nil {
			continue
		}
		switch wk.GetPseudonym() {
		case pseudonym:
			wrapped = append(wrapped, wk.GetKeyset())
		case keptPseudonym:
			keptWrapped = append(keptWrapped, wk.GetKeyset())
		}
	}
	if len(wrapped) != 1 || len(keptWrapped) != 1 {
		t.Fatalf("found %d and %d wrapped keys of the subjects, want 1 each", len(wrapped), len(keptWrapped))
	}

	rep, err := n.keys.Destroy(ctx, pseudonym)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Generations != 1 || rep.Overwritten != 1 {
		t.Errorf("Destroy = %+v, want generation 1, 1 key message overwritten", rep)
	}
	got := entries(t, n.l, 0, 0)
	if len(got) != len(erased)+1 {
		t.Fatalf("read %d entries, want %d", len(got), len(erased)+1)
	}
	for i, e := range got[:len(erased)] {
		if !e.GetShredded() || e.GetEvent() != nil || e.GetHeader().GetPseudonym() != pseudonym {
			t.Errorf("entry %d after erasure = %v, want a shredded header of the subject", i, e)
		}
	}
	if e := got[len(erased)]; e.GetShredded() || !proto.Equal(e.GetEvent(), kept) {
		t.Errorf("another subject's entry = %v, want it readable", e)
	}

	// A later event for the erased subject is recorded under a new key.
	later := collectFace("ref-" + string(m))
	if _, err := n.l.Append(ctx, []*piledgerv1.Event{later}); err != nil {
		t.Fatal(err)
	}
	last := entries(t, n.l, uint64(len(got)), 1)
	if len(last) != 1 || last[0].GetShredded() || last[0].GetHeader().GetKeyGeneration() != 2 || !proto.Equal(last[0].GetEvent(), later) {
		t.Fatalf("later event = %v, want it readable under key generation 2", last)
	}
	if e := entries(t, n.l, 0, 1); !e[0].GetShredded() {
		t.Error("the new generation resurrected an erased entry")
	}
	n.stop()

	// The marker is never stored in clear (erased or not, including the later
	// event's copy); the destroyed wrapped key must be gone from every file.
	forms := m.Forms()
	forms["wrapped-key"] = wrapped[0]
	hits, scanned := ledgertest.ScanFiles(t, root, forms)
	for _, h := range hits {
		t.Errorf("found at rest after erasure: %s", h)
	}
	if scanned < 5 {
		t.Fatalf("scanned only %d files", scanned)
	}
	for _, db := range []string{filepath.Join(dir, "index"), filepath.Join(dir, "keyring")} {
		scanPebble(t, db, forms)
	}
	// Control: the scan finds a wrapped key that is still there.
	if hits, _ := ledgertest.ScanFiles(t, filepath.Join(dir, "nats"), map[string][]byte{"kept": keptWrapped[0]}); len(hits) == 0 {
		t.Error("control: the scan does not find the other subject's wrapped key")
	}
}
