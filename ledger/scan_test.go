package ledger_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/ledger/ledgertest"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// markedEvents returns events of every operation with m in every field that
// describes a person.
func markedEvents(m ledgertest.Marker) []*piledgerv1.Event {
	s := string(m)
	ref := "ref-" + s
	base := func(op piledgerv1.Operation) *piledgerv1.Event {
		return &piledgerv1.Event{
			EventId:        uuid.Must(uuid.NewV7()).String(),
			SubjectRef:     ref,
			Operation:      op,
			OccurredAt:     timestamppb.New(epoch),
			Processor:      "city-police",
			DataCategories: []string{"face"},
			Purpose:        "public-safety",
			Attributes:     map[string]string{"name": "name-" + s, "note": s},
		}
	}
	collect := base(piledgerv1.Operation_OPERATION_COLLECT)
	collect.Consent = &piledgerv1.Consent{Separate: true, Reference: "consent-" + s}
	collect.Place = &piledgerv1.Place{Kind: "public-street", NoticeSignRef: "sign-" + s, LocationRef: "loc-" + s}
	provide := base(piledgerv1.Operation_OPERATION_PROVIDE)
	provide.Recipient = &piledgerv1.Recipient{Processor: "district-office", System: "archive"}
	access := base(piledgerv1.Operation_OPERATION_ACCESS)
	access.Purpose = ""
	access.Access = &piledgerv1.Access{Actor: "officer-" + s, Reason: "case " + s}
	return []*piledgerv1.Event{collect, provide, access}
}

// TestNoPlaintextAtRest appends events carrying a marker in every personal
// field, stops the node cleanly, and scans every byte of every file under
// the data directory — NATS store (no stream compression), keyring and
// event-id indexes (Pebble WAL and tables), key-encryption key — for the
// marker in any encoding. Pebble tables are also decoded key by key, so a
// compressed block cannot hide a marker.
func TestNoPlaintextAtRest(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "node")
	n := startNode(t, dir)
	m := ledgertest.NewMarker(t)
	for i := 0; i < 20; i++ {
		if _, err := n.l.Append(context.Background(), markedEvents(m)); err != nil {
			t.Fatal(err)
		}
	}
	// The marker must still be readable through the ledger: the scan below
	// proves it is stored encrypted, not that it was dropped.
	got := entries(t, n.l, 0, 1)
	if len(got) != 1 || got[0].GetEvent().GetSubjectRef() != "ref-"+string(m) {
		t.Fatal("marked event not readable back")
	}
	n.stop()

	forms := m.Forms()
	hits, scanned := ledgertest.ScanFiles(t, root, forms)
	for _, h := range hits {
		t.Errorf("marker found at rest: %s", h)
	}
	if scanned < 5 {
		t.Fatalf("scanned only %d files under %s; the scan is not looking where the data is", scanned, root)
	}
	// Control: the scan does find a marker that is there.
	control := t.TempDir()
	if err := os.WriteFile(filepath.Join(control, "leak"), []byte("x"+base64.StdEncoding.EncodeToString([]byte(m))), 0o600); err != nil {
		t.Fatal(err)
	}
	if hits, _ := ledgertest.ScanFiles(t, control, forms); len(hits) == 0 {
		t.Fatal("control: the scan missed a planted base64 marker")
	}
	for _, db := range []string{filepath.Join(dir, "index"), filepath.Join(dir, "keyring")} {
		scanPebble(t, db, forms)
	}
}

// scanPebble fails t for every decoded row of the Pebble database in dir
// holding a form of the marker, and when the database has no rows.
func scanPebble(t *testing.T, dir string, forms map[string][]byte) {
	t.Helper()
	hits, tables := ledgertest.ScanPebble(t, dir, forms)
	for _, h := range hits {
		t.Errorf("marker found at rest: %s", h)
	}
	if len(tables) == 0 {
		t.Errorf("%s: no rows decoded; the scan is not looking where the data is", dir)
	}
}
