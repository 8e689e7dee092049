package crypto

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestErasureReceipt(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, filepath.Join(t.TempDir(), "idx"))
	ctx := t.Context()
	p := kr.Pseudonym("receipt")
	if _, err := kr.SealingKey(ctx, p); err != nil {
		t.Fatal(err)
	}
	rep, err := kr.Destroy(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 25, 5, 0, 0, 0, time.UTC)
	retires := at.AddDate(0, 0, 30)
	r := &ErasureReceipt{Subject: p, ErasedAt: at, Locations: append(kr.KeyStoreLocations(rep, retires),
		ErasureLocation{Name: "log-entries", State: LocationDone, Detail: "3 entries unreadable"},
		ErasureLocation{Name: "external-systems", State: LocationOutOfScope, Detail: "copies held by emitters"})}
	signer, err := kr.LogSigner(ctx, "piledger.test/log")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := SignErasureReceipt(r, signer)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyErasureReceipt(msg, signer.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != p || !got.ErasedAt.Equal(at) || len(got.Locations) != 5 {
		t.Fatalf("verified receipt = %+v", got)
	}
	if l := got.Locations[0]; l.Name != "key-store" || l.State != LocationDone || !bytes.Contains([]byte(l.Detail), []byte("1 key message(s) overwritten")) {
		t.Errorf("key-store location = %+v", l)
	}
	if l := got.Locations[2]; l.State != LocationPending || !l.Until.Equal(retires) {
		t.Errorf("remnants location = %+v, want PENDING until %v", l, retires)
	}
	for _, w := range []string{"success", "SUCCESS"} {
		if bytes.Contains(msg, []byte(w)) {
			t.Errorf("receipt says %q", w)
		}
	}

	// Tampering, or another key, fails verification.
	tampered := bytes.Replace(msg, []byte("PENDING"), []byte("DONE   "), 1)
	if _, err := VerifyErasureReceipt(tampered, signer.VerifierKey()); !errors.Is(err, ErrInvalidReceipt) {
		t.Errorf("tampered receipt: error = %v, want ErrInvalidReceipt", err)
	}
	other, err := e.keyring(t, filepath.Join(t.TempDir(), "idx2")).LogSigner(ctx, "other.test/log")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyErasureReceipt(msg, other.VerifierKey()); !errors.Is(err, ErrInvalidReceipt) {
		t.Errorf("receipt under another key name: error = %v, want ErrInvalidReceipt", err)
	}

	// A PENDING location without a date, or a raw reference, is refused.
	bad := []*ErasureReceipt{
		{Subject: p, ErasedAt: at, Locations: []ErasureLocation{{Name: "remnants", State: LocationPending}}},
		{Subject: "alice@example.org", ErasedAt: at, Locations: r.Locations},
		{Subject: p, ErasedAt: at},
		{Subject: p, ErasedAt: at, Locations: []ErasureLocation{{Name: "x", State: "success"}}},
	}
	for i, b := range bad {
		if _, err := SignErasureReceipt(b, signer); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("bad receipt %d: error = %v, want ErrInvalidConfig", i, err)
		}
	}
}
