package crypto

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLocalKEKCreatesPrivateKeyset(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kek")
	kek := openKEK(t, dir)
	if got := kek.CurrentEpoch(); got != 1 {
		t.Fatalf("CurrentEpoch = %d, want 1", got)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "kek-1.json"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want only kek-1.json", len(entries))
	}

	// Reopening loads the same keyset.
	a1, err := kek.AEAD(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := openKEK(t, dir).AEAD(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, a1, a2)
}

func TestLocalKEKRefusesReadableKeyset(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kek")
	openKEK(t, dir)
	path := filepath.Join(dir, "kek-1.json")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenLocalKEK(dir); !errors.Is(err, ErrInsecureKEKFile) {
			t.Errorf("mode %v: OpenLocalKEK error = %v, want ErrInsecureKEKFile", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	openKEK(t, dir)

	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLocalKEK(dir); !errors.Is(err, ErrInsecureKEKFile) {
		t.Errorf("world-writable directory: OpenLocalKEK error = %v, want ErrInsecureKEKFile", err)
	}
}

func TestLocalKEKEpochs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kek")
	openKEK(t, dir)
	if err := createKEKFile(dir, 2); err != nil {
		t.Fatal(err)
	}
	kek := openKEK(t, dir)
	if got := kek.CurrentEpoch(); got != 2 {
		t.Fatalf("CurrentEpoch = %d, want 2", got)
	}
	for _, epoch := range []uint32{1, 2} {
		if _, err := kek.AEAD(t.Context(), epoch); err != nil {
			t.Errorf("AEAD(%d): %v", epoch, err)
		}
	}
	for _, epoch := range []uint32{0, 3} {
		if _, err := kek.AEAD(t.Context(), epoch); !errors.Is(err, ErrUnknownEpoch) {
			t.Errorf("AEAD(%d) error = %v, want ErrUnknownEpoch", epoch, err)
		}
	}

	if err := os.Remove(filepath.Join(dir, "kek-1.json")); err != nil {
		t.Fatal(err)
	}
	kek = openKEK(t, dir)
	if _, err := kek.AEAD(t.Context(), 1); !errors.Is(err, ErrKEKDestroyed) {
		t.Errorf("AEAD(1) after its file was removed: error = %v, want ErrKEKDestroyed", err)
	}
}

func TestParseKEKFileName(t *testing.T) {
	for name, want := range map[string]uint32{
		"kek-1.json": 1, "kek-42.json": 42, "kek-0.json": 0, "kek-01.json": 0,
		"kek-1.json.tmp": 0, ".kek-123.tmp": 0, "kek--1.json": 0, "kek-99999999999.json": 0,
	} {
		got, ok := parseKEKFileName(name)
		if got != want || ok != (want != 0) {
			t.Errorf("parseKEKFileName(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}
