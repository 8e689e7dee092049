package ledger_test

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestEraseRecordsTheErasureInTheLog: Erase appends an erasure entry (its
// content sealed under the ledger's key, readable in a replay) before it
// destroys the keys; the subject's earlier entries replay as shredded, a
// later event of the subject is sealed under a new generation and readable,
// and another subject is untouched.
func TestEraseRecordsTheErasureInTheLog(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "node"))
	ctx := context.Background()
	n.append(t, collectFace("erase-me"), accessFootage("erase-me"), collectFace("keep-me"))
	p := n.keys.Pseudonym("erase-me")

	res, err := n.l.Erase(ctx, p, ledger.ErasureRequest{RequestedBy: "admin", Reason: "subject request 77"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Receipt.GetIndex() != 3 || res.Generation != 1 || res.Keys.Overwritten == 0 {
		t.Fatalf("erase result %+v: want the entry at index 3, generation 1 destroyed, key messages overwritten", res)
	}
	after := n.append(t, collectFace("erase-me"))

	got := entries(t, n.l, 0, 10)
	if len(got) != 5 {
		t.Fatalf("%d entries, want 5", len(got))
	}
	for i, e := range got[:2] {
		if !e.GetShredded() || e.GetEvent() != nil {
			t.Errorf("entry %d of the erased subject is readable", i)
		}
	}
	if got[2].GetShredded() || got[2].GetEvent() == nil {
		t.Error("another subject's entry is unreadable")
	}
	er := got[3]
	if !er.GetHeader().GetErasure() || er.GetHeader().GetPseudonym() != p || er.GetShredded() || er.GetEvent() != nil ||
		er.GetErasure().GetGeneration() != 1 || er.GetErasure().GetRequestedBy() != "admin" || er.GetErasure().GetReason() != "subject request 77" {
		t.Fatalf("erasure entry: %v", er)
	}
	last := got[4]
	if last.GetShredded() || last.GetEvent() == nil || last.GetHeader().GetKeyGeneration() != 2 || after[0].GetIndex() != 4 {
		t.Fatalf("event after the erasure: shredded=%v generation=%d", last.GetShredded(), last.GetHeader().GetKeyGeneration())
	}

	// Repeating the erasure records it again and destroys what is left.
	if _, err := n.l.Erase(ctx, p, ledger.ErasureRequest{RequestedBy: "subject"}); err != nil {
		t.Fatal(err)
	}
	if e := entries(t, n.l, 4, 1)[0]; !e.GetShredded() {
		t.Error("the second erasure left generation 2 readable")
	}
	if _, err := n.l.Erase(ctx, "not-a-pseudonym", ledger.ErasureRequest{}); !errors.Is(err, ledger.ErrInvalidEvent) {
		t.Errorf("erasing a malformed pseudonym: %v, want ErrInvalidEvent", err)
	}
}

// TestEraseRacingAppends: appends of the subject racing an erasure on the
// same node either land before the erasure entry (and are erased with it)
// or after it, under the new generation, readable: nothing acknowledged
// after the erasure is lost.
func TestEraseRacingAppends(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "node"))
	ctx := context.Background()
	n.append(t, collectFace("racer"))
	p := n.keys.Pseudonym("racer")

	const writers, each = 8, 25
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range writers {
		wg.Go(func() {
			<-start
			for range each {
				if _, err := n.l.Append(ctx, []*piledgerv1.Event{collectFace("racer")}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	close(start)
	for n.l.Size() < 1+writers*each/4 {
		runtime.Gosched() // let a quarter of the appends land first
	}
	res, err := n.l.Erase(ctx, p, ledger.ErasureRequest{RequestedBy: "subject"})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	erasedAt := res.Receipt.GetIndex()
	before, afterN := 0, 0
	for _, e := range entries(t, n.l, 0, 1+writers*each+1) {
		switch {
		case e.GetIndex() < erasedAt:
			before++
			if !e.GetShredded() {
				t.Errorf("entry %d before the erasure is readable", e.GetIndex())
			}
		case e.GetIndex() > erasedAt:
			afterN++
			if e.GetShredded() || e.GetHeader().GetKeyGeneration() != 2 {
				t.Errorf("entry %d after the erasure: shredded=%v generation %d; acknowledged after the erasure, it must stay readable",
					e.GetIndex(), e.GetShredded(), e.GetHeader().GetKeyGeneration())
			}
		}
	}
	if before+afterN != 1+writers*each {
		t.Fatalf("%d entries before and %d after the erasure, want %d in all", before, afterN, 1+writers*each)
	}
	t.Logf("%d entries erased, %d appended after the erasure", before, afterN)
}

// TestCompleteInterruptedErasure: an erasure entry whose keys survived (a
// crash between recording and destroying) is finished by CompleteErasure,
// once; an entry older than a newer generation never touches it.
func TestCompleteInterruptedErasure(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "node"))
	ctx := context.Background()
	n.append(t, collectFace("crashed"))
	p := n.keys.Pseudonym("crashed")
	rec, gen, err := ledger.RecordErasureOnly(ctx, n.l, p)
	if err != nil {
		t.Fatal(err)
	}
	if e := entries(t, n.l, 0, 1)[0]; e.GetShredded() {
		t.Fatal("the keys were destroyed by recording alone")
	}
	done, err := n.l.CompleteErasure(ctx, p, gen)
	if err != nil || !done {
		t.Fatalf("CompleteErasure = %v, %v; want it to destroy the keys", done, err)
	}
	if e := entries(t, n.l, 0, 1)[0]; !e.GetShredded() {
		t.Fatal("entry still readable after the erasure was completed")
	}
	if done, err := n.l.CompleteErasure(ctx, p, gen); err != nil || done {
		t.Fatalf("completing twice: %v, %v; want nothing done", done, err)
	}
	// A new generation after the erasure is never touched by replaying the
	// old entry (a projector rebuilding its read models does exactly that).
	n.append(t, collectFace("crashed"))
	if done, err := n.l.CompleteErasure(ctx, p, gen); err != nil || done {
		t.Fatalf("replaying the old erasure: %v, %v; want nothing done", done, err)
	}
	if e := entries(t, n.l, rec.GetIndex()+1, 1)[0]; e.GetShredded() {
		t.Fatal("replaying the old erasure destroyed the new generation")
	}
}
