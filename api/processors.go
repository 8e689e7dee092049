package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// API keys bind an emitter to one processor id. A key is
//
//	pk_<key id: 16 hex>_<secret: 43 base64url characters, 256 random bits>
//
// and the store keeps only the key id, the processor and SHA-256 of the
// whole key: the key is high-entropy, so a fast hash is enough (no password
// hashing), and the plaintext exists only in the output of AddAPIKey.
//
// The store is one JSON file under the data directory (APIKeysFile), mode
// 0600 in a 0700 directory, written by `piledger processors add|revoke`
// through AddAPIKey and RevokeAPIKeys (a lock file serializes writers; each
// write goes to a synced temporary file renamed into place) and read by the
// server, which notices a changed file within APIKeyReloadInterval.
const (
	// APIKeysFile is the name of the API key store in its directory.
	APIKeysFile = "processors.json"
	// APIKeyReloadInterval is how often the server looks for a changed key
	// file: a revoked key stops working within this time.
	APIKeyReloadInterval = time.Second

	apiKeyPrefix      = "pk_"
	apiKeyIDBytes     = 8
	apiKeySecretBytes = 32
	apiKeysVersion    = 1
)

// APIKeyInfo describes one API key; it never holds the key.
type APIKeyInfo struct {
	// ID identifies the key; it is the part of the key after "pk_" up to the
	// next "_", and is not secret.
	ID string `json:"id"`
	// Processor is the processor id the key is bound to.
	Processor string `json:"processor"`
	// SHA256 is the hex SHA-256 of the whole key.
	SHA256 string `json:"sha256"`
	// Created is when the key was made.
	Created time.Time `json:"created"`
	// Revoked is when the key was revoked; zero while it is valid.
	Revoked time.Time `json:"revoked,omitzero"`
}

type apiKeysFile struct {
	Version int          `json:"version"`
	Keys    []APIKeyInfo `json:"keys"`
}

// APIKeyStore verifies API keys against the key file. It is safe for
// concurrent use.
type APIKeyStore struct {
	path string
	now  func() time.Time

	mu        sync.Mutex
	keys      map[string]APIKeyInfo // valid keys by id
	stamp     fileStamp
	lastCheck time.Time
}

type fileStamp struct {
	exists  bool
	size    int64
	modTime time.Time
	ino     uint64
}

// OpenAPIKeyStore opens the key file in dir for verification. A missing file
// is an empty store (no key is valid until `piledger processors add` writes
// one). It fails on a file that exists but does not parse, or that group or
// others may read.
func OpenAPIKeyStore(dir string) (*APIKeyStore, error) {
	s := &APIKeyStore{path: filepath.Join(dir, APIKeysFile), now: time.Now}
	if err := s.reload(); err != nil {
		return nil, err
	}
	s.lastCheck = s.now()
	return s, nil
}

// Verify returns the processor and key id of key, and ok = false when key is
// not a valid, unrevoked key. The comparison of the key's hash is constant
// time.
func (s *APIKeyStore) Verify(key string) (processor, keyID string, ok bool) {
	id, valid := parseAPIKey(key)
	if !valid {
		return "", "", false
	}
	sum := sha256.Sum256([]byte(key))
	s.mu.Lock()
	if now := s.now(); now.Sub(s.lastCheck) >= APIKeyReloadInterval {
		s.lastCheck = now
		// A failed reload keeps the keys already loaded; the file is
		// written by rename, so a failure is a damaged file, not a race.
		_ = s.reloadLocked()
	}
	info, found := s.keys[id]
	s.mu.Unlock()
	want, err := hex.DecodeString(info.SHA256)
	if !found || err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return "", "", false
	}
	return info.Processor, id, true
}

func (s *APIKeyStore) reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked()
}

func (s *APIKeyStore) reloadLocked() error {
	stamp, err := statFile(s.path)
	if err != nil {
		return err
	}
	if s.keys != nil && stamp == s.stamp {
		return nil
	}
	f, err := readAPIKeys(s.path)
	if err != nil {
		return err
	}
	keys := make(map[string]APIKeyInfo, len(f.Keys))
	for _, k := range f.Keys {
		if k.Revoked.IsZero() {
			keys[k.ID] = k
		}
	}
	s.keys, s.stamp = keys, stamp
	return nil
}

func statFile(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileStamp{}, nil
	}
	if err != nil {
		return fileStamp{}, fmt.Errorf("api: API key file: %w", err)
	}
	st := fileStamp{exists: true, size: fi.Size(), modTime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, nil
}

