package projections_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
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
