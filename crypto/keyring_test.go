package crypto

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

func TestPseudonym(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()

	// Two nodes start on an empty stream at once: both may create a PRF key,
	// and both must end up with the same one.
	var kr1, kr2 *Keyring
	var wg sync.WaitGroup
	wg.Go(func() { kr1 = e.keyring(t, filepath.Join(dir, "idx1")) })
	wg.Go(func() { kr2 = e.keyring(t, filepath.Join(dir, "idx2")) })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	const ref = "alice@example.com"
	p := kr1.Pseudonym(ref)
	if len(p) != 64 || !validPseudonym(p) {
		t.Fatalf("Pseudonym = %q, want 64 lowercase hex characters", p)
	}
	if got := kr2.Pseudonym(ref); got != p {
		t.Errorf("second node: Pseudonym = %s, want %s", got, p)
	}
	if sum := sha256.Sum256([]byte(ref)); p == hex.EncodeToString(sum[:]) {
		t.Error("Pseudonym is a plain SHA-256 of the reference")
	}
	if kr1.Pseudonym("bob@example.com") == p {
		t.Error("two references share a pseudonym")
	}

	// Stable across a restart of the node.
	kr1.Close()
	if got := e.keyring(t, filepath.Join(dir, "idx1")).Pseudonym(ref); got != p {
		t.Errorf("after reopen: Pseudonym = %s, want %s", got, p)
	}
}

func TestSealingKeyCreatesOneKeyPerSubject(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, t.TempDir())
	ctx := t.Context()
	before := e.keyMessages(t)
	p := kr.Pseudonym("carol")

	keys := make([]SubjectKey, 16)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			var err error
			if keys[i], err = kr.SealingKey(ctx, p); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if got := e.keyMessages(t) - before; got != 1 {
		t.Errorf("concurrent SealingKey stored %d keys, want 1", got)
	}
	for _, k := range keys {
		if k.Generation != 1 {
			t.Errorf("Generation = %d, want 1", k.Generation)
		}
		roundTrip(t, keys[0].AEAD, k.AEAD)
	}
	open, err := kr.OpeningKey(ctx, p, 1)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, keys[0].AEAD, open)
}

