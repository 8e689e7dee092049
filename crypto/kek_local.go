package crypto

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
// It refuses, with an error wrapping ErrInsecureKEKFile, a keyset file that
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
