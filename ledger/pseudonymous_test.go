package ledger_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestAppendPseudonymous: an event the ledger writes itself about a subject
// known by pseudonym lands under that pseudonym (the subject's timeline)
// and decrypts with the subject's key; a subjectRef that is not a pseudonym
// is refused and nothing is appended.
func TestAppendPseudonymous(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "a"))
	r, err := n.l.Append(t.Context(), []*piledgerv1.Event{collectFace("resident-7")})
	if err != nil {
		t.Fatal(err)
	}
	p := r[0].GetPseudonym()
	access := accessFootage(p)
	access.Processor = "piledger"
	got, err := n.l.AppendPseudonymous(t.Context(), []*piledgerv1.Event{access})
	if err != nil {
		t.Fatalf("AppendPseudonymous: %v", err)
	}
	if got[0].GetPseudonym() != p {
		t.Errorf("receipt pseudonym %q, want %q (not pseudonymized again)", got[0].GetPseudonym(), p)
	}
	es := entries(t, n.l, 0, 0)
	if len(es) != 2 || es[1].GetHeader().GetPseudonym() != p || es[1].GetEvent().GetAccess().GetActor() != "officer-88" {
		t.Fatalf("entries = %v", es)
	}

	_, err = n.l.AppendPseudonymous(t.Context(), []*piledgerv1.Event{accessFootage("resident-7")})
	var inv *ledger.InvalidEventError
	if !errors.As(err, &inv) || inv.Violations[0].Field != "events[0].subjectRef" {
		t.Errorf("AppendPseudonymous with a raw reference: %v, want a violation on events[0].subjectRef", err)
	}
	if n := len(entries(t, n.l, 0, 0)); n != 2 {
		t.Errorf("the log holds %d entries, want 2", n)
	}
}
