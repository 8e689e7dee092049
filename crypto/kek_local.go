package crypto

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// This is the only non-test file allowed to import insecurecleartextkeyset:
// the local KEK is, by definition, a keyset stored in the clear.

// LocalKEK is a [KEK] kept in local files: one cleartext Tink AEAD keyset per
// epoch, in <dir>/kek-<epoch>.json (JSON keyset format). The highest epoch
// present is the current one; a missing file below it is a destroyed epoch.
//
// Anyone who can read these files can unwrap every subject key, so the files
// must be private to the service user: mode 0600 in a 0700 directory. Use a
// KMS-backed KEK where the host is not trusted.
//
// A LocalKEK is safe for concurrent use.
type LocalKEK struct {
	dir string

	epochMu sync.Mutex // serializes NewEpoch and DestroyEpoch

	mu      sync.RWMutex
	current uint32
	aeads   map[uint32]tink.AEAD
}

var _ KEK = (*LocalKEK)(nil)

// OpenLocalKEK loads the KEK keysets in dir. If dir holds none, it creates the
// directory (mode 0700) and the keyset of epoch 1, an AES256-GCM keyset in
// kek-1.json (mode 0600), synced to disk before it returns. Several processes
// may open the same directory concurrently; they end up with the same keyset.
//
// It finishes destroying any keyset a crash interrupted DestroyEpoch on. It
// refuses, with an error wrapping ErrInsecureKEKFile, a keyset file that
// group or others may access and a directory that group or others may write.
func OpenLocalKEK(dir string) (*LocalKEK, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty KEK directory", ErrInvalidConfig)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("crypto: create KEK directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("crypto: KEK directory: %w", err)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%w: directory %s has mode %v, want 0700", ErrInsecureKEKFile, dir, fi.Mode().Perm())
	}
	k := &LocalKEK{dir: dir, aeads: make(map[uint32]tink.AEAD)}
	if err := k.finishDestroys(); err != nil {
		return nil, err
	}
	if err := k.load(); err != nil {
		return nil, err
	}
	if k.current == 0 {
		if err := createKEKFile(dir, 1); err != nil {
			return nil, err
		}
		if err := k.load(); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// CurrentEpoch returns the highest epoch whose keyset file was found.
func (k *LocalKEK) CurrentEpoch() uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

// AEAD returns the keyset of the epoch loaded at open. See [KEK.AEAD].
func (k *LocalKEK) AEAD(_ context.Context, epoch uint32) (tink.AEAD, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if a, ok := k.aeads[epoch]; ok {
		return a, nil
	}
	if epoch == 0 || epoch > k.current {
		return nil, fmt.Errorf("%w: %d", ErrUnknownEpoch, epoch)
	}
	return nil, fmt.Errorf("%w: epoch %d", ErrKEKDestroyed, epoch)
}

// Epochs returns the epochs whose keyset is available (not destroyed), in
// increasing order; the last one is the current epoch. An epoch below the
// current one that is still available means a KEK rotation has not finished
// (see [Keyring.Rotate]).
func (k *LocalKEK) Epochs() []uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	epochs := make([]uint32, 0, len(k.aeads))
	for e := range k.aeads {
		epochs = append(epochs, e)
	}
	slices.Sort(epochs)
	return epochs
}

// NewEpoch creates the keyset of the epoch after the current one, in
// <dir>/kek-<epoch>.json (mode 0600, synced, directory synced), makes it the
// current epoch and returns it. Keys wrapped from then on are wrapped under
// it; the older epochs stay available until DestroyEpoch.
//
// If another process created that epoch's file first, NewEpoch adopts it (the
// first file wins, as in OpenLocalKEK). Other processes that opened the
// directory earlier do not see the new epoch until they reopen it.
func (k *LocalKEK) NewEpoch() (uint32, error) {
	k.epochMu.Lock()
	defer k.epochMu.Unlock()
	next := k.CurrentEpoch() + 1
	if next == 0 {
		return 0, fmt.Errorf("%w: no epoch after %d", ErrUnknownEpoch, next-1)
	}
	if err := createKEKFile(k.dir, next); err != nil {
		return 0, err
	}
	if err := k.load(); err != nil {
		return 0, err
	}
	return k.CurrentEpoch(), nil
}