func TestSealingKeyTwoNodes(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	nodes := []*Keyring{e.keyring(t, filepath.Join(dir, "idx1")), e.keyring(t, filepath.Join(dir, "idx2"))}
	ctx := t.Context()

	// Both nodes race to create the keys of the same new subjects.
	const subjects, callers = 20, 4
	got := make([][]SubjectKey, len(nodes))
	var wg sync.WaitGroup
	for n, kr := range nodes {
		got[n] = make([]SubjectKey, subjects*callers)
		for i := range got[n] {
			wg.Go(func() {
				var err error
				if got[n][i], err = kr.SealingKey(ctx, kr.Pseudonym(fmt.Sprint("subject-", i%subjects))); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i := range subjects * callers {
		p := nodes[0].Pseudonym(fmt.Sprint("subject-", i%subjects))
		for n := range nodes {
			if g := got[n][i].Generation; g != 1 {
				t.Fatalf("node %d: Generation = %d, want 1", n, g)
			}
			// What one node seals, the other opens, with either call.
			other := nodes[1-n]
			roundTrip(t, got[n][i].AEAD, got[1-n][i].AEAD)
			open, err := other.OpeningKey(ctx, p, 1)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, got[n][i].AEAD, open)
		}
	}
}

func TestOpeningKeyFindsKeyOfOtherNode(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	kr1, kr2 := e.keyring(t, filepath.Join(dir, "idx1")), e.keyring(t, filepath.Join(dir, "idx2"))
	ctx := t.Context()
	for i := range 10 {
		p := kr1.Pseudonym(fmt.Sprint("dave-", i))
		sk, err := kr1.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		open, err := kr2.OpeningKey(ctx, p, sk.Generation)
		if err != nil {
			t.Fatalf("OpeningKey on the other node right after creation: %v", err)
		}
		roundTrip(t, sk.AEAD, open)
		// The other node now seals under the same key.
		sk2, err := kr2.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, sk2.AEAD, sk.AEAD)
	}
}

// A node that stores a subject's key after another node did uses, like
// every node, the first key in stream order; its own key is kept in the index
// so that an erasure finds it too.
func TestCreateLoserUsesFirstKey(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	kr1, kr2 := e.keyring(t, filepath.Join(dir, "idx1")), e.keyring(t, filepath.Join(dir, "idx2"))
	ctx := t.Context()
	p := kr1.Pseudonym("peggy")
	first, err := kr1.SealingKey(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	before := e.keyMessages(t)
	// kr2 has not looked the subject up; it stores a key of its own, as it
	// would if it had raced kr1.
	lost, err := kr2.create(ctx, p, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.keyMessages(t) - before; got != 1 {
		t.Fatalf("create stored %d keys, want 1", got)
	}
	roundTrip(t, first.AEAD, lost)
	for _, kr := range []*Keyring{kr1, kr2, e.keyring(t, filepath.Join(dir, "idx3"))} {
		sk, err := kr.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, first.AEAD, sk.AEAD)
		open, err := kr.OpeningKey(ctx, p, 1)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, first.AEAD, open)

		var seqs int
		it, err := kr.idx.db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		prefix := entryPrefix(p)
		for it.SeekGE(prefix); it.Valid() && bytes.HasPrefix(it.Key(), prefix); it.Next() {
			seqs++
		}
		it.Close()
		if seqs != 2 {
			t.Errorf("index holds %d key messages of the subject, want 2", seqs)
		}
	}
}

// Deleted key messages (what erasure will do) neither hang the keyring nor
// let it create a replacement key.
func TestDeletedKeyMessages(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	kr1 := e.keyring(t, filepath.Join(dir, "idx1"))
	ctx := t.Context()
	pa, pb := kr1.Pseudonym("quentin"), kr1.Pseudonym("rupert")
	for _, p := range []string{pa, pb} {
		if _, err := kr1.SealingKey(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	s, err := e.js.Stream(ctx, DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	// Both keys are indexed by kr1; then the newest (the stream's last
	// message) is erased.
	last := s.CachedInfo().State.LastSeq
	if err := s.SecureDeleteMsg(ctx, last); err != nil {
		t.Fatal(err)
	}
	kr1.cache.Purge()
	if _, err := kr1.OpeningKey(ctx, pb, 1); !errors.Is(err, ErrShredded) {
		t.Errorf("OpeningKey of a deleted key: error = %v, want ErrShredded", err)
	}
	if _, err := kr1.SealingKey(ctx, pb); !errors.Is(err, ErrShredded) {
		t.Errorf("SealingKey of a deleted key: error = %v, want ErrShredded", err)
	}

	// A new node never sees the deleted message; it still opens (after a
	// probe), and does not know the erased key.
	kr2 := e.keyring(t, filepath.Join(dir, "idx2"))
	if _, err := kr2.OpeningKey(ctx, pa, 1); err != nil {
		t.Error(err)
	}
	if _, err := kr2.OpeningKey(ctx, pb, 1); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("OpeningKey of a key deleted before indexing: error = %v, want ErrKeyNotFound", err)
	}
}

func TestOpeningKeyNotFound(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, t.TempDir())
	ctx := t.Context()
	p := kr.Pseudonym("erin")
	if _, err := kr.OpeningKey(ctx, p, 1); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("OpeningKey of a subject without key: error = %v, want ErrKeyNotFound", err)
	}
	if _, err := kr.SealingKey(ctx, p); err != nil {
		t.Fatal(err)
	}
	for _, gen := range []uint32{0, 2} {
		if _, err := kr.OpeningKey(ctx, p, gen); !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("OpeningKey(generation %d): error = %v, want ErrKeyNotFound", gen, err)
		}
	}
}

func TestInvalidPseudonym(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, t.TempDir())
	ctx := t.Context()
	p := kr.Pseudonym("x")
	for _, bad := range []string{"frank@example.com", strings.ToUpper(p), p[:63], p + "0", p[:63] + "g"} {
		_, err := kr.SealingKey(ctx, bad)
		if !errors.Is(err, ErrInvalidPseudonym) {
			t.Errorf("SealingKey(%q) error = %v, want ErrInvalidPseudonym", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), bad) {
			t.Errorf("error %q repeats its input", err)
		}
		if _, err := kr.OpeningKey(ctx, bad, 1); !errors.Is(err, ErrInvalidPseudonym) {
			t.Errorf("OpeningKey(%q) error = %v, want ErrInvalidPseudonym", bad, err)
		}
	}
}

