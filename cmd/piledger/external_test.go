package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestExternalNATSRecipe runs the README's external-NATS recipe: a
// nats-server started from deploy/nats/nats-server.conf (only its store
// directory and port changed for the test), and `piledger serve --nats-url
// --nats-user` with the password from PILEDGER_NATS_PASSWORD. It checks that
// the configuration fsyncs before every acknowledgement, that events go in
// and come back out, and that the ledger's own credentials cannot delete or
// purge the log.
func TestExternalNATSRecipe(t *testing.T) {
	const password = "s3cret-for-the-test"
	t.Setenv("PILEDGER_NATS_PASSWORD", password) // read by the config file's $PILEDGER_NATS_PASSWORD
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "deploy", "nats", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !opts.SyncAlways || !opts.JetStream {
		t.Fatalf("deploy/nats/nats-server.conf: jetstream=%v sync_interval always=%v; want both", opts.JetStream, opts.SyncAlways)
	}
	opts.StoreDir = t.TempDir()
	opts.Port = -1
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := srv.ClientURL()

	// Without the password, serve refuses with a clear message.
	err = run(t.Context(), []string{"serve", "--data", t.TempDir(), "--nats-url", url, "--nats-user", "piledger"},
		mapEnv(nil), strings.NewReader(""), io.Discard, io.Discard)
	if exitCode(err) != exitInvalid || !strings.Contains(err.Error(), "PILEDGER_NATS_PASSWORD") {
		t.Fatalf("serve --nats-user without a password = %v, want a usage error naming PILEDGER_NATS_PASSWORD", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	env := map[string]string{"PILEDGER_LOG_FORMAT": "json", "PILEDGER_NATS_PASSWORD": password}
	// Credentials as the README makes them: an emitter's API key and an
	// admin's token.
	dataDir := filepath.Join(t.TempDir(), "data")
	_, apiKey, _ := cli(t, nil, "", "processors", "add", "city-police", "--data", dataDir)
	_, admin, _ := cli(t, nil, "", "token", "--role", "admin", "--sub", "ops-1", "--data", dataDir)
	go func() {
		done <- run(ctx, []string{"serve", "--data", dataDir, "--grpc-addr", "127.0.0.1:0",
			"--http-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--nats-url", url, "--nats-user", "piledger"}, mapEnv(env), strings.NewReader(""), io.Discard, pw)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	var addr string
	sc := bufio.NewScanner(pr)
	for addr == "" && sc.Scan() {
		var line startupLine
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "piledger serving" {
			addr = line.GRPCAddr
			if !strings.HasPrefix(line.NATS, "external ") || strings.Contains(sc.Text(), password) {
				t.Errorf("startup line %s: want external NATS named, and no password", sc.Bytes())
			}
		}
	}
	if addr == "" {
		t.Fatalf("serve did not start: %v", sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	env = map[string]string{"PILEDGER_SERVER": addr, "PILEDGER_API_KEY": strings.TrimSpace(apiKey)}
	if code, out, errOut := cli(t, env, "", "emit", "--operation", "collect", "--subject", "resident-42", "--processor", "city-police",
		"--category", "face", "--purpose", "public-safety", "--legal-basis", "legal-duty", "--place", "public-street", "--notice-sign", "sign-12"); code != 0 {
		t.Fatalf("emit: exit %d\n%s%s", code, out, errOut)
	}
	env = map[string]string{"PILEDGER_SERVER": addr, "PILEDGER_TOKEN": strings.TrimSpace(admin)}
	code, out, errOut := cli(t, env, "", "replay", "--reason", "recipe check")
	if code != 0 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "resident-42") {
		t.Fatalf("replay: exit %d, want the one event back decrypted\n%s%s", code, out, errOut)
	}

	// The ledger's credentials cannot remove anything from the log.
	// A denied request gets no reply: the server reports the violation
	// asynchronously, so each attempt waits briefly and must fail.
	nc, err := nats.Connect(url, nats.UserInfo("piledger", password), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(t.Context(), "PILEDGER")
	if err != nil {
		t.Fatal(err)
	}
	// Two blocks: the emitted event, and the access event the replay
	// recorded (every read of a person's records is recorded).
	const blocks = 2
	for name, attempt := range map[string]func(context.Context) error{
		"delete stream":  func(ctx context.Context) error { return js.DeleteStream(ctx, "PILEDGER") },
		"purge stream":   func(ctx context.Context) error { return stream.Purge(ctx) },
		"delete message": func(ctx context.Context) error { return stream.DeleteMsg(ctx, 1) },
		"update stream": func(ctx context.Context) error {
			cfg := stream.CachedInfo().Config
			cfg.DenyDelete = false
			_, err := js.UpdateStream(ctx, cfg)
			return err
		},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		if err := attempt(ctx); err == nil {
			t.Errorf("%s with piledger's credentials succeeded; the configuration must deny it", name)
		}
		cancel()
	}
	if info, err := stream.Info(t.Context()); err != nil || info.State.Msgs != blocks {
		t.Fatalf("after the attempts the log holds %v messages (%v), want %d", info.State.Msgs, err, blocks)
	}
}
