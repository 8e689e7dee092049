package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/ledgertest"
	"github.com/piledger/piledger/ledger/tlog"
)

// fixtures is the committed ledger fixture (see ledger/tlog/testdata and
// ledger/transparency/fixture_test.go).
const fixtures = "../../ledger/tlog/testdata"

// TestVerifyFixture runs piledger verify on the committed fixture and its
// tampered variants.
func TestVerifyFixture(t *testing.T) {
	key := filepath.Join(fixtures, "ledger.vkey")
	code, out, errOut := cli(t, nil, "", "verify", filepath.Join(fixtures, "ledger.bundle"), "--key-file", key)
	if code != exitOK || !strings.Contains(out, "verified: ") || !strings.Contains(out, "erased (subject key destroyed, still verified): 3 events") ||
		!strings.Contains(out, "OPERATION_DESTROY") {
		t.Fatalf("verify the fixture: exit %d\n%s%s", code, out, errOut)
	}
	// JSON, and without a pinned key (the bundle's own, said so).
	code, out, _ = cli(t, nil, "", "verify", filepath.Join(fixtures, "ledger.bundle"), "-o", "json")
	var rep struct {
		Verified      bool              `json:"verified"`
		KeyFromBundle bool              `json:"keyFromBundle"`
		Events        uint64            `json:"events"`
		Operations    map[string]uint64 `json:"operations"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || !rep.Verified || !rep.KeyFromBundle || rep.Events == 0 {
		t.Errorf("verify -o json: exit %d\n%s", code, out)
	}

	for name, where := range map[string]string{
		"tampered-byte.bundle":      "log indexes",
		"tampered-dropped.bundle":   "log indexes",
		"tampered-reordered.bundle": "log indexes",
		"tampered-signature.bundle": "checkpoint 2",
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := cli(t, nil, "", "verify", filepath.Join(fixtures, name), "--key-file", key)
			if code != exitTampered || !strings.Contains(errOut, "TAMPERED") || !strings.Contains(errOut, where) {
				t.Errorf("exit %d, want %d naming %q\n%s%s", code, exitTampered, where, out, errOut)
			}
		})
	}

	// Another key of the same name: every checkpoint fails its signature.
	_, other := otherKey(t)
	if code, _, errOut := cli(t, nil, "", "verify", filepath.Join(fixtures, "ledger.bundle"), "--key", other); code != exitTampered || !strings.Contains(errOut, "checkpoint 1") {
		t.Errorf("another operator's key: exit %d\n%s", code, errOut)
	}

	// Unreadable input and usage errors.
	notBundle := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notBundle, []byte("not a bundle\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.bundle")
	full, err := os.ReadFile(filepath.Join(fixtures, "ledger.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(truncated, full[:len(full)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	for _, test := range []struct {
		name string
		args []string
		code int
	}{
		{"not a bundle", []string{"verify", notBundle}, exitUnreadable},
		{"truncated", []string{"verify", truncated, "--key-file", key}, exitUnreadable},
		{"missing file", []string{"verify", filepath.Join(t.TempDir(), "nope.bundle")}, exitUnreadable},
		{"nothing to verify", []string{"verify"}, exitInvalid},
		{"file and --since", []string{"verify", notBundle, "--since", "x"}, exitInvalid},
		{"bad key", []string{"verify", notBundle, "--key", "nonsense"}, exitInvalid},
		{"export without --out", []string{"log", "export"}, exitInvalid},
	} {
		t.Run(test.name, func(t *testing.T) {
			if code, out, errOut := cli(t, nil, "", test.args...); code != test.code {
				t.Errorf("%v: exit %d, want %d\n%s%s", test.args, code, test.code, out, errOut)
			}
		})
	}
}

// otherKey returns a signer and verifier key named like the default origin,
// but not the ledger's.
func otherKey(t *testing.T) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, tlog.DefaultOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return signer, vkey
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// served is a `piledger serve` running on a data directory.
type served struct {
	addr, verifierKey string
	stop              func()
}

// serveAt runs `piledger serve --insecure-no-auth` on dataDir (so that it
// can be stopped and started again on the same data) with a fast checkpoint
// interval. (Authentication is not what these tests are about.)
func serveAt(t *testing.T, dataDir string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	env := map[string]string{"PILEDGER_LOG_FORMAT": "json", "PILEDGER_HTTP_ADDR": "127.0.0.1:0", "PILEDGER_METRICS_ADDR": "127.0.0.1:0",
		"PILEDGER_CHECKPOINT_INTERVAL": "20ms"}
	go func() {
		done <- run(ctx, []string{"serve", "--data", dataDir, "--grpc-addr", "127.0.0.1:0", "--insecure-no-auth"},
			mapEnv(env), strings.NewReader(""), io.Discard, pw)
		pw.Close()
	}()
	s := &served{}
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(s.stop)
	sc := bufio.NewScanner(pr)
	var logs bytes.Buffer
	for s.addr == "" && sc.Scan() {
		logs.Write(append(sc.Bytes(), '\n'))
		var line struct {
			Msg         string `json:"msg"`
			GRPCAddr    string `json:"grpc_addr"`
			VerifierKey string `json:"verifier_key"`
			LogOrigin   string `json:"log_origin"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "piledger serving" {
			s.addr, s.verifierKey = line.GRPCAddr, line.VerifierKey
			if line.VerifierKey == "" || line.LogOrigin == "" {
				t.Errorf("the startup line does not print the verifier key and origin: %s", sc.Bytes())
			}
		}
	}
	if s.addr == "" {
		t.Fatalf("serve ended before listening: %v\n%s", sc.Err(), logs.String())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return s
}

// emitBatch appends n collection events about subject through the CLI.
func emitBatch(t *testing.T, addr, subject string, n int) {
	t.Helper()
	var ndjson strings.Builder
	for i := range n {
		fmt.Fprintf(&ndjson, `{"eventId":"%s","subjectRef":"%s","operation":"OPERATION_STORE","occurredAt":"2026-11-01T08:00:00Z","processor":"acme-gates","dataCategories":["face"]}`+"\n",
			fmt.Sprintf("019ab7c2-%04x-7000-8000-%012d", time.Now().UnixNano()&0xffff, i), subject)
	}
	if code, out, errOut := cli(t, nil, ndjson.String(), "emit", "--server", addr, "-f", "-"); code != exitOK {
		t.Fatalf("emit: exit %d\n%s%s", code, out, errOut)
	}
}

// waitCheckpoint polls `piledger log checkpoint` until the tree holds size
// events.
func waitCheckpoint(t *testing.T, addr string, size int) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out, _ := cli(t, nil, "", "log", "checkpoint", "--server", addr)
		if code == exitOK {
			lines := strings.Split(out, "\n")
			if len(lines) > 2 && lines[1] == fmt.Sprint(size) {
				return out
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size %d: %s", size, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExportAndVerifyEndToEnd runs the real binary's commands: serve, emit,
// live verification against a saved checkpoint, export and offline
// verification; then it changes one byte of a stored block in the NATS
// file store with the server stopped (recomputing NATS's own checksum) and
// checks that the next export fails verification, saying where.
func TestExportAndVerifyEndToEnd(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	s := serveAt(t, dataDir)

	emitBatch(t, s.addr, "C-1", 3)
	emitBatch(t, s.addr, "C-2", 4)
	waitCheckpoint(t, s.addr, 7)
	saved := filepath.Join(dir, "saved.cp")
	code, out, errOut := cli(t, nil, "", "verify", "--server", s.addr, "--key", s.verifierKey, "--save", saved)
	if code != exitOK || !strings.Contains(out, "verified checkpoint: 7 events") {
		t.Fatalf("verify --server --save: exit %d\n%s%s", code, out, errOut)
	}

	emitBatch(t, s.addr, "C-3", 5)
	emitBatch(t, s.addr, "C-1", 2)
	waitCheckpoint(t, s.addr, 14)
	// The server given through the environment, the key through a file.
	keyFile := filepath.Join(dir, "piledger.vkey")
	if err := os.WriteFile(keyFile, []byte(s.verifierKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = cli(t, map[string]string{"PILEDGER_SERVER": s.addr}, "", "verify", "--since", saved, "--save", saved, "--key-file", keyFile)
	if code != exitOK || !strings.Contains(out, "consistent: the log grew from 7 to 14 events") {
		t.Fatalf("verify --since: exit %d\n%s%s", code, out, errOut)
	}
	if cp := readTrim(t, saved); !strings.Contains(cp, "\n14\n") {
		t.Errorf("--save wrote %q, want the checkpoint of size 14", cp)
	}
	// A checkpoint signed by another key is not this log's.
	signer, _ := otherKey(t)
	forged, err := tlog.SignCheckpoint(signer, tlog.DefaultOrigin, 3, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.cp")
	if err := os.WriteFile(foreign, forged, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := cli(t, nil, "", "verify", "--server", s.addr, "--since", foreign); code != exitTampered {
		t.Errorf("verify --since a forged checkpoint: exit %d, want %d\n%s%s", code, exitTampered, out, errOut)
	}

	bundle := filepath.Join(dir, "ledger.bundle")
	if code, out, errOut := cli(t, nil, "", "log", "export", "--server", s.addr, "--out", bundle); code != exitOK || !strings.Contains(errOut, "wrote 14 events") {
		t.Fatalf("log export: exit %d\n%s%s", code, out, errOut)
	}
	// `piledger export --out FILE` (no subject) writes the same bundle.
	bundle2 := filepath.Join(dir, "ledger2.bundle")
	if code, out, errOut := cli(t, nil, "", "export", "--server", s.addr, "--out", bundle2); code != exitOK || !strings.Contains(errOut, "wrote 14 events") {
		t.Fatalf("export --out: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := cli(t, nil, "", "verify", bundle2, "--key", s.verifierKey); code != exitOK {
		t.Fatalf("verify the export --out bundle: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = cli(t, nil, "", "verify", bundle, "--key", s.verifierKey)
	if code != exitOK || !strings.Contains(out, "verified: 14 events in 4 blocks") || !regexp.MustCompile(`OPERATION_STORE +14\n`).MatchString(out) {
		t.Fatalf("verify the export: exit %d\n%s%s", code, out, errOut)
	}
	s.stop()

	// Change one byte of the third block's stored ciphertext on disk, as an
	// operator with disk access could, and recompute NATS's record checksum
	// so that NATS serves the altered block as genuine.
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	// The last 24 bytes of the first envelope of the third block: unique.
	target := thirdBlockTail(t, raw)
	seq, err := ledgertest.RewriteMessage(filepath.Join(dataDir, "nats"), ledger.DefaultStreamName, target, true, func(payload []byte) {
		payload[bytes.Index(payload, target)+3] ^= 0x01
	})
	if err != nil || seq != 3 {
		t.Fatalf("rewrote block %d (%v), want block 3", seq, err)
	}

	s = serveAt(t, dataDir)
	tampered := filepath.Join(dir, "tampered.bundle")
	if code, out, errOut := cli(t, nil, "", "log", "export", "--server", s.addr, "--out", tampered); code != exitOK {
		t.Fatalf("log export after tampering: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = cli(t, nil, "", "verify", tampered, "--key", s.verifierKey)
	// Block 3 holds log indexes 7..11, and a checkpoint covers the first 7
	// events: the finding starts at index 7, in block 3, and names the
	// first checkpoint that does not match.
	where := regexp.MustCompile(`\(log indexes 7\.\.\d+, blocks? 3(\.\.\d+)?, checkpoint \d+\)`)
	if code != exitTampered || !where.MatchString(errOut) {
		t.Errorf("verify the tampered export: exit %d, want %d naming indexes from 7, block 3 and a checkpoint\n%s%s", code, exitTampered, out, errOut)
	}
	t.Logf("verify said: %s", strings.TrimSpace(errOut))
}

// thirdBlockTail returns the last 24 bytes of the first envelope of the
// third block of a bundle.
func thirdBlockTail(t *testing.T, bundle []byte) []byte {
	t.Helper()
	br, err := tlog.NewBundleReader(bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for {
		rec, err := br.Next()
		if err != nil {
			t.Fatalf("no third block: %v", err)
		}
		if b := rec.GetBlock(); b != nil {
			if blocks++; blocks == 3 {
				env := b.GetEnvelopes()[0]
				return env[len(env)-24:]
			}
		}
	}
}
