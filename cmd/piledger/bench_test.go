package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"google.golang.org/protobuf/encoding/protojson"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// benchJSON runs bench with --output json and decodes its report.
func benchJSON(t *testing.T, env map[string]string, args ...string) benchReport {
	t.Helper()
	code, out, errOut := cli(t, env, "", append([]string{"bench", "--output", "json"}, args...)...)
	if code != exitOK {
		t.Fatalf("bench %v: exit %d\n%s%s", args, code, out, errOut)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bench --output json printed %q: %v", out, err)
	}
	return rep
}

// TestBenchEmbedded runs bench against its own in-process stack at a tiny
// size and checks its counting: every event it reports is in the log, once,
// and the raw baselines published the same number of messages.
func TestBenchEmbedded(t *testing.T) {
	// $PILEDGER_SERVER must not turn bench against a real ledger.
	env := map[string]string{"PILEDGER_SERVER": "127.0.0.1:1"}
	rep := benchJSON(t, env, "--count", "60", "--writers", "4", "--batch", "3", "--subjects", "10")
	p := rep.Piledger
	if rep.Target != "embedded" || p.Events != 60 || p.Calls != 20 || p.FailedCalls != 0 || p.Duplicates != 0 {
		t.Errorf("report %+v: want 60 events in 20 calls of 3, none failed, against the embedded stack", p)
	}
	if p.LogEvents == nil || *p.LogEvents != p.Events {
		t.Errorf("log check: logEvents %v, want %d", p.LogEvents, p.Events)
	}
	if p.EventsPerSec <= 0 || p.CallLatencyMs.P50 <= 0 || p.CallLatencyMs.Max < p.CallLatencyMs.P99 || p.EnvelopeBytes < 100 {
		t.Errorf("report %+v: want a rate, latencies and the envelope size", p)
	}
	if len(rep.Baselines) != 2 {
		t.Fatalf("baselines %+v: want fsync and default sync", rep.Baselines)
	}
	for _, b := range rep.Baselines {
		if b.Events != 60 || b.Failed != 0 || b.PayloadBytes != p.EnvelopeBytes || b.Ratio <= 0 {
			t.Errorf("baseline %+v: want 60 messages of %d bytes and a ratio", b, p.EnvelopeBytes)
		}
	}

	// Table output, by duration.
	code, out, errOut := cli(t, nil, "", "bench", "--duration", "300ms", "--writers", "2", "--subjects", "100")
	if code != exitOK || !strings.Contains(out, "as acknowledged") || !strings.Contains(out, "piledger ÷ raw-jetstream-fsync = ") ||
		!strings.Contains(out, "piledger (durable, gRPC)") || errOut != "" {
		t.Errorf("bench --duration: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBenchRemote runs bench against a running server, at a fixed rate, and
// counts the log with replay: the reported count equals the events in the
// log, and the mix holds every operation.
func TestBenchRemote(t *testing.T) {
	addr, _ := startServe(t)
	rep := benchJSON(t, nil, "--server", addr, "--count", "700", "--writers", "3", "--batch", "7", "--rate", "20000", "--subjects", "50")
	if rep.Target != addr || rep.Piledger.Events != 700 || rep.Piledger.FailedCalls != 0 || rep.Piledger.LogEvents != nil {
		t.Errorf("report %+v", rep.Piledger)
	}
	if len(rep.Baselines) != 0 || len(rep.Notes) == 0 || !strings.Contains(strings.Join(rep.Notes, "\n"), "baseline skipped: give --nats-url") {
		t.Errorf("without --nats-url: baselines %v, notes %q; want none and a note", rep.Baselines, rep.Notes)
	}

	// With --nats-url, the baseline runs on that NATS server. This one is
	// not the ledger's, so the envelope size cannot be read and bench says so.
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	with := benchJSON(t, nil, "--server", addr, "--nats-url", ns.ClientURL(), "--count", "40", "--writers", "2", "--batch", "4")
	if len(with.Baselines) != 1 || with.Baselines[0].Events != 40 || with.Baselines[0].Ratio <= 0 ||
		!strings.Contains(strings.Join(with.Notes, "\n"), "could not read an event envelope") {
		t.Errorf("with --nats-url: baselines %+v, notes %q", with.Baselines, with.Notes)
	}
	total := rep.Piledger.Events + with.Piledger.Events

	code, out, errOut := cli(t, map[string]string{"PILEDGER_SERVER": addr}, "", "replay")
	if code != exitOK {
		t.Fatalf("replay: exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if int64(len(lines)) != total {
		t.Fatalf("the log holds %d events, bench reported %d", len(lines), total)
	}
	ops := make(map[piledgerv1.Operation]int)
	ids := make(map[string]bool)
	for _, line := range lines {
		var e piledgerv1.LogEntry
		if err := protojson.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		ops[e.GetHeader().GetOperation()]++
		ids[e.GetHeader().GetEventId()] = true
	}
	if len(ids) != len(lines) {
		t.Errorf("%d distinct event ids in %d entries", len(ids), len(lines))
	}
	if len(ops) != len(piledgerv1.Operation_name)-1 {
		t.Errorf("operations in the mix: %v; want all %d", ops, len(piledgerv1.Operation_name)-1)
	}
}

// TestBenchQuery runs the query scenario against the embedded stack at a
// tiny size and checks its counting: every query asked is answered, the
// latencies are ordered and the raw get baseline ran as many gets.
func TestBenchQuery(t *testing.T) {
	rep := benchJSON(t, nil, "--scenario", "query", "--count", "200", "--subjects", "20", "--queries", "50", "--writers", "4", "--batch", "2")
	p, q := rep.Piledger, rep.Query
	if rep.Scenario != "query" || p.Events != 200 || p.FailedCalls != 0 || p.LogEvents == nil || *p.LogEvents != 200 || len(rep.Baselines) != 2 {
		t.Errorf("the fill: %+v, baselines %+v; want 200 events in the log, reported as the append scenario does", p, rep.Baselines)
	}
	if q == nil {
		t.Fatalf("report without a query section: %+v", rep)
	}
	if q.Requested != 50 || q.Queries != 50 || q.Failed != 0 || q.FirstError != "" || q.Readers != 4 {
		t.Errorf("query %+v: want 50 answered of 50, none failed, 4 readers", q)
	}
	if q.SubjectsWithEvents < 1 || q.SubjectsWithEvents > 20 || q.MeanHoldings <= 0 || q.QueriesPerSec <= 0 || q.CatchUpSeconds < 0 {
		t.Errorf("query %+v: want the population, holdings and a rate", q)
	}
	if l := q.LatencyMs; l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max {
		t.Errorf("query latencies %+v: want 0 < p50 <= p90 <= p99 <= p99.9 <= max", l)
	}
	b := q.Baseline
	if b == nil {
		t.Fatal("no raw get baseline")
	}
	if b.Name != "raw-jetstream-get" || b.Ops != 50 || b.Failed != 0 || b.Concurrency != 4 || b.MeanBytes <= 0 ||
		b.LatencyMs.P50 <= 0 || b.LatencyMs.P50 > b.LatencyMs.P99 || b.LatencyMs.P99 > b.LatencyMs.Max || b.RatioP50 <= 0 || b.RatioP99 <= 0 {
		t.Errorf("baseline %+v: want 50 gets from 4 callers, ordered latencies and the ratios", b)
	}
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "without authentication") {
		t.Errorf("notes %q: want how the queries authenticate", rep.Notes)
	}

	// Table output.
	code, out, errOut := cli(t, nil, "", "bench", "--scenario", "query", "--count", "30", "--subjects", "10", "--queries", "5", "--writers", "2")
	if code != exitOK || !strings.Contains(out, "piledger DataMap (SDK)") || !strings.Contains(out, "5 answered in") ||
		!strings.Contains(out, "piledger p50 ÷ raw-jetstream-get p50 = ") || errOut != "" {
		t.Errorf("bench --scenario query: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBenchErase runs the erase scenario against the embedded stack and a
// running server at a tiny size and checks its counting: one receipt per
// erasure, the erased subjects' data maps show it, and the server's log
// holds exactly that many erasure entries, the erased subjects' events
// shredded.
func TestBenchErase(t *testing.T) {
	rep := benchJSON(t, nil, "--scenario", "erase", "--count", "200", "--subjects", "20", "--erasures", "10", "--writers", "4")
	e := rep.Erase
	if e == nil {
		t.Fatalf("report without an erase section: %+v", rep)
	}
	if e.Requested != 10 || e.Erasures != 10 || e.Failed != 0 || e.Verified != 10 || e.VerifyError != "" || e.EventsPerErasedSubject <= 0 {
		t.Errorf("erase %+v: want 10 receipts, 10 data maps showing the erasure, the events per subject", e)
	}
	if l := e.LatencyMs; l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max {
		t.Errorf("erase latencies %+v: want 0 < p50 <= p99 <= max", l)
	}
	if b := e.Baseline; b == nil || b.Name != "raw-jetstream-fsync-publish" || b.Ops != 10 || b.Failed != 0 || b.RatioP50 <= 0 {
		t.Errorf("baseline %+v: want 10 raw fsynced publishes and a ratio", b)
	}

	// Against a server, the log itself can be counted afterwards.
	addr, _ := startServe(t)
	rep = benchJSON(t, nil, "--server", addr, "--scenario", "erase", "--count", "120", "--subjects", "12", "--erasures", "5", "--writers", "3")
	e = rep.Erase
	if e == nil || e.Erasures != 5 || e.Verified != 5 || e.Failed != 0 {
		t.Fatalf("erase against a server: %+v", e)
	}
	if e.Baseline != nil || !strings.Contains(strings.Join(rep.Notes, "\n"), "publish baseline skipped") {
		t.Errorf("without --nats-url: baseline %+v, notes %q; want none and a note", e.Baseline, rep.Notes)
	}
	code, out, errOut := cli(t, map[string]string{"PILEDGER_SERVER": addr}, "", "replay")
	if code != exitOK {
		t.Fatalf("replay: exit %d\n%s", code, errOut)
	}
	var erasures, shredded int
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var le piledgerv1.LogEntry
		if err := protojson.Unmarshal([]byte(line), &le); err != nil {
			t.Fatal(err)
		}
		switch {
		case le.GetHeader().GetErasure():
			erasures++
		case le.GetShredded():
			shredded++
		}
	}
	if erasures != 5 || float64(shredded) != math.Round(e.EventsPerErasedSubject*5) {
		t.Errorf("the log holds %d erasure entries and %d shredded events; bench reported 5 erasures of %.1f events each", erasures, shredded, e.EventsPerErasedSubject)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, test := range []struct {
		args []string
		want string
		env  map[string]string
	}{
		{[]string{"--scenario", "fast"}, "want append, query or erase", nil},
		{[]string{"--queries", "5"}, "--queries applies to --scenario query only", nil},
		{[]string{"--scenario", "erase", "--queries", "5"}, "--queries applies to --scenario query only", nil},
		{[]string{"--scenario", "query", "--queries", "0"}, "--queries 0", nil},
		{[]string{"--erasures", "5"}, "--erasures applies to --scenario erase only", nil},
		{[]string{"--scenario", "erase", "--erasures", "0"}, "--erasures 0", nil},
		{[]string{"--scenario", "erase", "--subjects", "10", "--erasures", "11"}, "--erasures 11", nil},
		{[]string{"--scenario", "query", "--token-file", "t"}, "apply to --server only", nil},
		{[]string{"--scenario", "erase", "--reason", "case 7"}, "apply to --server only", nil},
		{[]string{"--server", "127.0.0.1:7070", "--reason", "case 7"}, "apply to --scenario query and erase only", nil},
		{[]string{"--server", "127.0.0.1:7070", "--scenario", "query"}, "needs --reason", map[string]string{"PILEDGER_TOKEN": "tok"}},
		{[]string{"--server", "127.0.0.1:7070", "--scenario", "erase", "--token-file", "/nonexistent/token", "--reason", "x"}, "--token-file", nil},
		{[]string{"--subjects", "5"}, "--subjects 5", nil},
		{[]string{"--subjects", "10000001"}, "--subjects", nil},
		{[]string{"--batch", "0"}, "--batch 0", nil},
		{[]string{"--batch", "1001"}, "--batch 1001", nil},
		{[]string{"--writers", "0"}, "--writers 0", nil},
		{[]string{"--rate", "-1"}, "--rate", nil},
		{[]string{"--count", "5", "--duration", "1s"}, "not both", nil},
		{[]string{"--duration", "0"}, "--duration must be positive", nil},
		{[]string{"--embedded=false"}, "needs --server", nil},
		{[]string{"--embedded", "--server", "127.0.0.1:7070"}, "exclude each other", nil},
		{[]string{"--processor", "Not An ID"}, "--processor", nil},
		{[]string{"--nats-url", "nats://127.0.0.1:4222"}, "apply to --server only", nil},
		{[]string{"--server", "127.0.0.1:7070", "--nats-creds", "x.creds"}, "need --nats-url", nil},
		{[]string{"--output", "yaml"}, "--output", nil},
		{[]string{"--server", "127.0.0.1:7070", "--tls-cert", "c.pem"}, "go together", nil},
	} {
		t.Run(strings.Join(test.args, " "), func(t *testing.T) {
			code, _, errOut := cli(t, test.env, "", append([]string{"bench"}, test.args...)...)
			if code != exitInvalid || !strings.Contains(errOut, test.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, exitInvalid, test.want)
			}
		})
	}
}

// TestCLIShape checks what makes the commands read like one tool: shell
// completion is exposed, enum flags complete, every command has examples and
// the connection flags are the same everywhere.
func TestCLIShape(t *testing.T) {
	code, out, errOut := cli(t, nil, "", "completion", "bash")
	if code != exitOK || !strings.Contains(out, "bash completion") {
		t.Errorf("completion bash: exit %d\n%.200s%s", code, out, errOut)
	}
	code, out, _ = cli(t, nil, "", "__complete", "bench", "--output", "")
	if code != exitOK || !strings.Contains(out, "table\njson\n") {
		t.Errorf("completion of bench --output: %q", out)
	}
	code, out, _ = cli(t, nil, "", "__complete", "bench", "--scenario", "")
	if code != exitOK || !strings.Contains(out, "append\nquery\nerase\n") {
		t.Errorf("completion of bench --scenario: %q", out)
	}
	code, out, _ = cli(t, nil, "", "--help")
	if code != exitOK || !strings.Contains(out, "completion") || !strings.Contains(out, "bench") {
		t.Errorf("piledger --help does not list completion and bench:\n%s", out)
	}
	for _, cmd := range []string{"serve", "emit", "replay", "bench"} {
		t.Run(cmd, func(t *testing.T) {
			code, out, _ := cli(t, nil, "", cmd, "--help")
			_, examples, _ := strings.Cut(out, "Examples:\n")
			if code != exitOK || !strings.Contains(examples, "  piledger "+cmd+" ") {
				t.Errorf("%s --help has no examples:\n%s", cmd, out)
			}
			if cmd == "serve" {
				return
			}
			for _, flag := range []string{"--server", "--api-key-file", "--tls-ca", "--tls-cert", "--tls-key", "--output"} {
				if !strings.Contains(out, flag) {
					t.Errorf("%s has no %s flag", cmd, flag)
				}
			}
		})
	}
}

// TestConnFlags checks the credential flags every client command shares: an
// API key from a file or the environment is sent on loopback, refused in
// plaintext to another host, and TLS flags are checked.
func TestConnFlags(t *testing.T) {
	addr, _ := startServe(t)
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("pk_test_1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	event := []string{"--operation", "store", "--subject", "C-9", "--processor", "acme", "--category", "email"}
	if code, out, errOut := cli(t, map[string]string{"PILEDGER_API_KEY_FILE": keyFile}, "", append([]string{"emit", "--server", addr}, event...)...); code != exitOK {
		t.Errorf("emit with an API key on loopback: exit %d\n%s%s", code, out, errOut)
	}
	for _, test := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"key file in plaintext to another host", nil, []string{"emit", "--server", "10.1.2.3:7070", "--api-key-file", keyFile}, "refusing to send the API key in plaintext"},
		{"key from the environment", map[string]string{"PILEDGER_API_KEY": "pk"}, []string{"replay", "--server", "ledger.example:7070"}, "refusing to send the API key in plaintext"},
		{"missing key file", nil, []string{"replay", "--api-key-file", keyFile + ".missing"}, "--api-key-file"},
		{"certificate without key", nil, []string{"replay", "--tls-cert", keyFile}, "go together"},
		{"CA file without PEM", nil, []string{"replay", "--tls-ca", keyFile}, "holds no PEM certificate"},
	} {
		t.Run(test.name, func(t *testing.T) {
			args := test.args
			if args[0] == "emit" {
				args = append(args, event...)
			}
			code, _, errOut := cli(t, test.env, "", args...)
			if code != exitInvalid || !strings.Contains(errOut, test.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, exitInvalid, test.want)
			}
		})
	}
}

// TestBenchAuthenticatedServer: against a server with authentication on, an
// API key is bound to one processor, so --processor makes every event that
// processor's and every append is accepted.
func TestBenchAuthenticatedServer(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	code, key, errOut := cli(t, nil, "", "processors", "add", "bench-emitter", "--data", dataDir)
	if code != exitOK {
		t.Fatalf("processors add: exit %d\n%s", code, errOut)
	}
	addr, _ := startServeAuth(t, dataDir)
	keyFile := writeSecret(t, "bench.key", strings.TrimSpace(key)+"\n")
	rep := benchJSON(t, nil, "--server", addr, "--api-key-file", keyFile, "--processor", "bench-emitter",
		"--count", "60", "--writers", "2", "--batch", "5", "--subjects", "10")
	if rep.Piledger.Events != 60 || rep.Piledger.FailedEvents != 0 {
		t.Fatalf("bench with --processor: %d events, %d failed (%s); want 60 and 0",
			rep.Piledger.Events, rep.Piledger.FailedEvents, rep.Piledger.FirstError)
	}
}
