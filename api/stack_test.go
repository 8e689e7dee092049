package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/transparency"
	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// stack is the system under test behind a real api.Server on free loopback
// ports: an embedded nats-server, a real keyring and ledger with their state
// in a directory and, as its stackOptions ask, the read models, the
// transparency log, erasure, authentication and TLS. It carries gRPC
// clients of the server's services and the gateway's base URL.
type stack struct {
	srv        *api.Server
	led        *ledger.Ledger
	keys       *crypto.Keyring
	tlog       *transparency.Log // nil unless transparency
	client     piledgerv1.LedgerServiceClient
	subjects   piledgerv1.SubjectServiceClient // answers only with read models
	holdings   piledgerv1.HoldingServiceClient // answers only with read models
	baseURL    string
	metricsURL string // "" unless cfg.MetricsAddr is set
	logs       *syncBuffer
	stop       func()
}

// stackOptions says what a stack runs beyond the write path; the zero value
// is the write path alone, over plaintext and without authentication.
type stackOptions struct {
	// cfg configures the server; its empty gRPC and HTTP addresses become
	// free loopback ports.
	cfg api.Config
	// readModels runs the projector and serves the read models, with clock
	// now (nil: the projector's default) and MaxConsistencyWait
	// consistencyWait (0: 5s).
	readModels      bool
	now             func() time.Time
	consistencyWait time.Duration
	// transparency runs the transparency log, checkpointing every 20ms, and
	// serves its routes.
	transparency bool
	// erasure serves erasure, with receipts signed by the transparency
	// log's key; it needs transparency.
	erasure bool
	// auth, when not nil, turns authentication on: it gets the open KEK and
	// keyring before the server is made and returns the server's AuthConfig.
	auth func(kek crypto.KEK, keys *crypto.Keyring) *api.AuthConfig
	// tls, when not nil, serves TLS with its server certificate and client
	// CA; the stack's gRPC clients then trust its CA.
	tls *testPKI
	// beforeStop runs at stop while everything still runs; afterStop runs
	// at stop once everything is down. Either may be nil.
	beforeStop, afterStop func()
}

// startStack starts the write path with its state under dir; the same dir
// gives the same log after a restart. stop (also a cleanup) shuts it down
// and fails the test when the server log holds a subject reference.
func startStack(t testing.TB, dir string, cfg api.Config) *stack {
	t.Helper()
	var s *stack
	s = newStack(t, dir, stackOptions{cfg: cfg, afterStop: func() {
		// No subject reference (subjectRef, and the values the tests put
		// in bad requests, all start so) in any log line.
		if strings.Contains(s.logs.String(), "110101199003") {
			t.Errorf("the server log holds a subject reference")
		}
	}})
	return s
}

