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
	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// stack is a real piledger server: an embedded nats-server, a keyring and
// ledger with their state under a directory, and an api.Server on loopback.
type stack struct {
	addr string
	led  *ledger.Ledger
	stop func() error // idempotent; shuts down in the production order
}

// startStack starts a stack with its state under dir, serving gRPC on
// grpcAddr ("127.0.0.1:0" for a free port). The same dir gives the same log
// after a restart.
func startStack(dir, grpcAddr string) (_ *stack, err error) {
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
	srv, err := api.New(api.Config{GRPCAddr: grpcAddr, HTTPAddr: "127.0.0.1:0"}, led, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}

	ledgerCtx, stopLedger := context.WithCancel(ctx)
	apiCtx, stopAPI := context.WithCancel(ctx)
	ledgerDone, apiDone := make(chan error, 1), make(chan error, 1)
	go func() { ledgerDone <- led.Run(ledgerCtx) }()
	go func() { apiDone <- srv.Run(apiCtx) }()
	var once sync.Once
	var stopErr error
	return &stack{
		addr: srv.GRPCAddr(),
		led:  led,
		stop: func() error {
			once.Do(func() {
				stopAPI()
				errs := []error{<-apiDone}
				stopLedger()
				errs = append(errs, <-ledgerDone, led.Close(), keys.Close())
				nc.Close()
				ns.Shutdown()
				stopErr = errors.Join(errs...)
			})
			return stopErr
		},
	}, nil
}

// newStack starts a stack for one test, stopped at its end.
func newStack(t testing.TB, dir, grpcAddr string) *stack {
	t.Helper()
	s, err := startStack(dir, grpcAddr)
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

// readStack is a real piledger server with read models and authentication:
// API keys for emitters, and tokens from the embedded issuer (as `piledger
// processors add` and `piledger token` make them) for subjects, regulators
// and admins.
type readStack struct {
	addr    string
	apiKeys map[string]string // processor → API key
	issuer  *api.TokenIssuer
	stop    func() error // idempotent
}

// startReadStack starts a read stack with its state under dir and an API key
// for each processor.
func startReadStack(dir string, processors ...string) (_ *readStack, err error) {
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
	store, err := projections.Open(projections.Config{Dir: filepath.Join(dir, "projections"), Logger: logger, MaxConsistencyWait: 5 * time.Second}, led, keys)
	if err != nil {
		return nil, err
	}
	undo = append(undo, store.Close)

	authDir := filepath.Join(dir, "auth")
	s := &readStack{apiKeys: map[string]string{}}
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
	srv, err := api.New(api.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Auth: &api.AuthConfig{APIKeys: keyStore, Tokens: []*api.TokenVerifier{verifier}, Pseudonymize: keys.Pseudonym},
	}, led, logger, api.WithReadModels(store))
	if err != nil {
		return nil, err
	}

	run := func(f func(context.Context) error) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		return cancel, done
	}
	stopLedger, ledgerDone := run(led.Run)
	stopProjector, projectorDone := run(store.Run)
	stopAPI, apiDone := run(srv.Run)
	var once sync.Once
	var stopErr error
	s.addr = srv.GRPCAddr()
	s.stop = func() error {
		once.Do(func() {
			stopAPI()
			errs := []error{<-apiDone}
			stopProjector()
			errs = append(errs, <-projectorDone)
			stopLedger()
			errs = append(errs, <-ledgerDone, store.Close(), led.Close(), keys.Close())
			nc.Close()
			ns.Shutdown()
			stopErr = errors.Join(errs...)
		})
		return stopErr
	}
	return s, nil
}

// newReadStack starts a read stack for one test, stopped at its end.
func newReadStack(t testing.TB, processors ...string) *readStack {
	t.Helper()
	s, err := startReadStack(t.TempDir(), processors...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("read stack stop: %v", err)
		}
	})
	return s
}

// token returns a token of the embedded issuer for role and sub (for a
// subject: their raw subject reference), valid for an hour.
func (s *readStack) token(t testing.TB, role api.Role, sub string) string {
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

	reads     *readStack
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
	shared, err = startStack(dir, "127.0.0.1:0")
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
	reads, err = startReadStack(filepath.Join(dir, "reads"), "city-clinic")
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
