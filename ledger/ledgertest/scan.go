package ledgertest

import (
	"bytes"
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
)

// Marker is a random token a test places in every personal field; a scan
// then looks for it in every form it could take at rest.
type Marker string

// NewMarker returns a fresh random marker.
func NewMarker(t testing.TB) Marker {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return Marker("mk" + hex.EncodeToString(b))
}

// Forms returns the encodings of m a careless implementation could store:
// raw, base64, hex, UTF-16LE and unkeyed SHA-256 digests (raw and hex).
func (m Marker) Forms() map[string][]byte {
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

// ScanFiles reports every file under root that holds any of forms, and how
// many files it read.
func ScanFiles(t testing.TB, root string, forms map[string][]byte) (hits []string, scanned int) {
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
				hits = append(hits, path+" ("+name+" form)")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits, scanned
}

// ScanPebble opens the Pebble database in dir read-only and checks every
// decoded key and value, so a compressed block cannot hide a form. It
// returns the hits and the number of rows per first key byte (table).
func ScanPebble(t testing.TB, dir string, forms map[string][]byte) (hits []string, tables map[byte]int) {
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
	tables = make(map[byte]int)
	for it.First(); it.Valid(); it.Next() {
		tables[it.Key()[0]]++
		for name, form := range forms {
			if bytes.Contains(it.Key(), form) || bytes.Contains(it.Value(), form) {
				hits = append(hits, dir+": a row of table "+string(it.Key()[:1])+" ("+name+" form)")
			}
		}
	}
	return hits, tables
}

type quiet struct{}

func (quiet) Infof(string, ...any)           {}
func (quiet) Errorf(string, ...any)          {}
func (quiet) Fatalf(format string, a ...any) { panic(format) }