func TestSubjectKeysAreDistinct(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, t.TempDir())
	ctx := t.Context()
	keys := map[string]tink.AEAD{}
	for _, p := range []string{kr.Pseudonym("grace"), kr.Pseudonym("heidi"), ""} {
		sk, err := kr.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		keys[p] = sk.AEAD
	}
	for pa, a := range keys {
		ct, err := a.Encrypt([]byte("payload"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for pb, b := range keys {
			if pa == pb {
				continue
			}
			if _, err := b.Decrypt(ct, nil); err == nil {
				t.Errorf("ciphertext of subject %q opens with the key of subject %q", pa, pb)
			}
		}
	}
}

// A wrapped keyset copied into another subject's key message must not
// unwrap: the associated data binds it to its subject.
func TestSwappedWrappedKeyDoesNotUnwrap(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, t.TempDir())
	ctx := t.Context()
	pa, pb := kr.Pseudonym("ivan"), kr.Pseudonym("judy")
	if _, err := kr.SealingKey(ctx, pa); err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(ctx, DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, DefaultPrefix+subjectKeyToken)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*piledgerv1.WrappedKey){
		"pseudonym":  func(wk *piledgerv1.WrappedKey) { wk.Pseudonym = pb },
		"generation": func(wk *piledgerv1.WrappedKey) { wk.Generation = 2 },
	} {
		var wk piledgerv1.WrappedKey
		if err := proto.Unmarshal(msg.Data, &wk); err != nil {
			t.Fatal(err)
		}
		edit(&wk)
		data, err := proto.Marshal(&wk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.js.Publish(ctx, DefaultPrefix+subjectKeyToken, data); err != nil {
			t.Fatal(err)
		}
		if _, err := kr.OpeningKey(ctx, wk.Pseudonym, wk.Generation); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s swapped: OpeningKey error = %v, want ErrInvalidKey", name, err)
		}
	}
	if _, err := kr.SealingKey(ctx, pb); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("SealingKey of the subject with the swapped key: error = %v, want ErrInvalidKey", err)
	}
}