// DestroyEpoch destroys the keyset of an epoch older than the current one:
// it renames <dir>/kek-<epoch>.json out of the way (to .kek-<epoch>.destroy,
// which no reader loads), syncs the directory, overwrites the file's bytes in
// place with random bytes of the same length, syncs them, removes the file
// and syncs the directory again. From then on AEAD(epoch) returns
// ErrKEKDestroyed, here and in every process that opens the directory, and
// every key still wrapped under the epoch (in a backup, a replica or a freed
// disk block) can no longer be unwrapped. A crash in between leaves either
// the keyset or a file that OpenLocalKEK finishes destroying; never a
// half-overwritten keyset under its own name. Destroying an epoch whose file
// is already gone is not an error.
//
// The overwrite reaches the disk blocks that held the keyset on filesystems
// that write in place (ext4, xfs); on copy-on-write or log-structured
// filesystems, and on SSDs that remap blocks, old copies of the file may
// survive on the device: keep the KEK directory on an encrypted volume.
//
// It refuses the current epoch (ErrEpochInUse) and an epoch that never
// existed (ErrUnknownEpoch). Callers must first make sure that no live key is
// wrapped under the epoch: [Keyring.Rotate] does.
func (k *LocalKEK) DestroyEpoch(epoch uint32) error {
	k.epochMu.Lock()
	defer k.epochMu.Unlock()
	switch cur := k.CurrentEpoch(); {
	case epoch == 0 || epoch > cur:
		return fmt.Errorf("%w: %d", ErrUnknownEpoch, epoch)
	case epoch == cur:
		return fmt.Errorf("%w: epoch %d is the current epoch", ErrEpochInUse, epoch)
	}
	k.mu.Lock()
	delete(k.aeads, epoch) // unusable from now on, even if what follows fails
	k.mu.Unlock()
	path := filepath.Join(k.dir, kekFileName(epoch))
	doomed := filepath.Join(k.dir, "."+kekFileName(epoch)+destroySuffix)
	switch err := os.Rename(path, doomed); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("crypto: destroy KEK epoch %d: %w", epoch, err)
	default:
		if err := syncDir(k.dir); err != nil {
			return err
		}
	}
	return destroyFile(k.dir, doomed)
}

// destroySuffix marks a keyset file that DestroyEpoch renamed and has not
// finished destroying.
const destroySuffix = ".destroy"

// destroyFile overwrites and removes the file at path, if it exists, and
// syncs dir.
func destroyFile(dir, path string) error {
	if err := overwriteFile(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("crypto: destroy KEK keyset %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("crypto: destroy KEK keyset %s: %w", path, err)
	}
	return syncDir(dir)
}

// overwriteFile overwrites the bytes of the file at path in place with
// random bytes and syncs them.
func overwriteFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	junk := make([]byte, fi.Size())
	if _, err := rand.Read(junk); err != nil {
		return err
	}
	if _, err := f.WriteAt(junk, 0); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// finishDestroys destroys the keyset files a DestroyEpoch interrupted by a
// crash left renamed but not removed.
func (k *LocalKEK) finishDestroys() error {
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return fmt.Errorf("crypto: read KEK directory: %w", err)
	}
	for _, e := range entries {
		if name := e.Name(); strings.HasPrefix(name, ".kek-") && strings.HasSuffix(name, destroySuffix) {
			if err := destroyFile(k.dir, filepath.Join(k.dir, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// load reads every kek-<epoch>.json in the directory.
func (k *LocalKEK) load() error {
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return fmt.Errorf("crypto: read KEK directory: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range entries {
		epoch, ok := parseKEKFileName(e.Name())
		if !ok {
			continue
		}
		a, err := readKEKFile(filepath.Join(k.dir, e.Name()))
		if err != nil {
			return err
		}
		k.aeads[epoch] = a
		k.current = max(k.current, epoch)
	}
	return nil
}

func kekFileName(epoch uint32) string {
	return "kek-" + strconv.FormatUint(uint64(epoch), 10) + ".json"
}

// parseKEKFileName accepts exactly the names kekFileName produces.
func parseKEKFileName(name string) (uint32, bool) {
	s, ok := strings.CutPrefix(name, "kek-")
	if !ok {
		return 0, false
	}
	if s, ok = strings.CutSuffix(s, ".json"); !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || kekFileName(uint32(n)) != name {
		return 0, false
	}
	return uint32(n), true
}

func readKEKFile(path string) (tink.AEAD, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("crypto: open KEK keyset: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("crypto: KEK keyset: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("crypto: KEK keyset %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v, want 0600 (chmod 600 %s)", ErrInsecureKEKFile, path, perm, path)
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(f))
	if err != nil {
		return nil, fmt.Errorf("crypto: read KEK keyset %s: %w", path, err)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("crypto: KEK keyset %s is not an AEAD keyset: %w", path, err)
	}
	return a, nil
}

// createKEKFile writes a new AES256-GCM keyset for the epoch. The keyset is
// written to a private temporary file, synced, and linked to its final name,
// so a reader never sees a partial file and a concurrent creator's file is
// never replaced (the first link wins, the loser's file is removed).
func createKEKFile(dir string, epoch uint32) (err error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return fmt.Errorf("crypto: new KEK keyset: %w", err)
	}
	f, err := os.CreateTemp(dir, ".kek-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("crypto: create KEK keyset: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(f)); err != nil {
		f.Close()
		return fmt.Errorf("crypto: write KEK keyset: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("crypto: sync KEK keyset: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("crypto: close KEK keyset: %w", err)
	}
	if err := os.Link(tmp, filepath.Join(dir, kekFileName(epoch))); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("crypto: install KEK keyset: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("crypto: sync KEK directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("crypto: sync KEK directory: %w", err)
	}
	return nil
}
