package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// startServe runs `piledger serve --insecure-no-auth` on free loopback
// ports with its data in a temp dir and returns its gRPC address and its log
// output. The server stops at the end of the test. Tests of authentication
// use startServeAuth.
func startServe(t *testing.T) (addr string, logs *syncBuffer) {
	t.Helper()
	addr, _, logs = startServeWith(t, "--insecure-no-auth")
	return addr, logs
}

// startServeAuth runs `piledger serve` with authentication on (the default)
// on dataDir, and returns its gRPC address and its log output. Credentials
// made with `piledger processors add --data dataDir` before the call are
// valid at once; later ones within a second.
func startServeAuth(t *testing.T, dataDir string, args ...string) (addr string, logs *syncBuffer) {
	t.Helper()
	addr, _, logs = startServeOn(t, dataDir, args...)
	return addr, logs
}

func startServeWith(t *testing.T, args ...string) (addr, dataDir string, logs *syncBuffer) {
	t.Helper()
	return startServeOn(t, filepath.Join(t.TempDir(), "data"), args...)
}

func startServeOn(t *testing.T, dataDir string, args ...string) (addr, _ string, logs *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	env := map[string]string{"PILEDGER_LOG_FORMAT": "json", "PILEDGER_HTTP_ADDR": "127.0.0.1:0", "PILEDGER_METRICS_ADDR": "127.0.0.1:0"}
	go func() {
		done <- run(ctx, append([]string{"serve", "--data", dataDir, "--grpc-addr", "127.0.0.1:0"}, args...),
			mapEnv(env), strings.NewReader(""), io.Discard, pw)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	// Read the log until the startup line says where the server listens.
	logs = &syncBuffer{}
	sc := bufio.NewScanner(pr)
	for addr == "" && sc.Scan() {
		logs.Write(append(sc.Bytes(), '\n'))
		var line startupLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Bytes(), err)
		}
		if line.Msg == "piledger serving" {
			addr = line.GRPCAddr
			if line.HTTPAddr == "" || line.HTTPAddr == "127.0.0.1:0" || line.NATS != "embedded" || !filepath.IsAbs(line.Data) {
				t.Errorf("startup line %s lacks the HTTP address, data directory or NATS mode", sc.Bytes())
			}
		}
	}
	if addr == "" {
		t.Fatalf("serve ended before listening: %v\n%s", sc.Err(), logs)
	}
	go func() { _, _ = io.Copy(logs, pr) }()
	return addr, dataDir, logs
}

// startupLine holds the fields of serve's JSON log lines the test reads.
type startupLine struct {
	Msg      string `json:"msg"`
	GRPCAddr string `json:"grpc_addr"`
	HTTPAddr string `json:"http_addr"`
	Data     string `json:"data"`
	NATS     string `json:"nats"`
}

// cli runs one client command and returns its exit code and output.
func cli(t *testing.T, env map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, mapEnv(env), strings.NewReader(stdin), &out, &errOut)
	if err != nil {
		errOut.WriteString("piledger: " + err.Error() + "\n")
	}
	return exitCode(err), out.String(), errOut.String()
}

func mapEnv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