// readAPIKeys reads the key file; a missing file is an empty store.
func readAPIKeys(path string) (*apiKeysFile, error) {
	f := &apiKeysFile{Version: apiKeysVersion}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("api: API key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("api: API key file %s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api: API key file: %w", err)
	}
	if err := json.Unmarshal(data, f); err != nil {
		return nil, fmt.Errorf("api: API key file %s: %w", path, err)
	}
	if f.Version != apiKeysVersion {
		return nil, fmt.Errorf("api: API key file %s: version %d, want %d", path, f.Version, apiKeysVersion)
	}
	return f, nil
}

// parseAPIKey returns the key id of a key of the right shape.
func parseAPIKey(key string) (id string, ok bool) {
	rest, ok := strings.CutPrefix(key, apiKeyPrefix)
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 2*apiKeyIDBytes || len(secret) != base64.RawURLEncoding.EncodedLen(apiKeySecretBytes) {
		return "", false
	}
	if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
		return "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(secret); err != nil {
		return "", false
	}
	return id, true
}

// AddAPIKey makes a new API key bound to processor, records its hash in the
// key file in dir (creating both if needed) and returns the key: the only
// time it exists in clear. processor must be a processor id
// ([a-z0-9][a-z0-9._-]{0,127}) other than "piledger", which is the ledger's
// own.
func AddAPIKey(dir, processor string, now time.Time) (key string, info APIKeyInfo, err error) {
	if !validProcessorID(processor) {
		return "", APIKeyInfo{}, fmt.Errorf("api: processor id %q: want 1-128 characters from [a-z0-9._-], starting with a letter or digit, other than %q", processor, LedgerProcessor)
	}
	id := make([]byte, apiKeyIDBytes)
	secret := make([]byte, apiKeySecretBytes)
	_, _ = rand.Read(id) // crypto/rand.Read never fails
	_, _ = rand.Read(secret)
	key = apiKeyPrefix + hex.EncodeToString(id) + "_" + base64.RawURLEncoding.EncodeToString(secret)
	sum := sha256.Sum256([]byte(key))
	info = APIKeyInfo{ID: hex.EncodeToString(id), Processor: processor, SHA256: hex.EncodeToString(sum[:]), Created: now.UTC()}
	err = updateAPIKeys(dir, func(f *apiKeysFile) (bool, error) {
		f.Keys = append(f.Keys, info)
		return true, nil
	})
	if err != nil {
		return "", APIKeyInfo{}, err
	}
	return key, info, nil
}

// ListAPIKeys returns every key of the key file in dir, revoked ones
// included, by processor then creation time.
func ListAPIKeys(dir string) ([]APIKeyInfo, error) {
	f, err := readAPIKeys(filepath.Join(dir, APIKeysFile))
	if err != nil {
		return nil, err
	}
	keys := f.Keys
	slices.SortStableFunc(keys, func(a, b APIKeyInfo) int {
		if c := strings.Compare(a.Processor, b.Processor); c != 0 {
			return c
		}
		return a.Created.Compare(b.Created)
	})
	return keys, nil
}

// RevokeAPIKeys revokes the key with id keyID, or every key of processor
// when keyID is empty, and returns how many keys it revoked (already revoked
// keys do not count). Servers stop accepting them within
// APIKeyReloadInterval.
func RevokeAPIKeys(dir, keyID, processor string, now time.Time) (int, error) {
	if (keyID == "") == (processor == "") {
		return 0, errors.New("api: revoke: give a key id or a processor, not both")
	}
	n := 0
	err := updateAPIKeys(dir, func(f *apiKeysFile) (bool, error) {
		for i := range f.Keys {
			k := &f.Keys[i]
			if k.Revoked.IsZero() && (k.ID == keyID || keyID == "" && k.Processor == processor) {
				k.Revoked = now.UTC()
				n++
			}
		}
		return n > 0, nil
	})
	return n, err
}

// updateAPIKeys applies change to the key file under an exclusive lock and
// writes it back (synced temporary file, rename, directory sync) when change
// reports a change.
func updateAPIKeys(dir string, change func(*apiKeysFile) (bool, error)) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("api: API key directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "."+APIKeysFile+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("api: lock API key file: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("api: lock API key file: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too

	path := filepath.Join(dir, APIKeysFile)
	f, err := readAPIKeys(path)
	if err != nil {
		return err
	}
	changed, err := change(f)
	if err != nil || !changed {
		return err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+APIKeysFile+"-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("api: write API key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("api: write API key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("api: write API key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("api: write API key file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("api: write API key file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("api: sync API key directory: %w", err)
	}
	defer d.Close()
	return d.Sync()
}
