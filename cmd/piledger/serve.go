package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/tlog"
	"github.com/piledger/piledger/ledger/transparency"
	"github.com/piledger/piledger/projections"
	"github.com/piledger/piledger/projections/rules"
)

// serveConfig is the effective configuration of `piledger serve`.
type serveConfig struct {
	dataDir   string
	grpcAddr  string
	httpAddr  string
	natsURL   string
	natsCreds string
	natsUser  string
	replicas  int
	// keyCache is how many subjects' unwrapped keys stay in memory.
	keyCache int
	// natsPassword comes from the environment only: flag values show up in
	// process listings and shell history.
	natsPassword string
	logLevel     string
	logFormat    string
	// Tamper evidence (issue 5).
	logOrigin          string
	checkpointInterval time.Duration
	// Authentication, TLS, limits, metrics (issue 6).
	sec securityFlags
	// ruleFiles are the operator's policy files, applied over the default
	// rule pack in order (issue 8).
	ruleFiles []string
}

func newServeCmd(getenv func(string) string) *cobra.Command {
	var cfg serveConfig
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the ledger: gRPC and REST APIs over the log",
		Long: `Run the ledger until SIGINT or SIGTERM.

With no --nats-url, piledger runs its own NATS server (JetStream, fsync before
every acknowledgement) with its store under <data>/nats. The key-encryption key
is <data>/kek; node-local indexes are under <data>/keyring and <data>/index,
and the read models (data maps, timelines, retention, purposes) under
<data>/projections, rebuilt from the log when deleted. The Merkle tree over the
log is under <data>/tree (also rebuilt when deleted); signed checkpoints go to
the PILEDGER_CHECKPOINTS stream, and the key that signs them is printed at
startup (verifier_key): publish it, so that regulators can pin it.

Findings are raised by the default rule pack (PIPL and the public-security
image rules) with the files of --rules applied over it in order: a rule of
the same name replaces one, "disabled: true" removes it, a new name adds one
(docs/RULES.md). The files are checked before anything starts; a broken rule
stops the server with a message naming the file and the rule. The policy's
version is logged at startup (policy). Changing the policy rebuilds the read
models from the log.`,
		Example: `  # a single node on this machine, data in ./data
  piledger serve

  # listen on every interface, JSON logs, data elsewhere
  piledger serve --data /var/lib/piledger --grpc-addr 0.0.0.0:7070 --http-addr 0.0.0.0:8080 --log-format json

  # the default rule pack with the operator's own rules over it
  piledger serve --rules /etc/piledger/acme-rules.yaml

  # against a NATS cluster (password from the environment)
  PILEDGER_NATS_PASSWORD=... piledger serve --nats-url nats://n1:4222,nats://n2:4222 --nats-user piledger --replicas 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), cfg.logLevel, cfg.logFormat)
			if err != nil {
				return usageError(err)
			}
			if cfg.keyCache < 1 {
				return usageError(fmt.Errorf("--key-cache %d: want at least 1", cfg.keyCache))
			}
			cfg.natsPassword = getenv("PILEDGER_NATS_PASSWORD")
			return serve(cmd.Context(), cfg, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.dataDir, "data", "./data", "data directory")
	f.StringVar(&cfg.grpcAddr, "grpc-addr", api.DefaultGRPCAddr, "gRPC listen address (host:port)")
	f.StringVar(&cfg.httpAddr, "http-addr", api.DefaultHTTPAddr, "HTTP (REST, /healthz, /openapi.json) listen address (host:port)")
	f.StringVar(&cfg.natsURL, "nats-url", "", "NATS server URL(s), comma-separated; empty runs an embedded server")
	f.StringVar(&cfg.natsCreds, "nats-creds", "", "NATS credentials file (.creds) for --nats-url")
	f.StringVar(&cfg.natsUser, "nats-user", "", "NATS user name for --nats-url; the password is read from PILEDGER_NATS_PASSWORD")
	f.IntVar(&cfg.replicas, "replicas", 1, "replicas of the log and key streams when piledger creates them (1, or 3 on a cluster)")
	f.IntVar(&cfg.keyCache, "key-cache", crypto.DefaultKeyCacheSize, "subjects whose unwrapped keys stay in memory (about 1.5 KiB each): size it to the subjects active at once")
	f.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&cfg.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&cfg.logOrigin, "log-origin", tlog.DefaultOrigin, "the log's origin: first line of every signed checkpoint and name of the signing key (a name you control, e.g. ledger.example.org/piledger)")
	f.DurationVar(&cfg.checkpointInterval, "checkpoint-interval", transparency.DefaultCheckpointInterval, "longest time between new events and a signed checkpoint covering them")
	f.StringSliceVar(&cfg.ruleFiles, "rules", nil, "policy file applied over the default rule pack (repeatable, or comma-separated; applied in order)")
	secFlags := addSecurityFlags(cmd, &cfg.sec)
	withEnv(cmd, getenv, append([]string{"data", "grpc-addr", "http-addr", "nats-url", "nats-creds", "nats-user", "replicas", "key-cache", "log-level", "log-format", "log-origin", "checkpoint-interval", "rules"}, secFlags...)...)
	return cmd
}

// newLogger returns the process logger, writing to w.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}

// serve wires the ledger together and runs it until ctx is done:
//
//	NATS (embedded or external) → JetStream → KEK → keyring → ledger → api
//
// and shuts down in the reverse order: the api stops accepting and finishes
// in-flight calls, then the ledger drains its pending appends, then the
// ledger index and the keyring close, then NATS.
func serve(ctx context.Context, cfg serveConfig, logger *slog.Logger) (err error) {
	// The policy first: a broken rule stops the server before anything
	// starts.
	policy, err := rules.Load(cfg.ruleFiles...)
	if err != nil {
		return usageError(fmt.Errorf("--rules: %w", err))
	}
	dataDir, err := filepath.Abs(cfg.dataDir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}

	nc, natsDesc, closeNATS, err := openNATS(dataDir, cfg.natsURL, cfg.natsCreds, cfg.natsUser, cfg.natsPassword)
	if err != nil {
		return err
	}
	defer closeNATS()

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	kek, err := crypto.OpenLocalKEK(filepath.Join(dataDir, "kek"))
	if err != nil {
		return err
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(dataDir, "keyring"), Replicas: cfg.replicas, CacheSize: cfg.keyCache})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, keys.Close()) }()
	led, err := ledger.Open(ctx, js, keys, ledger.Config{IndexDir: filepath.Join(dataDir, "index"), Replicas: cfg.replicas})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, led.Close()) }()
	store, err := projections.Open(projections.Config{Dir: filepath.Join(dataDir, "projections"), Policy: policy, Logger: logger}, led, keys)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	tl, err := transparency.Open(ctx, js, led, keys, transparency.Config{
		Dir: filepath.Join(dataDir, "tree"), Origin: cfg.logOrigin, Replicas: cfg.replicas,
		CheckpointInterval: cfg.checkpointInterval, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tl.Close()) }()
	apiCfg := api.Config{GRPCAddr: cfg.grpcAddr, HTTPAddr: cfg.httpAddr}
	credentials, err := cfg.sec.apply(ctx, &apiCfg, dataDir, kek, keys)
	if err != nil {
		return err
	}
	// Erasure receipts are signed with the checkpoints' key and name.
	receiptSigner, err := keys.LogSigner(ctx, tl.Origin())
	if err != nil {
		return err
	}
	srv, err := api.New(apiCfg, led, logger, api.WithReadModels(store), api.WithErasure(led, keys, receiptSigner))
	if err != nil {
		return err
	}
	srv.ServeTransparency(tl)

	logger.InfoContext(ctx, "piledger serving",
		slog.String("grpc_addr", srv.GRPCAddr()),
		slog.String("http_addr", srv.HTTPAddr()),
		slog.String("metrics_addr", srv.MetricsAddr()),
		slog.Bool("tls", apiCfg.TLS != nil),
		slog.String("credentials", credentials),
		slog.String("data", dataDir),
		slog.String("nats", natsDesc),
		slog.Bool("nats_creds", cfg.natsCreds != ""),
		slog.String("log_origin", tl.Origin()),
		slog.String("verifier_key", tl.VerifierKey()),
		slog.String("policy", policy.Version()))

	// The ledger's loop and the projector get their own contexts, canceled
	// only once the api has stopped: appends still in flight during the api's
	// graceful shutdown need the loop to complete, and queries waiting for a
	// log index need the projector. Shutdown order: api, then projector and
	// ledger loop, then (deferred, in reverse order of opening) read models,
	// ledger index, keyring, NATS.
	ledgerCtx, stopLedger := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLedger()
	projCtx, stopProjector := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProjector()
	// The transparency log (Merkle tree follower and checkpointer) stops
	// after the ledger loop has drained, so the last appends reach the tree;
	// the tree is closed (deferred) before the ledger index and the keyring.
	tlCtx, stopTlog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTlog()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer stopLedger()
		defer stopProjector()
		return srv.Run(gctx)
	})
	g.Go(func() error {
		// Run retries while the log is unreachable; it fails only when the
		// log or the read models are corrupt, which stops the server.
		if err := store.Run(projCtx); err != nil {
			return fmt.Errorf("projector: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := tl.Run(tlCtx); err != nil {
			return fmt.Errorf("transparency log: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		defer stopTlog()
		err := led.Run(ledgerCtx)
		switch {
		case ledgerCtx.Err() == nil:
			return errors.Join(errors.New("ledger stopped unexpectedly"), err)
		case err != nil && !errors.Is(err, context.Canceled):
			return fmt.Errorf("ledger: %w", err)
		}
		return nil
	})
	err = g.Wait()
	logger.InfoContext(ctx, "piledger stopped")
	return err
}

// openNATS connects to NATS as serve does: with no url, to an embedded
// server (fsync before every acknowledgement) storing under <dataDir>/nats;
// otherwise to the servers at url, with creds or user and password. It
// returns the connection, a description for logs ("embedded" or "external
// <urls>", without credentials), and a function that closes the connection
// and stops the embedded server.
func openNATS(dataDir, url, creds, user, password string) (nc *nats.Conn, desc string, closeFn func(), err error) {
	if url == "" {
		emb, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(dataDir, "nats")})
		if err != nil {
			return nil, "", nil, err
		}
		if nc, err = emb.Connect(); err != nil {
			emb.Shutdown()
			return nil, "", nil, err
		}
		return nc, "embedded", func() { nc.Close(); emb.Shutdown() }, nil
	}
	opts := []nats.Option{nats.Name("piledger"), nats.MaxReconnects(-1)}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	if user != "" {
		if password == "" {
			return nil, "", nil, usageError(errors.New("--nats-user needs the password in PILEDGER_NATS_PASSWORD"))
		}
		opts = append(opts, nats.UserInfo(user, password))
	}
	if nc, err = nats.Connect(url, opts...); err != nil {
		return nil, "", nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(url), err)
	}
	return nc, "external " + redactURLs(url), nc.Close, nil
}

// redactURLs returns a comma-separated list of NATS URLs without user
// information (user names, passwords, tokens).
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			p = "nats://" + p
		}
		u, err := url.Parse(p)
		if err != nil {
			parts[i] = "<unparsable URL>"
			continue
		}
		u.User = nil
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
