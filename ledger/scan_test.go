package ledger_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf16"

	"github.com/cockroachdb/pebble/v2"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// marker is a random token placed in every personal field; the scan looks
// for it in every form it could take on disk.
type marker string

func newMarker(t *testing.T) marker {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return marker("mk" + hex.EncodeToString(b))
}

// forms returns the encodings of m a careless implementation could store:
// raw, base64, hex, UTF-16LE and unkeyed SHA-256 digests (hex and raw).
func (m marker) forms() map[string][]byte {
	raw := []byte(m)
	var u16 []byte
	for _, r := range utf16.Encode([]rune(string(m))) {
		u16 = append(u16, byte(r), byte(r>>8))
	}
	sum := sha256.Sum256(raw)
	return map[string][]byte{
		"raw":       raw,
		"base64":    []byte(base64.StdEncoding.EncodeToString(raw))[:20],
		"base64url": []byte(base64.RawURLEncoding.EncodeToString(raw))[:20],
		"hex":       []byte(hex.EncodeToString(raw)),
		"utf16le":   u16,
		"sha256":    sum[:],
		"sha256hex": []byte(hex.EncodeToString(sum[:])),
	}
}

// markedEvents returns events of every operation with m in every field that
// describes a person.
func markedEvents(m marker) []*piledgerv1.Event {
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
	m := newMarker(t)
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

	forms := m.forms()
	hits, scanned := scanDir(t, root, forms)
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
	if hits, _ := scanDir(t, control, forms); len(hits) == 0 {
		t.Fatal("control: the scan missed a planted base64 marker")
	}
	for _, db := range []string{filepath.Join(dir, "index"), filepath.Join(dir, "keyring")} {
		scanPebble(t, db, forms)
	}
}

// scanDir reports every file under root holding any form of the marker.
func scanDir(t *testing.T, root string, forms map[string][]byte) (hits []string, scanned int) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned++
		for name, form := range forms {
			if bytes.Contains(data, form) {
				hits = append(hits, path+" ("+name+")")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits, scanned
}

// scanPebble opens a Pebble database and checks every key and value.
func scanPebble(t *testing.T, dir string, forms map[string][]byte) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{ReadOnly: true, Logger: quiet{}})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	defer db.Close()
	it, err := db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	rows := 0
	for it.First(); it.Valid(); it.Next() {
		rows++
		for name, form := range forms {
			if bytes.Contains(it.Key(), form) || bytes.Contains(it.Value(), form) {
				t.Errorf("%s: a row holds the marker (%s form)", dir, name)
			}
		}
	}
	if rows == 0 {
		t.Errorf("%s: no rows decoded; the scan is not looking where the data is", dir)
	}
}

type quiet struct{}

func (quiet) Infof(string, ...any)           {}
func (quiet) Errorf(string, ...any)          {}
func (quiet) Fatalf(format string, a ...any) { panic(format) }
