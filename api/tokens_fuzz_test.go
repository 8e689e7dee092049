package api

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/piledger/piledger/crypto"
)

// FuzzVerifyToken feeds arbitrary strings to the token verifier (the
// shape checks, then Tink's signature and claim validation). It must never
// panic, and accept nothing but the valid tokens it was seeded with: a
// token's bytes have no slack a mutation could use (strict base64url, and
// the signature covers header and payload).
func FuzzVerifyToken(f *testing.F) {
	dir := f.TempDir()
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "kek"))
	if err != nil {
		f.Fatal(err)
	}
	priv, err := crypto.OpenTokenKey(context.Background(), kek, filepath.Join(dir, "auth"))
	if err != nil {
		f.Fatal(err)
	}
	issuer, err := NewTokenIssuer(priv, LocalIssuer, DefaultAudience)
	if err != nil {
		f.Fatal(err)
	}
	v, err := NewTokenVerifier(context.Background(), TokenVerifierConfig{Issuer: LocalIssuer, Keys: issuer.PublicKeyset()})
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	valid := map[string]bool{}
	for _, r := range []Role{RoleSubject, RoleRegulator, RoleAdmin} {
		tok, err := issuer.Issue(r, "fuzz-"+r.String(), time.Hour, now)
		if err != nil {
			f.Fatal(err)
		}
		valid[tok] = true
		f.Add(tok)
		parts := strings.Split(tok, ".")
		f.Add(parts[0] + "." + parts[1] + ".")
		f.Add(parts[0] + ".." + parts[2])
	}
	for _, s := range []string{"", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "eyJhbGciOiJFUzI1NiIsImprdSI6Imh0dHA6Ly94In0.e30.AA", strings.Repeat("A", 9000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		claims, err := verifyToken([]*TokenVerifier{v}, tok, now)
		if err == nil && !valid[tok] {
			t.Fatalf("verifyToken accepted %q: %+v", tok, claims)
		}
		if err == nil && (claims.Subject == "" || claims.Role == RoleNone || claims.Role == RoleEmitter) {
			t.Fatalf("verifyToken returned claims %+v", claims)
		}
	})
}
