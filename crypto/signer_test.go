package crypto

import (
	"crypto/sha256"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestLogSignerIsSharedAndStable(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	ctx := t.Context()

	// Two nodes ask for the key concurrently: both get the same one.
	a := e.keyring(t, filepath.Join(dir, "a"))
	b := e.keyring(t, filepath.Join(dir, "b"))
	signers := make([]*LogSigner, 2)
	var wg sync.WaitGroup
	for i, kr := range []*Keyring{a, b} {
		wg.Go(func() {
			s, err := kr.LogSigner(ctx, "ledger.example/log")
			if err != nil {
				t.Error(err)
				return
			}
			signers[i] = s
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if signers[0].VerifierKey() != signers[1].VerifierKey() {
		t.Fatalf("two nodes sign with different keys:\n%s\n%s", signers[0].VerifierKey(), signers[1].VerifierKey())
	}

	// A note signed on one node opens with the published key of the other.
	msg, err := note.Sign(&note.Note{Text: "ledger.example/log\n1\n" + "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"}, signers[0])
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(signers[1].VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatalf("note.Open with the published key: %v", err)
	}
	if signers[0].KeyHash() != v.KeyHash() || signers[0].Name() != v.Name() {
		t.Errorf("signer name/hash %s/%08x, verifier %s/%08x", signers[0].Name(), signers[0].KeyHash(), v.Name(), v.KeyHash())
	}

	// The key survives a restart of the server and of the keyrings.
	before := signers[0].VerifierKey()
	a.Close()
	b.Close()
	e.restart(t)
	c := e.keyring(t, filepath.Join(dir, "c"))
	s, err := c.LogSigner(ctx, "ledger.example/log")
	if err != nil {
		t.Fatal(err)
	}
	if s.VerifierKey() != before {
		t.Errorf("after a restart the key is %s, want %s", s.VerifierKey(), before)
	}
	// The PRF key, and one signing key per node that lost no race (1 or 2).
	if n := e.keyMessages(t); n < 2 || n > 3 {
		t.Errorf("key stream holds %d messages, want the PRF key and 1 or 2 signing keys", n)
	}
}

func TestLogSignerNames(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, t.TempDir())
	for _, bad := range []string{"", "has space", "a+b", "tab\there"} {
		if _, err := kr.LogSigner(t.Context(), bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("LogSigner(%q) = %v, want ErrInvalidConfig", bad, err)
		}
	}
	// The same key under two names: different key hashes, same public key.
	s1, err := kr.LogSigner(t.Context(), "one.example/log")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := kr.LogSigner(t.Context(), "two.example/log")
	if err != nil {
		t.Fatal(err)
	}
	if s1.KeyHash() == s2.KeyHash() {
		t.Error("two names give the same key hash")
	}
	pub := func(vkey string) [32]byte { return sha256.Sum256([]byte(vkey[len(vkey)-45:])) }
	if pub(s1.VerifierKey()) != pub(s2.VerifierKey()) {
		t.Error("two names give two keys")
	}
}
