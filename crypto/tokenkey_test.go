package crypto_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tink-crypto/tink-go/v2/jwt"

	"github.com/piledger/piledger/crypto"
)

// TestOpenTokenKey: the token key is made once, stored wrapped (never in
// clear), private, reopened as the same key, and useless under another KEK.
func TestOpenTokenKey(t *testing.T) {
	dir := t.TempDir()
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	authDir := filepath.Join(dir, "auth")
	h1, err := crypto.OpenTokenKey(t.Context(), kek, authDir)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := crypto.OpenTokenKey(t.Context(), kek, authDir)
	if err != nil {
		t.Fatal(err)
	}
	if h1.KeysetInfo().GetPrimaryKeyId() != h2.KeysetInfo().GetPrimaryKeyId() {
		t.Errorf("reopening made another key")
	}
	path := filepath.Join(authDir, crypto.TokenKeyFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token key file: %v, %v; want mode 0600", fi, err)
	}
	// A token signed with the first handle verifies with the second's
	// public keys.
	s, err := jwt.NewSigner(h1)
	if err != nil {
		t.Fatal(err)
	}
	sub, typ := "x", "at+jwt"
	raw, err := jwt.NewRawJWT(&jwt.RawJWTOptions{Subject: &sub, TypeHeader: &typ, WithoutExpiration: true})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.SignAndEncode(raw)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := h2.Public()
	if err != nil {
		t.Fatal(err)
	}
	v, err := jwt.NewVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	val, err := jwt.NewValidator(&jwt.ValidatorOpts{ExpectedTypeHeader: &typ, AllowMissingExpiration: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyAndDecode(tok, val); err != nil {
		t.Errorf("the reopened key does not verify the first one's token: %v", err)
	}

	// Another KEK cannot unwrap it.
	other, err := crypto.OpenLocalKEK(filepath.Join(t.TempDir(), "kek"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.OpenTokenKey(t.Context(), other, authDir); err == nil {
		t.Errorf("the token key opened under another KEK")
	}
	// A file others may read is refused.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.OpenTokenKey(t.Context(), kek, authDir); err == nil {
		t.Errorf("a world-readable token key was accepted")
	}
}
