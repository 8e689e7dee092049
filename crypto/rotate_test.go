package crypto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// keyringWith opens a keyring on kek (shared with other keyrings of the
// test, as the nodes of a cluster share the KEK files), closed when the test
// ends.
func keyringWith(t testing.TB, js jetstream.JetStream, kek KEK, indexDir string, cacheSize int) *Keyring {
	t.Helper()
	kr, err := OpenKeyring(context.Background(), js, kek, KeyringConfig{IndexDir: indexDir, CacheSize: cacheSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	return kr
}

// storedKey is a wrapped key message of the key stream.
type storedKey struct {
	seq     uint64
	subject string
	wk      *piledgerv1.WrappedKey
}

// storedKeys returns every wrapped key left in the key stream.
func storedKeys(t testing.TB, js jetstream.JetStream) []storedKey {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedKey
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg.Subject == DefaultPrefix+erasedToken || msg.Subject == DefaultPrefix+rotatedToken {
			continue
		}
		var wk piledgerv1.WrappedKey
		if err := proto.Unmarshal(msg.Data, &wk); err != nil {
			t.Fatalf("key-stream sequence %d on %s: %v", seq, msg.Subject, err)
		}
		out = append(out, storedKey{seq: seq, subject: msg.Subject, wk: &wk})
	}
	return out
}

// countEntries returns the number of index entries under prefix.
func countEntries(t testing.TB, kr *Keyring, prefix []byte) int {
	t.Helper()
	entries, err := kr.idx.toShred(prefix)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// rotateFixture is a key stream holding what a rotation must handle: subject
// keys with ciphertexts, the ledger's own key, the PRF and signing keys, a
// creation-race loser, an erased subject, and a token key file.
type rotateFixture struct {
	e        *env
	kek      *LocalKEK
	kr       *Keyring
	cts      map[string][]byte // pseudonym → ciphertext under its generation-1 key
	erased   string            // pseudonym of the erased subject
	erasedCT []byte
	vkey     string // the signing key's verifier key
	authDir  string
	tokenKey uint32 // the token key's primary key id
}

func newRotateFixture(t *testing.T, subjects int) *rotateFixture {
	t.Helper()
	e := newEnv(t)
	dir := t.TempDir()
	f := &rotateFixture{e: e, kek: openKEK(t, e.kekDir), cts: map[string][]byte{}, authDir: filepath.Join(dir, "auth")}
	f.kr = keyringWith(t, e.js, f.kek, filepath.Join(dir, "idx"), 0)
	ctx := t.Context()
	seal := func(p string) []byte {
		sk, err := f.kr.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := sk.AEAD.Encrypt([]byte("payload"), []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	for i := range subjects {
		p := f.kr.Pseudonym(fmt.Sprint("subject-", i))
		f.cts[p] = seal(p)
	}
	f.cts[""] = seal("") // the ledger's own key
	// A creation-race loser for one subject (another node's key of the same
	// generation, after the first), in the second batch of TestRotateCrash.
	other := keyringWith(t, e.js, f.kek, filepath.Join(dir, "other"), 0)
	if _, err := other.create(ctx, f.kr.Pseudonym(fmt.Sprint("subject-", min(5, subjects-1))), 1); err != nil {
		t.Fatal(err)
	}
	signer, err := f.kr.LogSigner(ctx, "ledger.example/log")
	if err != nil {
		t.Fatal(err)
	}
	f.vkey = signer.VerifierKey()
	h, err := OpenTokenKey(ctx, f.kek, f.authDir)
	if err != nil {
		t.Fatal(err)
	}
	f.tokenKey = h.KeysetInfo().GetPrimaryKeyId()
	f.erased = f.kr.Pseudonym("erased")
	f.erasedCT = seal(f.erased)
	if _, err := f.kr.Destroy(ctx, f.erased); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkKeys opens every ciphertext of the fixture with kr, and checks the
// pseudonyms, the signing key, the token key and the erased subject.
func (f *rotateFixture) checkKeys(t *testing.T, kr *Keyring, kek KEK) {
	t.Helper()
	ctx := t.Context()
	for p, ct := range f.cts {
		open, err := kr.OpeningKey(ctx, p, 1)
		if err != nil {
			t.Fatalf("OpeningKey: %v", err)
		}
		if _, err := open.Decrypt(ct, []byte(p)); err != nil {
			t.Errorf("a ciphertext sealed before the rotation does not open: %v", err)
		}
		sk, err := kr.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sk.AEAD.Decrypt(ct, []byte(p)); err != nil || sk.Generation != 1 {
			t.Errorf("SealingKey: generation %d, %v", sk.Generation, err)
		}
	}
	if kr.Pseudonym("subject-0") != f.kr.Pseudonym("subject-0") {
		t.Error("the pseudonym of a subject changed: the PRF key is another")
	}
	signer, err := kr.LogSigner(ctx, "ledger.example/log")
	if err != nil {
		t.Fatal(err)
	}
	if signer.VerifierKey() != f.vkey {
		t.Errorf("the signing key changed: %s, want %s", signer.VerifierKey(), f.vkey)
	}
	h, err := OpenTokenKey(ctx, kek, f.authDir)
	if err != nil {
		t.Fatal(err)
	}
	if h.KeysetInfo().GetPrimaryKeyId() != f.tokenKey {
		t.Error("the token key changed")
	}
	if _, err := kr.OpeningKey(ctx, f.erased, 1); !errors.Is(err, ErrShredded) {
		t.Errorf("OpeningKey of the erased subject: %v, want ErrShredded", err)
	}
}

// allUnder fails the test unless every wrapped key in the key stream (and
// the token key file) is under epoch.
func (f *rotateFixture) allUnder(t *testing.T, epoch uint32) {
	t.Helper()
	for _, k := range storedKeys(t, f.e.js) {
		if k.wk.GetKekEpoch() != epoch {
			t.Errorf("key-stream sequence %d (%s) is under epoch %d, want %d", k.seq, k.subject, k.wk.GetKekEpoch(), epoch)
		}
		if k.wk.GetPseudonym() == f.erased && k.subject == DefaultPrefix+subjectKeyToken {
			t.Errorf("the erased subject's key is in the key stream again (sequence %d)", k.seq)
		}
	}
	data, err := os.ReadFile(filepath.Join(f.authDir, TokenKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var wk piledgerv1.WrappedKey
	if err := proto.Unmarshal(data, &wk); err != nil || wk.GetKekEpoch() != epoch {
		t.Errorf("token key under epoch %d (%v), want %d", wk.GetKekEpoch(), err, epoch)
	}
}

func TestRotate(t *testing.T) {
	f := newRotateFixture(t, 20)
	ctx := t.Context()
	kek1, err := os.ReadFile(filepath.Join(f.e.kekDir, "kek-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	keysBefore := storedKeys(t, f.e.js)

	rep, err := f.kr.Rotate(ctx, RotateOptions{NewEpoch: true, TokenKeyDir: f.authDir})
	if err != nil {
		t.Fatal(err)
	}
	// 20 subjects, the ledger's key, the PRF and signing keys.
	const live = 20 + 1 + 2
	if rep.Epoch != 2 || !rep.NewEpoch || rep.Live != live || rep.Rewrapped != live || rep.SkippedDestroyed != 1 ||
		rep.Overwritten != live+1 || rep.AlreadyGone != 0 || !rep.TokenKeyRewrapped || !slices.Equal(rep.Retired, []uint32{1}) {
		t.Errorf("Rotate = %+v, want epoch 2 (new), %d live keys re-wrapped, 1 skipped, %d overwritten (with the loser), epoch 1 retired",
			rep, live, live+1)
	}
	f.allUnder(t, 2)
	if got, want := len(storedKeys(t, f.e.js)), len(keysBefore)-1; got != want {
		t.Errorf("%d wrapped keys in the key stream after the rotation, want %d (one per live key)", got, want)
	}
	// The old copies' bytes are gone from the stream's files, and the
	// epoch-1 KEK from the KEK directory.
	f.e.restart(t)
	for _, k := range keysBefore {
		if where := grep(t, []string{f.e.storeDir}, k.wk.GetKeyset()); where != "" {
			t.Errorf("the wrapped keyset of sequence %d (epoch 1) is still in %s", k.seq, where)
		}
	}
	entries, err := os.ReadDir(f.e.kekDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "kek-2.json" {
		t.Errorf("KEK directory holds %v, want only kek-2.json", entries)
	}
	if where := grep(t, []string{filepath.Dir(f.e.kekDir)}, kek1); where != "" {
		t.Errorf("the epoch-1 KEK is still in %s", where)
	}

	// Every key opens, on a node that never saw epoch 1 (new KEK object,
	// rebuilt index) and on the rotating node after a restart.
	kek := openKEK(t, f.e.kekDir)
	if _, err := kek.AEAD(ctx, 1); !errors.Is(err, ErrKEKDestroyed) {
		t.Errorf("AEAD(1) after the rotation: %v, want ErrKEKDestroyed", err)
	}
	fresh := keyringWith(t, f.e.js, kek, filepath.Join(t.TempDir(), "fresh"), 0)
	f.checkKeys(t, fresh, kek)
	f.kr.Close()
	f.kr = keyringWith(t, f.e.js, kek, f.kr.cfg.IndexDir, 0)
	f.checkKeys(t, f.kr, kek)
	for _, kr := range []*Keyring{fresh, f.kr} {
		if n := countEntries(t, kr, []byte{'s'}); n != 0 {
			t.Errorf("index holds %d superseded entries after the rotation marker", n)
		}
	}

	// Nothing left to do: a rotation without a new epoch writes nothing.
	last := f.e.keyMessages(t)
	s, err := f.e.js.Stream(ctx, DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := s.CachedInfo().State.LastSeq
	rep, err = f.kr.Rotate(ctx, RotateOptions{TokenKeyDir: f.authDir})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Epoch != 2 || rep.NewEpoch || rep.Rewrapped != 0 || rep.Overwritten != 0 || rep.Live != live || rep.TokenKeyRewrapped || len(rep.Retired) != 0 {
		t.Errorf("second Rotate = %+v, want a no-op", rep)
	}
	s, err = f.e.js.Stream(ctx, DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if f.e.keyMessages(t) != last || s.CachedInfo().State.LastSeq != lastSeq {
		t.Error("a rotation with nothing to do wrote to the key stream")
	}

	// And again with a new epoch: epoch 3, epoch 2 retired.
	rep, err = f.kr.Rotate(ctx, RotateOptions{NewEpoch: true, TokenKeyDir: f.authDir})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Epoch != 3 || rep.Rewrapped != live || !slices.Equal(rep.Retired, []uint32{2}) {
		t.Errorf("third Rotate = %+v, want epoch 3, %d re-wrapped, epoch 2 retired", rep, live)
	}
	f.allUnder(t, 3)
	f.checkKeys(t, keyringWith(t, f.e.js, openKEK(t, f.e.kekDir), filepath.Join(t.TempDir(), "fresh3"), 0), kek)
}

// TestRotateCrash: a rotation stopped after part of the keys are re-wrapped
// (the re-wraps acknowledged and indexed, the old messages not deleted yet)
// leaves every key opening — on the same index and on one rebuilt from the
// stream, which then holds both copies of some keys and a creation-race
// loser — and running Rotate again finishes it without starting another
// epoch.
func TestRotateCrash(t *testing.T) {
	f := newRotateFixture(t, 20)
	ctx := t.Context()
	crash := errors.New("crash")
	_, err := f.kr.Rotate(ctx, RotateOptions{NewEpoch: true, TokenKeyDir: f.authDir, batch: 4,
		afterRewrap: func(n int) error {
			if n >= 8 {
				return crash
			}
			return nil
		}})
	if !errors.Is(err, crash) {
		t.Fatalf("Rotate with a crash after 8 re-wraps: %v", err)
	}
	if got := f.kek.Epochs(); !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("epochs after the crash: %v, want [1 2]", got)
	}
	var under [3]int
	loser := f.kr.Pseudonym("subject-5")
	copies := 0
	for _, k := range storedKeys(t, f.e.js) {
		under[k.wk.GetKekEpoch()]++
		if k.wk.GetPseudonym() == loser {
			copies++
		}
	}
	if under[2] != 8 || copies != 3 {
		t.Fatalf("after the crash %d keys are under epoch 2, want 8; subject-5 has %d messages, want 3 (old, loser, re-wrap)", under[2], copies)
	}

	// Every key opens: the rotating node (its cache purged), a node that
	// reopens the same index, and one that rebuilds its index.
	f.kr.cache.Purge()
	f.checkKeys(t, f.kr, f.kek)
	f.kr.Close()
	f.kr = keyringWith(t, f.e.js, openKEK(t, f.e.kekDir), f.kr.cfg.IndexDir, 0)
	f.checkKeys(t, f.kr, f.kek)
	rebuilt := keyringWith(t, f.e.js, openKEK(t, f.e.kekDir), filepath.Join(t.TempDir(), "rebuilt"), 0)
	f.checkKeys(t, rebuilt, f.kek)

	// Running it again (from the rebuilt node, whose KEK is at epoch 2 with
	// epoch 1 still there) finishes the same rotation.
	rep, err := rebuilt.Rotate(ctx, RotateOptions{NewEpoch: true, TokenKeyDir: f.authDir})
	if err != nil {
		t.Fatal(err)
	}
	const live = 20 + 1 + 2
	if rep.Epoch != 2 || rep.NewEpoch || rep.Rewrapped != live-8 || rep.Live != live || !slices.Equal(rep.Retired, []uint32{1}) {
		t.Errorf("Rotate after the crash = %+v, want epoch 2 finished: %d re-wrapped, epoch 1 retired", rep, live-8)
	}
	f.allUnder(t, 2)
	kek := openKEK(t, f.e.kekDir)
	for _, dir := range []string{f.kr.cfg.IndexDir, filepath.Join(t.TempDir(), "after")} {
		if dir == f.kr.cfg.IndexDir {
			f.kr.Close()
		}
		f.checkKeys(t, keyringWith(t, f.e.js, kek, dir, 0), kek)
	}
}

// TestRotateWhileInUse: another node (sharing the KEK files, as a cluster
// must) opens keys through a one-entry cache all along a rotation: the old
// messages it has indexed are deleted under it, and it follows the re-wraps.
func TestRotateWhileInUse(t *testing.T) {
	f := newRotateFixture(t, 40)
	ctx := t.Context()
	reader := keyringWith(t, f.e.js, f.kek, filepath.Join(t.TempDir(), "reader"), 1)
	var stop atomic.Bool
	var opened atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			for p, ct := range f.cts {
				open, err := reader.OpeningKey(ctx, p, 1)
				if err != nil {
					t.Errorf("OpeningKey during the rotation: %v", err)
					return
				}
				if _, err := open.Decrypt(ct, []byte(p)); err != nil {
					t.Errorf("Decrypt during the rotation: %v", err)
					return
				}
				opened.Add(1)
			}
		}
	})
	if _, err := f.kr.Rotate(ctx, RotateOptions{NewEpoch: true, TokenKeyDir: f.authDir, batch: 3}); err != nil {
		t.Error(err)
	}
	stop.Store(true)
	wg.Wait()
	if opened.Load() == 0 {
		t.Error("the reader opened nothing")
	}
	f.checkKeys(t, reader, f.kek)
}

// TestRotateOldCopyAfterEpoch (requirement R-20): a copy of the data
// directory (NATS store, KEK directory, key index) taken before a subject is
// erased decrypts nothing of that subject once a rotation has retired the
// epoch the copy's keys are wrapped under, even to someone who also holds
// the current KEK files. Before the epoch retires, the copy does decrypt the
// subject (the control).
func TestRotateOldCopyAfterEpoch(t *testing.T) {
	e := newEnv(t)
	root := t.TempDir()
	indexDir := filepath.Join(root, "idx")
	kr := e.keyring(t, indexDir)
	ctx := t.Context()
	pa, pb := kr.Pseudonym("alice"), kr.Pseudonym("bob")
	cts := map[string][]byte{}
	for _, p := range []string{pa, pb} {
		sk, err := kr.SealingKey(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if cts[p], err = sk.AEAD.Encrypt([]byte("payload of "+p), []byte(p)); err != nil {
			t.Fatal(err)
		}
	}

	// The backup: the whole data directory, server stopped.
	kr.Close()
	port := e.srv.Addr().(*net.TCPAddr).Port
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	backup := filepath.Join(root, "backup")
	for _, d := range []string{e.storeDir, e.kekDir, indexDir} {
		if err := os.CopyFS(filepath.Join(backup, filepath.Base(d)), os.DirFS(d)); err != nil {
			t.Fatal(err)
		}
	}
	// cp -a keeps the KEK files private; os.CopyFS does not.
	err := filepath.WalkDir(filepath.Join(backup, "kek"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chmod(path, map[bool]os.FileMode{true: 0o700, false: 0o600}[d.IsDir()])
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = runServer(t, e.storeDir, port)
	e.js = connect(t, e.srv)

	// Alice is erased, then the KEK is rotated.
	kek := openKEK(t, e.kekDir)
	kr = keyringWith(t, e.js, kek, indexDir, 0)
	if _, err := kr.Destroy(ctx, pa); err != nil {
		t.Fatal(err)
	}
	rep, err := kr.Rotate(ctx, RotateOptions{NewEpoch: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.SkippedDestroyed != 1 || !slices.Equal(rep.Retired, []uint32{1}) {
		t.Fatalf("Rotate = %+v, want Alice skipped and epoch 1 retired", rep)
	}
	// The live ledger: Bob opens, Alice is shredded.
	if _, err := kr.OpeningKey(ctx, pa, 1); !errors.Is(err, ErrShredded) {
		t.Errorf("live OpeningKey(Alice): %v, want ErrShredded", err)
	}
	open, err := kr.OpeningKey(ctx, pb, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open.Decrypt(cts[pb], []byte(pb)); err != nil {
		t.Errorf("live: Bob does not open: %v", err)
	}

	// The attacker's view: the backup's NATS store with the CURRENT KEK
	// directory (stolen later).
	srv := runServer(t, filepath.Join(backup, "nats"), -1)
	js := connect(t, srv)
	liveKEK := openKEK(t, e.kekDir)
	if kr, err := OpenKeyring(ctx, js, liveKEK, KeyringConfig{IndexDir: filepath.Join(backup, "idx")}); !errors.Is(err, ErrKEKDestroyed) {
		t.Errorf("OpenKeyring on the backup with the current KEK: %v, want ErrKEKDestroyed", err)
		if err == nil {
			kr.Close()
		}
	}
	// Every wrapped key in the backup, Alice's included, is under the
	// destroyed epoch 1 (Bob's too: the backup holds no key under a live
	// epoch). None unwraps under the KEK the attacker holds, neither with its
	// own epoch (destroyed) nor under the live epoch's KEK.
	stored := storedKeys(t, js)
	var alice int
	for _, k := range stored {
		if k.wk.GetKekEpoch() != 1 {
			t.Errorf("backup key-stream sequence %d is under epoch %d", k.seq, k.wk.GetKekEpoch())
		}
		role := map[string]string{
			DefaultPrefix + subjectKeyToken: roleSubjectKey,
			DefaultPrefix + prfToken:        rolePRF,
			DefaultPrefix + signerToken:     roleLogSigner,
		}[k.subject]
		if k.wk.GetPseudonym() == pa {
			alice++
		}
		if _, err := unwrapKey(ctx, liveKEK, role, k.wk); !errors.Is(err, ErrKEKDestroyed) {
			t.Errorf("backup key at sequence %d: unwrap with the current KEK: %v, want ErrKEKDestroyed", k.seq, err)
		}
		live, err := liveKEK.AEAD(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, ad := range [][]byte{
			associatedData(role, k.wk.GetPseudonym(), k.wk.GetGeneration(), 1),
			associatedData(role, k.wk.GetPseudonym(), k.wk.GetGeneration(), 2),
		} {
			if _, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(k.wk.GetKeyset())), live, ad); err == nil {
				t.Errorf("backup key at sequence %d unwraps under the live KEK", k.seq)
			}
		}
	}
	if alice != 1 {
		t.Fatalf("the backup holds %d keys of Alice, want 1 (the scan sees nothing?)", alice)
	}

	// Control: the same backup with its own KEK directory (epoch 1 alive,
	// as it was before the rotation) opens Alice's ciphertext.
	old, err := OpenKeyring(ctx, js, openKEK(t, filepath.Join(backup, "kek")), KeyringConfig{IndexDir: filepath.Join(backup, "idx")})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	open, err = old.OpeningKey(ctx, pa, 1)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := open.Decrypt(cts[pa], []byte(pa)); err != nil || string(pt) != "payload of "+pa {
		t.Errorf("control: the backup with its own KEK does not open Alice: %q, %v", pt, err)
	}
}

// TestRotateRefusesNewerEpoch: a node whose KEK does not know the epoch
// another node rotated to (it was not given the new KEK file, or not
// restarted) changes nothing and starts no epoch of its own.
func TestRotateRefusesNewerEpoch(t *testing.T) {
	f := newRotateFixture(t, 3)
	ctx := t.Context()
	stale := openKEK(t, f.e.kekDir) // loads epoch 1, and never reloads
	b := keyringWith(t, f.e.js, stale, filepath.Join(t.TempDir(), "stale"), 0)
	if _, err := f.kr.Rotate(ctx, RotateOptions{NewEpoch: true, TokenKeyDir: f.authDir}); err != nil {
		t.Fatal(err)
	}
	before := f.e.keyMessages(t)
	if _, err := b.Rotate(ctx, RotateOptions{NewEpoch: true}); !errors.Is(err, ErrUnknownEpoch) {
		t.Errorf("Rotate with a KEK behind the key stream: %v, want ErrUnknownEpoch", err)
	}
	if got := stale.Epochs(); !slices.Equal(got, []uint32{1}) {
		t.Errorf("the stale KEK has epochs %v after the refused rotation, want [1]", got)
	}
	if f.e.keyMessages(t) != before {
		t.Error("the refused rotation wrote to the key stream")
	}
}

// BenchmarkRotate measures a KEK rotation of N subjects' keys (plus the
// ledger's, PRF and signing keys) on an embedded server that fsyncs every
// write (as piledger runs it), with the old copies overwritten
// (SecureDeleteMsg, the default) or only deleted (PlainDelete). It reports
// subjects/s and the time per million subjects extrapolated linearly from N.
func BenchmarkRotate(b *testing.B) {
	for _, n := range []int{10_000, 50_000} {
		for _, plain := range []bool{false, true} {
			del := map[bool]string{false: "secure", true: "plain"}[plain]
			b.Run(fmt.Sprintf("subjects=%d/delete=%s", n, del), func(b *testing.B) {
				var total time.Duration
				for b.Loop() {
					b.StopTimer()
					kr := rotateBenchKeys(b, n)
					b.StartTimer()
					rep, err := kr.Rotate(context.Background(), RotateOptions{NewEpoch: true, PlainDelete: plain})
					if err != nil {
						b.Fatal(err)
					}
					if rep.Rewrapped != n+3 {
						b.Fatalf("re-wrapped %d keys, want %d", rep.Rewrapped, n+3)
					}
					total += rep.Duration
				}
				per := total.Seconds() / float64(b.N)
				b.ReportMetric(float64(n)/per, "subjects/s")
				b.ReportMetric(per*1e6/float64(n), "s/1M-subjects")
			})
		}
	}
}

// rotateBenchKeys starts a server that fsyncs every write and stores n
// subject keys in its key stream, as fast as possible (wrapped and published
// asynchronously, not one SealingKey at a time).
func rotateBenchKeys(b *testing.B, n int) *Keyring {
	b.Helper()
	dir := b.TempDir()
	s, err := server.NewServer(&server.Options{JetStream: true, StoreDir: filepath.Join(dir, "nats"), Port: -1,
		SyncAlways: true, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	b.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	js := connect(b, s)
	kek := openKEK(b, filepath.Join(dir, "kek"))
	kr := keyringWith(b, js, kek, filepath.Join(dir, "idx"), 0)
	ctx := context.Background()
	if _, err := kr.LogSigner(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	if _, err := kr.SealingKey(ctx, ""); err != nil {
		b.Fatal(err)
	}
	var acks []jetstream.PubAckFuture
	wait := func() {
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
		acks = acks[:0]
	}
	for i := range n {
		h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
		if err != nil {
			b.Fatal(err)
		}
		data, err := wrapKey(ctx, kek, roleSubjectKey, kr.Pseudonym(fmt.Sprint("bench-", i)), 1, h)
		if err != nil {
			b.Fatal(err)
		}
		f, err := js.PublishAsync(DefaultPrefix+subjectKeyToken, data)
		if err != nil {
			b.Fatal(err)
		}
		if acks = append(acks, f); len(acks) == 1000 {
			wait()
		}
	}
	wait()
	if err := kr.refresh(ctx); err != nil {
		b.Fatal(err)
	}
	return kr
}
