package projections_test

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/ledger/ledgertest"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// markedEvents returns events of every operation that creates or changes a
// read model, with m in every field that describes a person.
func markedEvents(m ledgertest.Marker, i int) []*piledgerv1.Event {
	s := string(m)
	r := "ref-" + s + "-" + string(rune('a'+i%26))
	base := func(op piledgerv1.Operation, d float64) *piledgerv1.Event {
		return &piledgerv1.Event{
			EventId: newID(), SubjectRef: r, Operation: op, OccurredAt: timestamppb.New(day(d)),
			Processor: "city-police", DataCategories: []string{"face"}, Purpose: "public-safety",
			Attributes: map[string]string{"name": "name-" + s, "note": s},
		}
	}
	collect := base(piledgerv1.Operation_OPERATION_COLLECT, 1)
	collect.Consent = &piledgerv1.Consent{Separate: true, Reference: "consent-" + s}
	collect.Place = &piledgerv1.Place{Kind: "public-street", NoticeSignRef: "sign-" + s, LocationRef: "loc-" + s}
	collect.Retention = &piledgerv1.Retention{Minimum: days(30), KeepFor: days(90), UntilPurposeEnds: "public-safety"}
	provide := base(piledgerv1.Operation_OPERATION_PROVIDE, 2)
	provide.Recipient = &piledgerv1.Recipient{Processor: "district-office", System: "archive"}
	access := base(piledgerv1.Operation_OPERATION_ACCESS, 3)
	access.Purpose = ""
	access.Access = &piledgerv1.Access{Actor: "officer-" + s, Reason: "case " + s}
	withdraw := base(piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, 4)
	withdraw.Consent = &piledgerv1.Consent{Reference: "withdrawal-" + s}
	destroy := base(piledgerv1.Operation_OPERATION_DESTROY, 40)
	destroy.Purpose = ""
	if i%2 == 1 {
		return []*piledgerv1.Event{collect, provide, access, withdraw} // kept: index rows stay
	}
	return []*piledgerv1.Event{collect, provide, access, withdraw, destroy}
}

// TestNoPlaintextInReadModels appends events carrying a marker in every
// personal field, lets the projector apply them, stops it cleanly, and scans
// every byte of every file of the read models' directory (WAL, tables,
// manifest) for the marker in any encoding, then decodes every key and value
// with Pebble, so a compressed block cannot hide one.
func TestNoPlaintextInReadModels(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	m := ledgertest.NewMarker(t)
	for i := range 30 {
		s.append(markedEvents(m, i)...)
	}
	s.append(purposeEnded("", "city-police", "public-safety", 50))
	s.sync()
	// The marker is readable through the read models: the scan proves it
	// is stored encrypted, not that it was dropped.
	ev, err := s.store.SubjectEvents(t.Context(), s.pseudonym("ref-"+string(m)+"-a"), 10, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	readable := false
	for _, e := range ev.GetSubjectEvents() {
		readable = readable || e.GetEvent().GetAccess().GetActor() == "officer-"+string(m)
	}
	if !readable {
		t.Fatal("marked access event not readable back")
	}
	dir := filepath.Join(s.dir, "projections")
	s.stopProjector()

	forms := m.Forms()
	hits, scanned := ledgertest.ScanFiles(t, dir, forms)
	for _, h := range hits {
		t.Errorf("marker found at rest: %s", h)
	}
	if scanned < 3 {
		t.Fatalf("scanned only %d files under %s", scanned, dir)
	}
	// Control: the scan does find a marker that is there.
	control := t.TempDir()
	if err := os.WriteFile(filepath.Join(control, "leak"), []byte("x"+hex.EncodeToString([]byte(m))), 0o600); err != nil {
		t.Fatal(err)
	}
	if hits, _ := ledgertest.ScanFiles(t, control, forms); len(hits) == 0 {
		t.Fatal("control: the scan missed a planted hex marker")
	}

	rowHits, tables := ledgertest.ScanPebble(t, dir, forms)
	for _, h := range rowHits {
		t.Errorf("marker found at rest: %s", h)
	}
	rows := 0
	for _, n := range tables {
		rows += n
	}
	// Every table was written, so every table was scanned.
	for _, tab := range []byte{'m', 'i', 's', 'r', 'u', 'a', 'x', 'n'} {
		if tables[tab] == 0 {
			t.Errorf("no row in table %q: the scan does not cover it", tab)
		}
	}
	t.Logf("scanned %d files and %d rows", scanned, rows)
}
