package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/api/client"
	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// stack is a real piledger server: an embedded nats-server, a keyring and
// ledger with their state under a directory, and an api.Server on loopback
// with, as its stackOptions ask, the read models and authentication: API
// keys for emitters, and tokens from the embedded issuer (as `piledger
// processors add` and `piledger token` make them) for subjects, regulators
// and admins.
type stack struct {
	addr    string
	led     *ledger.Ledger
	apiKeys map[string]string // processor → API key; nil without auth
	issuer  *api.TokenIssuer  // nil without auth
	stop    func() error      // idempotent; shuts down in the production order
}

// stackOptions says what a stack serves beyond appends; the zero value is
// the write path alone, without authentication, on a free port.
type stackOptions struct {
	// grpcAddr is where gRPC is served; "" is "127.0.0.1:0", a free port.
	grpcAddr string
	// readModels runs the projector and serves the read models.
	readModels bool
	// auth turns authentication on, with an API key for each of processors
	// and the embedded token issuer.
	auth       bool
	processors []string
}

// startStack starts a stack with its state under dir, as o says. The same
// dir gives the same log after a restart. When it fails, what it started is
// stopped again.
func startStack(dir string, o stackOptions) (_ *stack, err error) {
	ctx := context.Background()
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				_ = undo[i]()
			}
		}
	}()
	ns, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { ns.Shutdown(); return nil })
	nc, err := ns.Connect()
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { nc.Close(); return nil })
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "kek"))
	if err != nil {
		return nil, err
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(dir, "keyring")})
	if err != nil {
		return nil, err
	}
	undo = append(undo, keys.Close)
	led, err := ledger.Open(ctx, js, keys, ledger.Config{IndexDir: filepath.Join(dir, "index")})
	if err != nil {
		return nil, err
	}
	undo = append(undo, led.Close)
	logger := slog.New(slog.DiscardHandler)
	s := &stack{led: led}
	cfg := api.Config{GRPCAddr: o.grpcAddr, HTTPAddr: "127.0.0.1:0"}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	var apiOpts []api.Option
	var store *projections.Store
	if o.readModels {
		store, err = projections.Open(projections.Config{Dir: filepath.Join(dir, "projections"), Logger: logger, MaxConsistencyWait: 5 * time.Second}, led, keys)
		if err != nil {
			return nil, err
		}
		undo = append(undo, store.Close)
		apiOpts = append(apiOpts, api.WithReadModels(store))
	}
	if o.auth {
		if cfg.Auth, err = s.credentials(ctx, filepath.Join(dir, "auth"), kek, keys, o.processors); err != nil {
			return nil, err
		}
	}
	srv, err := api.New(cfg, led, logger, apiOpts...)
	if err != nil {
		return nil, err
	}

	run := func(f func(context.Context) error) (stop func() error) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		return func() error { cancel(); return <-done }
	}
	stopLedger := run(led.Run)
	stopProjector := func() error { return nil }
	if store != nil {
		stopProjector = run(store.Run)
	}
	stopAPI := run(srv.Run)
	var once sync.Once
	var stopErr error
	s.addr = srv.GRPCAddr()
	s.stop = func() error {
		once.Do(func() {
			errs := []error{stopAPI(), stopProjector(), stopLedger()}
			if store != nil {
				errs = append(errs, store.Close())
			}
			errs = append(errs, led.Close(), keys.Close())
			nc.Close()
			ns.Shutdown()
			stopErr = errors.Join(errs...)
		})
		return stopErr
	}
	return s, nil
}

// credentials makes, under authDir, an API key for each of processors (into
// s.apiKeys) and the embedded token issuer (s.issuer), and returns the
// server's AuthConfig accepting them.
func (s *stack) credentials(ctx context.Context, authDir string, kek crypto.KEK, keys *crypto.Keyring, processors []string) (_ *api.AuthConfig, err error) {
	s.apiKeys = map[string]string{}
	for _, p := range processors {
		if s.apiKeys[p], _, err = api.AddAPIKey(authDir, p, time.Now()); err != nil {
			return nil, err
		}
	}
	keyStore, err := api.OpenAPIKeyStore(authDir)
	if err != nil {
		return nil, err
	}
	tokenKey, err := crypto.OpenTokenKey(ctx, kek, authDir)
	if err != nil {
		return nil, err
	}
	if s.issuer, err = api.NewTokenIssuer(tokenKey, api.LocalIssuer, api.DefaultAudience); err != nil {
		return nil, err
	}
	verifier, err := api.NewTokenVerifier(ctx, api.TokenVerifierConfig{Issuer: api.LocalIssuer, Keys: s.issuer.PublicKeyset()})
	if err != nil {
		return nil, err
	}
	return &api.AuthConfig{APIKeys: keyStore, Tokens: []*api.TokenVerifier{verifier}, Pseudonymize: keys.Pseudonym}, nil
}

// newStack starts a stack for one test, as o says, stopped at its end.
func newStack(t testing.TB, dir string, o stackOptions) *stack {
	t.Helper()
	s, err := startStack(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("stack stop: %v", err)
		}
	})
	return s
}

// readOptions are the options of a read stack: read models and
// authentication, with an API key for each of processors.
func readOptions(processors ...string) stackOptions {
	return stackOptions{readModels: true, auth: true, processors: processors}
}

// newReadStack starts a read stack for one test, stopped at its end.
func newReadStack(t testing.TB, processors ...string) *stack {
	t.Helper()
	return newStack(t, t.TempDir(), readOptions(processors...))
}

// dial returns a client of the stack over plaintext with opts (no processor
// unless opts name one), closed at the end of the test.
func (s *stack) dial(t testing.TB, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(s.addr, append([]client.Option{client.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// entries returns the whole log, decrypted.
func (s *stack) entries(t testing.TB) []*piledgerv1.LogEntry {
	t.Helper()
	var out []*piledgerv1.LogEntry
	if err := s.led.Entries(context.Background(), 0, 0, func(e *piledgerv1.LogEntry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// token returns a token of the embedded issuer for role and sub (for a
// subject: their raw subject reference), valid for an hour; the stack must
// have auth.
func (s *stack) token(t testing.TB, role api.Role, sub string) string {
	t.Helper()
	tok, err := s.issuer.Issue(role, sub, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// shared is the server of the examples and of tests that do not count the
// whole log; serverAddr is its gRPC address. reads is the server with read
// models and authentication of the examples that read; readsAddr is its
// gRPC address and clinicKey the API key of its processor "city-clinic".
var (
	shared     *stack
	serverAddr string

	reads     *stack
	readsAddr string
	clinicKey string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) (code int) {
	dir, err := os.MkdirTemp("", "piledger-client-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	shared, err = startStack(dir, stackOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the shared server:", err)
		return 1
	}
	serverAddr = shared.addr
	defer func() {
		if err := shared.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the shared server:", err)
			code = 1
		}
	}()
	reads, err = startStack(filepath.Join(dir, "reads"), readOptions("city-clinic"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the read server:", err)
		return 1
	}
	readsAddr, clinicKey = reads.addr, reads.apiKeys["city-clinic"]
	defer func() {
		if err := reads.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the read server:", err)
			code = 1
		}
	}()
	return m.Run()
}