// newStack starts a stack with its state under dir, as o says. Its stop
// func, idempotent and also a cleanup of t, shuts it down in the production
// order: beforeStop, api, projector, ledger loop, transparency log, stores,
// NATS, afterStop. Any part failing to start fails t at once; any part
// failing to run or close fails t at stop.
func newStack(t testing.TB, dir string, o stackOptions) *stack {
	t.Helper()
	ctx := context.Background()
	ns, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(dir, "keyring")})
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.Open(ctx, js, keys, ledger.Config{IndexDir: filepath.Join(dir, "index")})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{led: led, keys: keys, logs: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var closers []io.Closer // the stores, in the order they close at stop
	var apiOpts []api.Option
	var store *projections.Store
	if o.readModels {
		wait := o.consistencyWait
		if wait == 0 {
			wait = 5 * time.Second
		}
		store, err = projections.Open(projections.Config{
			Dir: filepath.Join(dir, "projections"), Now: o.now, Logger: logger, MaxConsistencyWait: wait,
		}, led, keys)
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, store)
		apiOpts = append(apiOpts, api.WithReadModels(store))
	}
	if o.transparency {
		s.tlog, err = transparency.Open(ctx, js, led, keys, transparency.Config{
			Dir: filepath.Join(dir, "tree"), CheckpointInterval: 20 * time.Millisecond, Logger: logger,
		})
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, s.tlog)
	}
	if o.erasure {
		if s.tlog == nil {
			t.Fatal("erasure needs the transparency log")
		}
		receiptSigner, err := keys.LogSigner(ctx, s.tlog.Origin())
		if err != nil {
			t.Fatal(err)
		}
		apiOpts = append(apiOpts, api.WithErasure(led, keys, receiptSigner))
	}

	closers = append(closers, led, keys)

	cfg := o.cfg
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if o.auth != nil {
		cfg.Auth = o.auth(kek, keys)
	}
	scheme, creds := "http", insecure.NewCredentials()
	if o.tls != nil {
		cfg.TLS = o.tls.serverConfig()
		scheme, creds = "https", credentials.NewTLS(o.tls.clientConfig(nil))
	}
	s.srv, err = api.New(cfg, led, logger, apiOpts...)
	if err != nil {
		t.Fatal(err)
	}
	if s.tlog != nil {
		s.srv.ServeTransparency(s.tlog)
	}
	s.baseURL = scheme + "://" + s.srv.HTTPAddr()
	if addr := s.srv.MetricsAddr(); addr != "" {
		s.metricsURL = "http://" + addr + "/metrics"
	}

	// run runs f until the returned func cancels it and waits for it.
	run := func(f func(context.Context) error, what string) (stop func()) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", what, err)
			}
		}
	}
	stopLedger := run(led.Run, "ledger.Run")
	stopProjector, stopTlog := func() {}, func() {}
	if store != nil {
		stopProjector = run(store.Run, "projections.Run")
	}
	if s.tlog != nil {
		stopTlog = run(s.tlog.Run, "transparency.Run")
	}
	stopAPI := run(s.srv.Run, "api.Server.Run")

	conn, err := grpc.NewClient(s.srv.GRPCAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	s.client = piledgerv1.NewLedgerServiceClient(conn)
	s.subjects = piledgerv1.NewSubjectServiceClient(conn)
	s.holdings = piledgerv1.NewHoldingServiceClient(conn)
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			if o.beforeStop != nil {
				o.beforeStop()
			}
			conn.Close()
			stopAPI()
			stopProjector()
			stopLedger()
			stopTlog()
			for _, c := range closers {
				if err := c.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}
			nc.Close()
			ns.Shutdown()
			if o.afterStop != nil {
				o.afterStop()
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

// entries reads the log from start over gRPC.
func (s *stack) entries(t testing.TB, start, limit uint64) []*piledgerv1.LogEntry {
	t.Helper()
	stream, err := s.client.ListLogEntries(context.Background(), &piledgerv1.ListLogEntriesRequest{Start: start, Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	return recvEntries(t, stream)
}

// recvEntries returns every entry of a ListLogEntries stream, to its end; a
// stream error fails t.
func recvEntries(t testing.TB, stream grpc.ServerStreamingClient[piledgerv1.LogEntry]) []*piledgerv1.LogEntry {
	t.Helper()
	var out []*piledgerv1.LogEntry
	for {
		e, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("ListLogEntries: %v", err)
		}
		out = append(out, e)
	}
}

// httpEntries reads the log from the gateway's NDJSON stream.
func (s *stack) httpEntries(t testing.TB, query string) []*piledgerv1.LogEntry {
	t.Helper()
	resp, err := http.Get(s.baseURL + "/v1/log/entries?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /v1/log/entries?%s: %s %s", query, resp.Status, b)
	}
	var out []*piledgerv1.LogEntry
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var line struct {
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("NDJSON line %q: %v", sc.Bytes(), err)
		}
		if line.Error != nil {
			t.Fatalf("stream error: %s", line.Error)
		}
		e := new(piledgerv1.LogEntry)
		if err := protojson.Unmarshal(line.Result, e); err != nil {
			t.Fatalf("LogEntry %s: %v", line.Result, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// post sends body to the gateway's append route.
func (s *stack) post(t testing.TB, body io.Reader) (int, []byte) {
	t.Helper()
	resp, err := http.Post(s.baseURL+"/v1/events:append", "application/json", body)
	if err != nil {
		t.Fatalf("POST /v1/events:append: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// collectFace is a camera collecting a face in a public place: a valid event
// whose subject reference is ref.
func collectFace(ref string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId:        uuid.Must(uuid.NewV7()).String(),
		SubjectRef:     ref,
		Operation:      piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt:     timestamppb.New(time.Now().Add(-time.Hour).Truncate(time.Millisecond)),
		Processor:      "city-police",
		System:         "gate-cam-7",
		DataCategories: []string{"face"},
		Purpose:        "public-safety",
		LegalBasis:     "legal-duty",
		Retention:      &piledgerv1.Retention{Minimum: durationpb.New(30 * 24 * time.Hour), KeepFor: durationpb.New(90 * 24 * time.Hour)},
		Place:          &piledgerv1.Place{Kind: "public-street", NoticeSignRef: "sign-12"},
		Attributes:     map[string]string{"note": "north entrance"},
	}
}

// transferAbroad is a transfer of a subject's name to a recipient abroad.
func transferAbroad(ref string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId:        uuid.Must(uuid.NewV7()).String(),
		SubjectRef:     ref,
		Operation:      piledgerv1.Operation_OPERATION_TRANSFER_ABROAD,
		OccurredAt:     timestamppb.New(time.Now().Add(-time.Minute).Truncate(time.Millisecond)),
		Processor:      "shop-42",
		DataCategories: []string{"name"},
		Purpose:        "contract-performance",
		LegalBasis:     "contract-or-hr",
		Consent:        &piledgerv1.Consent{Separate: true, Reference: "consent-77"},
		Recipient:      &piledgerv1.Recipient{Processor: "logistics-hk", Country: "HK"},
	}
}

// subjectRef returns a distinct subject reference shaped like an ID card
// number, easy to search for in logs and error bodies.
func subjectRef(i int) string { return fmt.Sprintf("11010119900307%04d", i) }
