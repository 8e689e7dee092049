package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestKeysRotate runs the real commands: serve, emit for subjects A and B, a
// backup of the data directory, erase A, keys rotate (server stopped), serve
// again. After the rotation every event of B still decrypts and A's are
// shredded; the old KEK is gone from disk; the backup, even with the current
// KEK files, decrypts nothing (every key in it is under the destroyed
// epoch), while the same backup with its own KEK files still decrypts A (the
// control). Then: a second rotation as JSON, --prepare, refusal while the
// server runs, and a data directory with no KEK.
func TestKeysRotate(t *testing.T) {
	root := t.TempDir()
	dataDir := filepath.Join(root, "data")
	s := serveAt(t, dataDir)
	emitBatch(t, s.addr, "C-rot-A", 2)
	emitBatch(t, s.addr, "C-rot-B", 3)
	s.stop()
	// The token issuer's key lives in <data>/auth, wrapped under the KEK.
	code, jwks, errOut := cli(t, nil, "", "token", "--data", dataDir, "--jwks")
	if code != exitOK {
		t.Fatalf("token --jwks: exit %d\n%s", code, errOut)
	}
	kek1, err := os.ReadFile(filepath.Join(dataDir, "kek", "kek-1.json"))
	if err != nil {
		t.Fatal(err)
	}

	backup := filepath.Join(root, "backup")
	copyDir(t, dataDir, backup)

	s = serveAt(t, dataDir)
	if code, out, errOut := cli(t, map[string]string{"PILEDGER_SERVER": s.addr}, "", "erase", "C-rot-A", "--yes"); code != exitOK {
		t.Fatalf("erase: exit %d\n%s%s", code, out, errOut)
	}
	// While the server runs, the embedded mode refuses (and starts no
	// second NATS server on the store).
	if code, out, errOut := cli(t, nil, "", "keys", "rotate", "--data", dataDir); code == exitOK || !strings.Contains(errOut, "in use") {
		t.Errorf("keys rotate while serving: exit %d\n%s%s", code, out, errOut)
	}
	s.stop()

	code, out, errOut := cli(t, nil, "", "keys", "rotate", "--data", dataDir)
	if code != exitOK {
		t.Fatalf("keys rotate: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"KEK epoch", "2 (new)", "re-wrapped", "erased subjects", "1 (keys destroyed", "overwritten", "token key", "re-wrapped", "retired epochs", "[1]"} {
		if !strings.Contains(out, want) {
			t.Errorf("keys rotate output lacks %q:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dataDir, "kek")); len(entries) != 1 || entries[0].Name() != "kek-2.json" {
		t.Errorf("KEK directory after the rotation: %v, want only kek-2.json", entries)
	}
	if where := grepDir(t, dataDir, kek1); where != "" {
		t.Errorf("the epoch-1 KEK is still in %s", where)
	}

	// The live ledger after the rotation: B's events decrypt, A's are
	// shredded; the token issuer's key is the same.
	s = serveAt(t, dataDir)
	readable, shredded := replayCounts(t, s.addr)
	if readable["C-rot-B"] != 3 || readable["C-rot-A"] != 0 || shredded != 2 {
		t.Errorf("after the rotation: readable %v, %d shredded; want 3 of B, none of A, 2 shredded", readable, shredded)
	}
	s.stop()
	if code, got, errOut := cli(t, nil, "", "token", "--data", dataDir, "--jwks"); code != exitOK || got != jwks {
		t.Errorf("token --jwks after the rotation: exit %d, same keys %v\n%s", code, got == jwks, errOut)
	}

	// The backup with the current KEK files (an attacker who stole the
	// backup and, later, the live KEK directory) decrypts nothing.
	stolen := filepath.Join(root, "stolen")
	copyDir(t, backup, stolen)
	if err := os.RemoveAll(filepath.Join(stolen, "kek")); err != nil {
		t.Fatal(err)
	}
	copyDir(t, filepath.Join(dataDir, "kek"), filepath.Join(stolen, "kek"))
	checkBackupUseless(t, stolen)

	// Control: the backup with its own KEK (epoch 1 alive) decrypts A.
	s = serveAt(t, backup)
	readable, _ = replayCounts(t, s.addr)
	if readable["C-rot-A"] != 2 || readable["C-rot-B"] != 3 {
		t.Errorf("control: the backup with its own KEK reads %v, want 2 of A and 3 of B", readable)
	}
	s.stop()

	// A second rotation, as JSON: epoch 3, epoch 2 retired, nothing of A.
	code, out, errOut = cli(t, nil, "", "keys", "rotate", "--data", dataDir, "-o", "json")
	var rep struct {
		Epoch            uint32   `json:"epoch"`
		NewEpoch         bool     `json:"new_epoch"`
		Live             int      `json:"live_keys"`
		Rewrapped        int      `json:"rewrapped"`
		SkippedDestroyed int      `json:"skipped_destroyed"`
		Overwritten      int      `json:"overwritten"`
		Retired          []uint32 `json:"retired_epochs"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("keys rotate -o json: exit %d\n%s%s", code, out, errOut)
	}
	if rep.Epoch != 3 || !rep.NewEpoch || rep.Rewrapped != rep.Live || rep.Live < 4 || rep.SkippedDestroyed != 1 ||
		rep.Overwritten != rep.Live || !slices.Equal(rep.Retired, []uint32{2}) {
		t.Errorf("second rotation: %+v", rep)
	}

	// --prepare creates the next epoch only; rotate then finishes that one.
	code, out, errOut = cli(t, nil, "", "keys", "rotate", "--prepare", "--data", dataDir)
	if code != exitOK || !strings.Contains(out, "created KEK epoch 4") {
		t.Fatalf("keys rotate --prepare: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = cli(t, nil, "", "keys", "rotate", "--data", dataDir, "-o", "json")
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Epoch != 4 || rep.NewEpoch || !slices.Equal(rep.Retired, []uint32{3}) {
		t.Errorf("keys rotate after --prepare: exit %d, %+v\n%s", code, rep, errOut)
	}
	s = serveAt(t, dataDir)
	if readable, shredded := replayCounts(t, s.addr); readable["C-rot-B"] != 3 || shredded != 2 {
		t.Errorf("after three rotations: readable %v, %d shredded", readable, shredded)
	}
	s.stop()

	// Not a data directory: refused, nothing created.
	empty := filepath.Join(root, "empty")
	if code, out, errOut := cli(t, nil, "", "keys", "rotate", "--data", empty); code != exitInvalid || !strings.Contains(errOut, "KEK") {
		t.Errorf("keys rotate on an empty directory: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(empty); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("keys rotate on a missing directory created it: %v", err)
	}
}

// checkBackupUseless opens the backup's NATS store with the KEK directory
// in it and shows that no wrapped key there unwraps: the keyring does not
// open, and every wrapped key is under an epoch the KEK has destroyed.
func checkBackupUseless(t *testing.T, dir string) {
	t.Helper()
	ctx := t.Context()
	emb, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	nc, err := emb.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	if kr, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(dir, "keyring")}); !errors.Is(err, crypto.ErrKEKDestroyed) {
		t.Errorf("OpenKeyring on the backup with the current KEK: %v, want ErrKEKDestroyed", err)
		if err == nil {
			kr.Close()
		}
	}
	s, err := js.Stream(ctx, crypto.DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	keys := 0
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(msg.Subject, ".erased") {
			continue
		}
		var wk piledgerv1.WrappedKey
		if err := proto.Unmarshal(msg.Data, &wk); err != nil {
			t.Fatalf("backup key-stream sequence %d: %v", seq, err)
		}
		keys++
		// Subjects A and B alike: the backup was taken under epoch 1.
		if _, err := kek.AEAD(ctx, wk.GetKekEpoch()); !errors.Is(err, crypto.ErrKEKDestroyed) {
			t.Errorf("backup key-stream sequence %d is under epoch %d, whose KEK is available (%v)", seq, wk.GetKekEpoch(), err)
		}
	}
	if keys < 4 { // PRF, signing key, ledger key, A, B
		t.Errorf("the backup holds %d wrapped keys: the scan sees nothing?", keys)
	}
}

// replayCounts replays the log and returns the number of readable events
// per subject reference and the number of shredded entries.
func replayCounts(t *testing.T, addr string) (readable map[string]int, shredded int) {
	t.Helper()
	code, out, errOut := cli(t, nil, "", "replay", "--server", addr)
	if code != exitOK {
		t.Fatalf("replay: exit %d\n%s", code, errOut)
	}
	readable = map[string]int{}
	for line := range strings.Lines(out) {
		var e piledgerv1.LogEntry
		if err := protojson.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("replay line %q: %v", line, err)
		}
		switch {
		case e.GetShredded():
			shredded++
		case e.GetEvent() != nil:
			readable[e.GetEvent().GetSubjectRef()]++
		}
	}
	return readable, shredded
}

// copyDir copies the directory tree src to dst as cp -a does for what
// matters here: contents and private modes.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(to, info.Mode().Perm())
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// grepDir returns the first file under dir that contains b.
func grepDir(t *testing.T, dir string, b []byte) string {
	t.Helper()
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
	return found
}

// TestKeysRotateCluster follows docs/KEK-ROTATION.md for two nodes sharing
// an external NATS server: --prepare on one node, the new KEK file copied to
// the other, both restarted, then rotate against NATS while both serve (each
// node's key index follows the re-wraps), and rotate on the second node,
// which only destroys its own copy of the old KEK. Both nodes read every
// event throughout and after restarting.
func TestKeysRotateCluster(t *testing.T) {
	srv, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1, SyncAlways: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := srv.ClientURL()
	root := t.TempDir()
	d1, d2 := filepath.Join(root, "node1"), filepath.Join(root, "node2")

	n1 := serveExternal(t, d1, url)
	copyDir(t, filepath.Join(d1, "kek"), filepath.Join(d2, "kek")) // every node has the same KEK
	n2 := serveExternal(t, d2, url)
	emitBatch(t, n1.addr, "C-clu-A", 2)
	emitBatch(t, n2.addr, "C-clu-B", 2)
	if code, out, errOut := cli(t, map[string]string{"PILEDGER_SERVER": n1.addr}, "", "erase", "C-clu-A", "--yes"); code != exitOK {
		t.Fatalf("erase: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut := cli(t, nil, "", "keys", "rotate", "--prepare", "--data", d1)
	if code != exitOK || !strings.Contains(out, "created KEK epoch 2") {
		t.Fatalf("keys rotate --prepare: exit %d\n%s%s", code, out, errOut)
	}
	copyDir(t, filepath.Join(d1, "kek"), filepath.Join(d2, "kek"))
	n1.stop()
	n2.stop()
	n1, n2 = serveExternal(t, d1, url), serveExternal(t, d2, url)

	code, out, errOut = cli(t, nil, "", "keys", "rotate", "--data", d1, "--nats-url", url, "-o", "json")
	var rep struct {
		Epoch            uint32   `json:"epoch"`
		NewEpoch         bool     `json:"new_epoch"`
		Live             int      `json:"live_keys"`
		Rewrapped        int      `json:"rewrapped"`
		SkippedDestroyed int      `json:"skipped_destroyed"`
		Retired          []uint32 `json:"retired_epochs"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("keys rotate --nats-url while serving: exit %d\n%s%s", code, out, errOut)
	}
	if rep.Epoch != 2 || rep.NewEpoch || rep.Rewrapped != rep.Live || rep.SkippedDestroyed != 1 || !slices.Equal(rep.Retired, []uint32{1}) {
		t.Errorf("rotation from node 1: %+v", rep)
	}
	for _, n := range []*served{n1, n2} {
		if readable, shredded := replayCounts(t, n.addr); readable["C-clu-B"] != 2 || shredded != 2 {
			t.Errorf("a serving node after the rotation reads %v, %d shredded; want 2 of B, 2 shredded", readable, shredded)
		}
	}
	emitBatch(t, n2.addr, "C-clu-C", 1) // a new subject's key, wrapped under epoch 2

	// Node 2 has nothing left to re-wrap; it destroys its own old KEK.
	code, out, errOut = cli(t, nil, "", "keys", "rotate", "--data", d2, "--nats-url", url, "-o", "json")
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Rewrapped != 0 || !slices.Equal(rep.Retired, []uint32{1}) {
		t.Errorf("rotation on node 2: exit %d, %+v\n%s", code, rep, errOut)
	}
	n1.stop()
	n2.stop()
	for _, d := range []string{d1, d2} {
		if entries, _ := os.ReadDir(filepath.Join(d, "kek")); len(entries) != 1 || entries[0].Name() != "kek-2.json" {
			t.Errorf("%s/kek holds %v, want only kek-2.json", d, entries)
		}
		n := serveExternal(t, d, url)
		if readable, shredded := replayCounts(t, n.addr); readable["C-clu-B"] != 2 || readable["C-clu-C"] != 1 || shredded != 2 {
			t.Errorf("node %s restarted reads %v, %d shredded", filepath.Base(d), readable, shredded)
		}
		n.stop()
	}
}

// serveExternal runs `piledger serve --insecure-no-auth` on dataDir against
// the NATS server at url.
func serveExternal(t *testing.T, dataDir, url string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	env := map[string]string{"PILEDGER_LOG_FORMAT": "json", "PILEDGER_HTTP_ADDR": "127.0.0.1:0", "PILEDGER_METRICS_ADDR": "127.0.0.1:0"}
	go func() {
		done <- run(ctx, []string{"serve", "--data", dataDir, "--grpc-addr", "127.0.0.1:0", "--insecure-no-auth", "--nats-url", url},
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
	for s.addr == "" && sc.Scan() {
		var line startupLine
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "piledger serving" {
			s.addr = line.GRPCAddr
		}
	}
	if s.addr == "" {
		t.Fatalf("serve ended before listening: %v", sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return s
}
