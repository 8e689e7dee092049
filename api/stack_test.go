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
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// stack is the whole write path under test: an embedded nats-server, a real
// keyring and ledger with their state in a directory, and an api.Server on
// free loopback ports, with a gRPC client and the gateway's base URL.
type stack struct {
	srv     *api.Server
	client  piledgerv1.LedgerServiceClient
	baseURL string
	logs    *syncBuffer
	stop    func()
}

// startStack starts the stack with its state under dir; the same dir gives
// the same log after a restart. stop (also a cleanup) shuts it down in the
// production order: api, ledger loop, ledger and keyring, NATS.
func startStack(t testing.TB, dir string, cfg api.Config) *stack {
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
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:0"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := api.New(cfg, led, logger)
	if err != nil {
		t.Fatal(err)
	}

	ledgerCtx, stopLedger := context.WithCancel(ctx)
	apiCtx, stopAPI := context.WithCancel(ctx)
	ledgerDone, apiDone := make(chan error, 1), make(chan error, 1)
	go func() { ledgerDone <- led.Run(ledgerCtx) }()
	go func() { apiDone <- srv.Run(apiCtx) }()

	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	s := &stack{
		srv:     srv,
		client:  piledgerv1.NewLedgerServiceClient(conn),
		baseURL: "http://" + srv.HTTPAddr(),
		logs:    logs,
	}
	s.stop = func() {
		once.Do(func() {
			conn.Close()
			stopAPI()
			if err := <-apiDone; err != nil {
				t.Errorf("api.Server.Run: %v", err)
			}
			stopLedger()
			if err := <-ledgerDone; err != nil {
				t.Errorf("ledger.Run: %v", err)
			}
			if err := led.Close(); err != nil {
				t.Errorf("ledger.Close: %v", err)
			}
			if err := keys.Close(); err != nil {
				t.Errorf("keyring.Close: %v", err)
			}
			nc.Close()
			ns.Shutdown()
			// No subject reference (subjectRef, and the values the tests
			// put in bad requests, all start so) in any log line.
			if strings.Contains(logs.String(), "110101199003") {
				t.Errorf("the server log holds a subject reference")
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
