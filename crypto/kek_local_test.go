package crypto

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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

func TestLocalKEKNewAndDestroyEpoch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kek")
	kek := openKEK(t, dir)
	epoch, err := kek.NewEpoch()
	if err != nil {
		t.Fatal(err)
	}
	if epoch != 2 || kek.CurrentEpoch() != 2 || !slices.Equal(kek.Epochs(), []uint32{1, 2}) {
		t.Fatalf("NewEpoch = %d; current %d, epochs %v; want 2, [1 2]", epoch, kek.CurrentEpoch(), kek.Epochs())
	}
	path1, path2 := filepath.Join(dir, "kek-1.json"), filepath.Join(dir, "kek-2.json")
	if fi, err := os.Stat(path2); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kek-2.json: %v, %v; want mode 0600", fi, err)
	}
	if got := openKEK(t, dir).CurrentEpoch(); got != 2 {
		t.Errorf("reopened: current epoch %d, want 2", got)
	}
	a1, err := kek.AEAD(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := a1.Encrypt([]byte("wrapped key"), nil)
	if err != nil {
		t.Fatal(err)
	}

	if err := kek.DestroyEpoch(2); !errors.Is(err, ErrEpochInUse) {
		t.Errorf("DestroyEpoch(current): %v, want ErrEpochInUse", err)
	}
	for _, e := range []uint32{0, 3} {
		if err := kek.DestroyEpoch(e); !errors.Is(err, ErrUnknownEpoch) {
			t.Errorf("DestroyEpoch(%d): %v, want ErrUnknownEpoch", e, err)
		}
	}

	// A second name for the keyset's inode shows what happens to its bytes:
	// they are overwritten in place, not only unlinked.
	old, err := os.ReadFile(path1)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Link(path1, link); err != nil {
		t.Fatal(err)
	}
	if err := kek.DestroyEpoch(1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("kek-1.json after DestroyEpoch: %v, want it gone", err)
	}
	after, err := os.ReadFile(link)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(old) || bytes.Equal(after, old) || bytes.Contains(after, []byte("primaryKeyId")) {
		t.Errorf("the destroyed keyset's bytes were not overwritten in place: %q", after)
	}
	if _, err := kek.AEAD(t.Context(), 1); !errors.Is(err, ErrKEKDestroyed) {
		t.Errorf("AEAD(1) after DestroyEpoch: %v, want ErrKEKDestroyed", err)
	}
	if _, err := a1.Decrypt(ct, nil); err != nil {
		t.Fatal(err) // an AEAD obtained before stays usable in memory (the caller's copy)
	}
	reopened := openKEK(t, dir)
	if _, err := reopened.AEAD(t.Context(), 1); !errors.Is(err, ErrKEKDestroyed) {
		t.Errorf("reopened AEAD(1): %v, want ErrKEKDestroyed", err)
	}
	if !slices.Equal(kek.Epochs(), []uint32{2}) || !slices.Equal(reopened.Epochs(), []uint32{2}) {
		t.Errorf("epochs after DestroyEpoch(1): %v and %v (reopened), want [2]", kek.Epochs(), reopened.Epochs())
	}
	if err := kek.DestroyEpoch(1); err != nil {
		t.Errorf("DestroyEpoch of a destroyed epoch: %v", err)
	}
	if _, err := kek.NewEpoch(); err != nil || kek.CurrentEpoch() != 3 {
		t.Errorf("NewEpoch after a destroyed epoch: %v, current %d; want 3", err, kek.CurrentEpoch())
	}
}

// TestLocalKEKFinishesInterruptedDestroy: a crash after DestroyEpoch renamed
// the keyset out of the way and before it overwrote it leaves a file that
// the next open overwrites and removes; the epoch is destroyed either way.
func TestLocalKEKFinishesInterruptedDestroy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kek")
	kek := openKEK(t, dir)
	if _, err := kek.NewEpoch(); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(filepath.Join(dir, "kek-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	doomed := filepath.Join(dir, ".kek-1.json"+destroySuffix)
	if err := os.Rename(filepath.Join(dir, "kek-1.json"), doomed); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Link(doomed, link); err != nil {
		t.Fatal(err)
	}
	reopened := openKEK(t, dir)
	if _, err := reopened.AEAD(t.Context(), 1); !errors.Is(err, ErrKEKDestroyed) {
		t.Errorf("AEAD(1): %v, want ErrKEKDestroyed", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "kek-2.json" {
		t.Errorf("KEK directory holds %v, want only kek-2.json", entries)
	}
	if after, err := os.ReadFile(link); err != nil || bytes.Equal(after, old) || len(after) != len(old) {
		t.Errorf("the interrupted keyset was not overwritten: %v", err)
	}
}
