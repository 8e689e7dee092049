package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/piledger/piledger/crypto"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestEraseCommand: piledger erase refuses without --yes (exit 2, nothing
// erased), then erases with it and prints the receipt; -o json prints a
// receipt that verifies with the ledger's verifier key; the subject's data
// map no longer shows the holding.
func TestEraseCommand(t *testing.T) {
	s := serveAt(t, t.TempDir())
	env := map[string]string{"PILEDGER_SERVER": s.addr}
	emitBatch(t, s.addr, "C-erase-me", 2)
	if code, out, errOut := cli(t, env, "", "where", "C-erase-me", "--min-index", "1"); code != exitOK || !strings.Contains(out, "acme-gates") {
		t.Fatalf("where before erase: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut := cli(t, env, "", "erase", "C-erase-me")
	if code != exitInvalid || !strings.Contains(errOut, "--yes") || out != "" {
		t.Errorf("erase without --yes: exit %d, want %d\n%s%s", code, exitInvalid, out, errOut)
	}
	if code, out, errOut := cli(t, env, "", "where", "C-erase-me"); code != exitOK || !strings.Contains(out, "acme-gates") {
		t.Errorf("erase without --yes erased: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = cli(t, env, "C-erase-me\n", "erase", "-", "--yes")
	if code != exitOK {
		t.Fatalf("erase --yes: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"LOCATION", "key-store", "DONE", "remnants", "PENDING until", "log-entries", "piledger erasure receipt v1"} {
		if !strings.Contains(out, want) {
			t.Errorf("erase output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "C-erase-me") {
		t.Errorf("erase output repeats the subject reference:\n%s", out)
	}

	// Again, as JSON: idempotent, and the receipt verifies.
	code, out, errOut = cli(t, env, "", "erase", "C-erase-me", "--yes", "-o", "json")
	var r piledgerv1.ErasureReceipt
	if code != exitOK || protojson.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("erase --yes -o json: exit %d\n%s%s", code, out, errOut)
	}
	got, err := crypto.VerifyErasureReceipt([]byte(r.GetSignedNote()), s.verifierKey)
	if err != nil {
		t.Fatalf("receipt does not verify: %v\n%s", err, r.GetSignedNote())
	}
	if "subjects/"+got.Subject != r.GetName() || len(got.Locations) != len(r.GetLocations()) {
		t.Errorf("signed receipt %+v does not match %v", got, &r)
	}

	if code, out, errOut := cli(t, env, "", "where", "C-erase-me", "-o", "json"); code != exitOK || strings.Contains(out, "acme-gates") || !strings.Contains(out, "shreddedHoldingCount") {
		t.Errorf("where after erase: exit %d\n%s%s", code, out, errOut)
	}
}