func TestKeysSurviveRestart(t *testing.T) {
	e := newEnv(t)
	indexDir := t.TempDir()
	kr := e.keyring(t, indexDir)
	ctx := t.Context()
	cts := map[string][]byte{}
	for i := range 5 {
		p := kr.Pseudonym(fmt.Sprint("ken-", i))
		sk, err := kr.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if cts[p], err = sk.AEAD.Encrypt([]byte("payload"), []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	msgs := e.keyMessages(t)
	kr.Close()
	e.restart(t)

	// The index survives too: it is not rebuilt.
	s, err := e.js.Stream(ctx, DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := openIndex(indexDir, streamIdentity(s.CachedInfo()))
	if err != nil {
		t.Fatal(err)
	}
	applied, err := idx.applied()
	idx.close()
	if applied != msgs || err != nil {
		t.Errorf("index after restart: applied sequence %d (%v), want %d", applied, err, msgs)
	}

	kr = e.keyring(t, indexDir)
	checkOpens(t, kr, cts)
	if got := e.keyMessages(t); got != msgs {
		t.Errorf("key stream has %d messages after reopening, want %d", got, msgs)
	}
}

// A keyring left open while NATS restarts keeps following the key stream.
func TestKeyringSurvivesServerRestart(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	kr1 := e.keyring(t, filepath.Join(dir, "idx1"))
	ctx := t.Context()
	e.restart(t) // kr1's connection reconnects to the new server

	kr2 := e.keyring(t, filepath.Join(dir, "idx2"))
	p := kr2.Pseudonym("trent")
	sk, err := kr2.SealingKey(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	open, err := kr1.OpeningKey(ctx, p, 1)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, sk.AEAD, open)
}

func TestIndexRebuild(t *testing.T) {
	e := newEnv(t)
	indexDir := filepath.Join(t.TempDir(), "index")
	kr := e.keyring(t, indexDir)
	ctx := t.Context()
	cts := map[string][]byte{}
	for i := range 5 {
		p := kr.Pseudonym(fmt.Sprint("leo-", i))
		sk, err := kr.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if cts[p], err = sk.AEAD.Encrypt([]byte("payload"), []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	msgs := e.keyMessages(t)
	kr.Close()
	if err := os.RemoveAll(indexDir); err != nil {
		t.Fatal(err)
	}

	kr = e.keyring(t, indexDir)
	for p := range cts {
		// The rebuilt index knows the key without asking the stream again.
		if _, _, ok, err := kr.idx.find(p, 0); !ok || err != nil {
			t.Errorf("rebuilt index lacks a key: %v", err)
		}
	}
	checkOpens(t, kr, cts)
	if got := e.keyMessages(t); got != msgs {
		t.Errorf("key stream has %d messages after the rebuild, want %d", got, msgs)
	}
}

// An index built from a key stream that was deleted and created again is
// emptied, not trusted.
func TestIndexResetForNewStream(t *testing.T) {
	e := newEnv(t)
	indexDir := t.TempDir()
	kr := e.keyring(t, indexDir)
	ctx := t.Context()
	p := kr.Pseudonym("sybil")
	if _, err := kr.SealingKey(ctx, p); err != nil {
		t.Fatal(err)
	}
	kr.Close()
	if err := e.js.DeleteStream(ctx, DefaultKeyStreamName); err != nil {
		t.Fatal(err)
	}

	kr = e.keyring(t, indexDir)
	if _, _, ok, err := kr.idx.find(p, 0); ok || err != nil {
		t.Errorf("index still holds a key of the deleted stream (%v)", err)
	}
	if _, err := kr.OpeningKey(ctx, p, 1); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("OpeningKey: error = %v, want ErrKeyNotFound", err)
	}
}

// checkOpens checks that every subject's ciphertext opens with both its
// opening key and its sealing key.
func checkOpens(t *testing.T, kr *Keyring, cts map[string][]byte) {
	t.Helper()
	ctx := t.Context()
	for p, ct := range cts {
		open, err := kr.OpeningKey(ctx, p, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := open.Decrypt(ct, []byte(p)); err != nil {
			t.Errorf("OpeningKey: %v", err)
		}
		sk, err := kr.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sk.AEAD.Decrypt(ct, []byte(p)); err != nil || sk.Generation != 1 {
			t.Errorf("SealingKey: generation %d, %v", sk.Generation, err)
		}
	}
}

// The raw subject reference reaches no file: only its pseudonym does.
func TestNoSubjectReferenceOnDisk(t *testing.T) {
	e := newEnv(t)
	indexDir := filepath.Join(t.TempDir(), "index")
	kr := e.keyring(t, indexDir)
	ctx := t.Context()
	refs := []string{"canary-mallory@example.org", "canary-110101199003074258"}
	var pseudonyms []string
	for _, ref := range refs {
		p := kr.Pseudonym(ref)
		pseudonyms = append(pseudonyms, p)
		if _, err := kr.SealingKey(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	kr.Close()
	e.srv.Shutdown()
	e.srv.WaitForShutdown()

	var canaries [][]byte
	for _, ref := range refs {
		sum := sha256.Sum256([]byte(ref))
		canaries = append(canaries, []byte(ref), []byte(hex.EncodeToString(sum[:])),
			[]byte(base64.StdEncoding.EncodeToString(sum[:])), sum[:])
	}
	dirs := []string{e.storeDir, indexDir, e.kekDir}
	for _, c := range canaries {
		if where := grep(t, dirs, c); where != "" {
			t.Errorf("a subject reference (or its hash) is in %s", where)
		}
	}
	// Positive control: the scan does see the stored pseudonyms.
	for _, p := range pseudonyms {
		if grep(t, []string{e.storeDir}, []byte(p)) == "" {
			t.Error("scan does not find a pseudonym in the NATS store")
		}
	}
}

// grep returns the first file under dirs that contains b.
func grep(t *testing.T, dirs []string, b []byte) string {
	t.Helper()
	for _, dir := range dirs {
		var found string
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || found != "" {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(data, b) {
				found = path
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if found != "" {
			return found
		}
	}
	return ""
}

func TestKeysAcrossKEKEpochs(t *testing.T) {
	e := newEnv(t)
	indexDir := t.TempDir()
	kr := e.keyring(t, indexDir)
	ctx := t.Context()
	old := kr.Pseudonym("niaj")
	if _, err := kr.SealingKey(ctx, old); err != nil {
		t.Fatal(err)
	}
	kr.Close()

	// A new epoch: new keys are wrapped under it, old ones still unwrap.
	if err := createKEKFile(e.kekDir, 2); err != nil {
		t.Fatal(err)
	}
	kr = e.keyring(t, t.TempDir())
	young := kr.Pseudonym("olivia")
	if _, err := kr.SealingKey(ctx, young); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.OpeningKey(ctx, old, 1); err != nil {
		t.Fatal(err)
	}
	s, err := e.js.Stream(ctx, DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, DefaultPrefix+subjectKeyToken)
	if err != nil {
		t.Fatal(err)
	}
	var wk piledgerv1.WrappedKey
	if err := proto.Unmarshal(msg.Data, &wk); err != nil {
		t.Fatal(err)
	}
	if wk.KekEpoch != 2 {
		t.Errorf("new key wrapped under epoch %d, want 2", wk.KekEpoch)
	}
	kr.Close()

	// The epoch-1 KEK is destroyed: what is wrapped under it no longer
	// unwraps. That includes the PRF key, so the keyring does not open (a
	// rotation re-wraps live keys before it destroys a KEK).
	if err := os.Remove(filepath.Join(e.kekDir, "kek-1.json")); err != nil {
		t.Fatal(err)
	}
	kr, err = OpenKeyring(ctx, e.js, openKEK(t, e.kekDir), KeyringConfig{IndexDir: indexDir})
	if !errors.Is(err, ErrKEKDestroyed) {
		t.Errorf("OpenKeyring with the PRF key's KEK destroyed: error = %v, want ErrKEKDestroyed", err)
	}
	if err == nil {
		kr.Close()
	}
}

func TestUnsafeKeyStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(*jetstream.StreamConfig)
		reason string
	}{
		{"deny delete", func(c *jetstream.StreamConfig) { c.DenyDelete = true }, "DenyDelete"},
		{"purge allowed", func(c *jetstream.StreamConfig) { c.DenyPurge = false }, "DenyPurge"},
		{"max age", func(c *jetstream.StreamConfig) { c.MaxAge = 24 * 60 * 60 * 1e9 }, "MaxAge"},
		{"max msgs", func(c *jetstream.StreamConfig) { c.MaxMsgs = 1000 }, "MaxMsgs"},
		{"max bytes", func(c *jetstream.StreamConfig) { c.MaxBytes = 1 << 30 }, "MaxBytes"},
		{"max per subject", func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 1 }, "MaxMsgsPerSubject"},
		{"memory", func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage }, "storage"},
		{"compression", func(c *jetstream.StreamConfig) { c.Compression = jetstream.S2Compression }, "compression"},
		{"no direct", func(c *jetstream.StreamConfig) { c.AllowDirect = false }, "AllowDirect"},
		{"work queue", func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy }, "retention"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := KeyringConfig{IndexDir: t.TempDir()}
			sc := keyStreamConfig(cfg.withDefaults())
			tc.edit(&sc)
			if _, err := e.js.CreateStream(t.Context(), sc); err != nil {
				t.Fatal(err)
			}
			_, err := OpenKeyring(t.Context(), e.js, openKEK(t, e.kekDir), cfg)
			if !errors.Is(err, ErrUnsafeKeyStream) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("OpenKeyring error = %v, want ErrUnsafeKeyStream naming %s", err, tc.reason)
			}
		})
	}
}

func TestKeyringConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  KeyringConfig
		ok   bool
	}{
		{"defaults", KeyringConfig{IndexDir: "x"}, true},
		{"everything set", KeyringConfig{Prefix: "acme.pi-ledger_1", StreamName: "ACME_KEYS", IndexDir: "x", CacheSize: 10, Replicas: 3}, true},
		{"no index dir", KeyringConfig{}, false},
		{"wildcard prefix", KeyringConfig{Prefix: "a.*", IndexDir: "x"}, false},
		{"empty token", KeyringConfig{Prefix: "a..b", IndexDir: "x"}, false},
		{"trailing dot", KeyringConfig{Prefix: "a.", IndexDir: "x"}, false},
		{"dotted stream", KeyringConfig{StreamName: "A.B", IndexDir: "x"}, false},
		{"negative cache", KeyringConfig{CacheSize: -1, IndexDir: "x"}, false},
		{"replicas", KeyringConfig{Replicas: 7, IndexDir: "x"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestAssociatedDataIsUnambiguous(t *testing.T) {
	seen := map[string]bool{}
	for _, role := range []string{roleSubjectKey, rolePRF, "a", ""} {
		for _, p := range []string{"", "a", "ab", strings.Repeat("0", 64)} {
			for _, gen := range []uint32{0, 1, 256} {
				for _, epoch := range []uint32{0, 1, 256} {
					ad := string(associatedData(role, p, gen, epoch))
					if seen[ad] {
						t.Fatalf("associated data collides for %q %q %d %d", role, p, gen, epoch)
					}
					seen[ad] = true
				}
			}
		}
	}
}

func BenchmarkSealingKeyCached(b *testing.B) {
	e := newEnv(b)
	kr := e.keyring(b, b.TempDir())
	ctx := context.Background()
	p := kr.Pseudonym("bench")
	if _, err := kr.SealingKey(ctx, p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kr.SealingKey(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealingKeyNew(b *testing.B) {
	e := newEnv(b)
	kr := e.keyring(b, b.TempDir())
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		if _, err := kr.SealingKey(ctx, kr.Pseudonym(fmt.Sprint("bench-", i))); err != nil {
			b.Fatal(err)
		}
	}
}