func TestEmitAndReplay(t *testing.T) {
	addr, logs := startServe(t)
	env := map[string]string{"PILEDGER_SERVER": addr}

	// One event from flags, the server address from the environment.
	code, out, errOut := cli(t, env, "", "emit", "--operation", "collect", "--subject", "C-104211",
		"--processor", "acme-gates", "--system", "gate-3", "--category", "face", "--purpose", "access-control",
		"--place", "public-street", "--keep-for", "720h", "--attr", "lane=2", "--output", "json")
	if code != 0 {
		t.Fatalf("emit from flags: exit %d\n%s", code, errOut)
	}
	var resp piledgerv1.AppendEventsResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil || len(resp.GetReceipts()) != 1 {
		t.Fatalf("emit --output json printed %q (%v), want one receipt", out, err)
	}

	// Two events from an NDJSON file, as a table.
	file := filepath.Join(t.TempDir(), "events.ndjson")
	ndjson := `{"eventId": "019ab7c2-0000-7000-8000-000000000001", "subjectRef": "C-104212", "operation": "OPERATION_STORE", "occurredAt": "2026-11-01T08:00:00Z", "processor": "acme-gates", "dataCategories": ["face"]}
{"eventId": "019ab7c2-0000-7000-8000-000000000002", "subjectRef": "C-104212", "operation": "OPERATION_DESTROY", "occurredAt": "2026-11-02T08:00:00Z", "processor": "acme-gates", "dataCategories": ["face"]}
`
	if err := os.WriteFile(file, []byte(ndjson), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = cli(t, nil, "", "emit", "--server", addr, "--file", file)
	if code != 0 || !strings.Contains(out, "019ab7c2-0000-7000-8000-000000000002") || !strings.Contains(out, "EVENT ID") {
		t.Fatalf("emit --file: exit %d\n%s%s", code, out, errOut)
	}

	// A JSON array on stdin.
	array := `[{"eventId": "019ab7c2-0000-7000-8000-000000000003", "subjectRef": "C-104213", "operation": "OPERATION_ACCESS",
	  "occurredAt": "2026-11-03T08:00:00Z", "processor": "city-police", "dataCategories": ["video-footage"],
	  "access": {"actor": "officer-7", "reason": "case 2026-118", "kind": "ACCESS_KIND_RETRIEVE"}}]`
	if code, out, errOut = cli(t, env, array, "emit", "-f", "-"); code != 0 {
		t.Fatalf("emit -f -: exit %d\n%s%s", code, out, errOut)
	}

	// A retry of a recorded event is a duplicate, not a new entry.
	if code, out, errOut = cli(t, env, array, "emit", "-f", "-", "-o", "json"); code != 0 || !strings.Contains(out, `"duplicate":`) {
		t.Fatalf("emit retry: exit %d\n%s%s", code, out, errOut)
	}

	// Replay: NDJSON by default, then a table.
	code, out, errOut = cli(t, env, "", "replay")
	if code != 0 {
		t.Fatalf("replay: exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("replay printed %d lines, want 4:\n%s", len(lines), out)
	}
	var last piledgerv1.LogEntry
	if err := protojson.Unmarshal([]byte(lines[3]), &last); err != nil || last.GetEvent().GetAccess().GetReason() != "case 2026-118" || last.GetIndex() != 3 {
		t.Errorf("last replayed entry = %v (%v), want the decrypted access event at index 3", &last, err)
	}
	code, out, errOut = cli(t, env, "", "replay", "--start", "1", "--limit", "2", "--output", "table")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, "OPERATION_DESTROY") || strings.Contains(out, "C-1042") {
		t.Errorf("replay table: exit %d\n%s%s", code, out, errOut)
	}

	if strings.Contains(logs.String(), "C-1042") || strings.Contains(logs.String(), "officer-7") {
		t.Errorf("server logs hold personal data:\n%s", logs)
	}
}

func TestEmitErrors(t *testing.T) {
	addr, _ := startServe(t)
	env := map[string]string{"PILEDGER_SERVER": addr}

	// Rejected events: every violation on its own line, exit 2.
	code, _, errOut := cli(t, env, "", "emit", "--operation", "transfer-abroad", "--subject", "C-1",
		"--processor", "shop-42", "--category", "name", "--purpose", "marketing", "--recipient", "hk-partner",
		"--occurred-at", "1990-01-01T00:00:00Z")
	if code != exitInvalid || !strings.Contains(errOut, "\nevents[0].recipient.country: ") && !strings.HasPrefix(errOut, "events[0].recipient.country: ") ||
		!strings.Contains(errOut, "events[0].occurredAt: ") {
		t.Errorf("invalid event: exit %d, stderr:\n%s", code, errOut)
	}

	// Nothing listens: exit 1 with advice.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	code, _, errOut = cli(t, nil, "", "emit", "--server", closed, "--operation", "collect")
	if code != exitFailure || !strings.Contains(errOut, "cannot reach piledger at "+closed+": is `piledger serve` running?") {
		t.Errorf("unreachable server: exit %d, stderr:\n%s", code, errOut)
	}

	for _, test := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"nothing to emit", "", []string{"emit"}},
		{"unknown operation", "", []string{"emit", "--operation", "steal"}},
		{"file and flags", "", []string{"emit", "-f", "-", "--operation", "collect"}},
		{"unknown field in file", `{"evntId": "x"}`, []string{"emit", "-f", "-"}},
		{"empty file", "\n", []string{"emit", "-f", "-"}},
		{"bad output", "", []string{"replay", "--output", "yaml"}},
		{"unknown flag", "", []string{"emit", "--nope"}},
		{"bad env value", "", []string{"serve", "--log-level", "loud"}},
		{"no key cache", "", []string{"serve", "--key-cache", "0"}},
	} {
		t.Run(test.name, func(t *testing.T) {
			if code, _, errOut := cli(t, env, test.stdin, test.args...); code != exitInvalid {
				t.Errorf("%v: exit %d, want %d; stderr:\n%s", test.args, code, exitInvalid, errOut)
			}
		})
	}
}

func TestEnvPrecedence(t *testing.T) {
	cmd := newEmitCmd(mapEnv(map[string]string{"PILEDGER_SERVER": "from-env:1", "PILEDGER_OUTPUT": "json"}))
	if err := cmd.ParseFlags([]string{"--server", "from-flag:2"}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.PreRunE(cmd, nil); err != nil {
		t.Fatal(err)
	}
	server, _ := cmd.Flags().GetString("server")
	output, _ := cmd.Flags().GetString("output")
	if server != "from-flag:2" || output != "json" {
		t.Errorf("server %q, output %q; want the flag over the environment, and the environment over the default", server, output)
	}
	if usage := cmd.Flags().Lookup("server").Usage; !strings.Contains(usage, "$PILEDGER_SERVER") {
		t.Errorf("--server help %q does not name its variable", usage)
	}
}

func TestRedactURLs(t *testing.T) {
	got := redactURLs("nats://alice:s3cret@n1:4222, tls://tok3n@n2:4222,n3:4222")
	if want := "nats://n1:4222,tls://n2:4222,nats://n3:4222"; got != want {
		t.Errorf("redactURLs = %q, want %q", got, want)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
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
