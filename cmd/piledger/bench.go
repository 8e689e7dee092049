package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/api/client"
	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// benchFlags are the flags of `piledger bench`.
type benchFlags struct {
	conn      connFlags
	embedded  bool
	natsURL   string
	natsCreds string
	natsUser  string
	scenario  string
	writers   int
	rate      float64
	subjects  int
	duration  time.Duration
	count     int64
	batch     int
	output    string
	seed      uint64

	natsPassword string // from $PILEDGER_NATS_PASSWORD only
}

// Bounds of the bench flags.
const (
	benchMinSubjects = 10
	benchMaxSubjects = 10_000_000
	benchMaxWriters  = 10_000
)

// Names of the raw JetStream objects the baseline publishes to. They live
// apart from piledger's own stream and subjects.
const (
	rawStream  = "PILEDGER_BENCH_RAW"
	rawSubject = "piledger-bench.raw"
)

func newBenchCmd(getenv func(string) string) *cobra.Command {
	var fl benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure append throughput and latency against raw JetStream",
		Long: `Generate load shaped like real emitters and measure it, beside the same
workload published straight to JetStream in the same run.

--writers concurrent writers each call AppendEvents (through the Go SDK, with
its retries) with --batch events per call, at full speed or, with --rate, at a
fixed total rate of events per second (latency is then measured from each
call's scheduled start, so a stalled server is not hidden). The events are a
realistic mix of every operation with valid fields, from five kinds of
processors, about --subjects distinct data subjects. The first event of a
subject also creates that subject's key (one more durable write), so a large
--subjects measures first contact and a small one the steady state.

By default (--embedded) bench starts its own piledger in a temporary
directory — embedded NATS with fsync before every acknowledgement, keyring,
ledger, read models and gRPC API, wired as 'piledger serve' does — and two
raw baselines:
the same number of events published asynchronously to JetStream, one message
per event with the size of a stored event envelope, once with fsync before
every acknowledgement (the durability piledger gives) and once with
JetStream's default sync interval (its ceiling). It prints piledger's rate as
a ratio of each, and checks that the log gained exactly the events counted.

With --server, bench loads a running piledger instead. Every event it sends
stays in that ledger for ever (the log cannot be deleted), so point it at a
test deployment; the server is never taken from $PILEDGER_SERVER. The raw
baseline then needs --nats-url (the NATS server behind it, to publish on a
scratch stream of its own), and is skipped, with a note, without it.

Progress goes to stderr when it is a terminal. --output json prints one JSON
object for machines.`,
		Example: `  # one command, one machine: piledger and raw JetStream side by side
  piledger bench --duration 10s --writers 64

  # a fixed rate, a large population, batches of 20 events per call
  piledger bench --rate 20000 --subjects 1000000 --batch 20 --duration 30s

  # a test deployment, with its NATS for the baseline, as JSON
  PILEDGER_API_KEY=... piledger bench --server ledger-test:7070 --tls-ca ca.pem \
    --nats-url nats://nats-test:4222 --count 100000 --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := fl.validate(cmd); err != nil {
				return err
			}
			if err := fl.conn.resolve(getenv); err != nil {
				return err
			}
			fl.natsPassword = getenv("PILEDGER_NATS_PASSWORD")
			if fl.natsUser != "" && fl.natsPassword == "" {
				return usageError(errors.New("--nats-user needs the password in PILEDGER_NATS_PASSWORD"))
			}
			return bench(cmd.Context(), fl, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addConnFlags(cmd, &fl.conn)
	f := cmd.Flags()
	// bench loads the embedded stack unless --server is given explicitly.
	fl.conn.server = ""
	f.Lookup("server").DefValue = ""
	f.Lookup("server").Usage = "load the running piledger at this gRPC address (host:port) instead of an embedded one; never read from $PILEDGER_SERVER"
	f.BoolVar(&fl.embedded, "embedded", true, "run against an in-process piledger in a temporary directory; --server turns it off")
	f.StringVar(&fl.natsURL, "nats-url", "", "with --server: the NATS server(s) to publish the raw JetStream baseline to")
	f.StringVar(&fl.natsCreds, "nats-creds", "", "NATS credentials file (.creds) for --nats-url")
	f.StringVar(&fl.natsUser, "nats-user", "", "NATS user for --nats-url; the password is read from PILEDGER_NATS_PASSWORD")
	f.StringVar(&fl.scenario, "scenario", "append", "what to measure: append (query and erase latency come with later releases)")
	f.IntVar(&fl.writers, "writers", 16, "concurrent writers")
	f.Float64Var(&fl.rate, "rate", 0, "total events per second over all writers; 0 = as fast as possible")
	f.IntVar(&fl.subjects, "subjects", 10_000, "distinct data subjects, 10 to 10,000,000")
	f.DurationVar(&fl.duration, "duration", 10*time.Second, "how long to run (ignored with --count)")
	f.Int64Var(&fl.count, "count", 0, "run until this many events were sent, instead of --duration")
	f.IntVar(&fl.batch, "batch", 1, "events per AppendEvents call, 1 to 1000")
	f.StringVarP(&fl.output, "output", "o", "table", "output: table or json")
	f.Uint64Var(&fl.seed, "seed", 1, "seed of the event generator (the same seed gives the same event mix)")
	withEnv(cmd, getenv, "api-key-file", "tls-ca", "tls-cert", "tls-key", "nats-url", "nats-creds", "nats-user", "output")
	completeWords(cmd, "output", "table", "json")
	completeWords(cmd, "scenario", "append")
	return cmd
}

// validate checks the flags' values and combinations.
func (fl *benchFlags) validate(cmd *cobra.Command) error {
	changed := cmd.Flags().Changed
	var errs []string
	switch fl.scenario {
	case "append":
	case "query", "erase":
		return usageError(fmt.Errorf("--scenario %s is not available yet: query and erase latency need the read models and erasure, which come in later releases; use --scenario append", fl.scenario))
	default:
		return usageError(fmt.Errorf("--scenario %q: the only scenario is append", fl.scenario))
	}
	if changed("server") {
		if fl.conn.server == "" {
			errs = append(errs, "--server: empty address")
		}
		if changed("embedded") && fl.embedded {
			errs = append(errs, "--embedded and --server exclude each other")
		}
		fl.embedded = false
	} else if !fl.embedded {
		errs = append(errs, "--embedded=false needs --server")
	}
	if fl.embedded && (fl.natsURL != "" || fl.conn.apiKeyFile != "" || fl.conn.tls()) {
		errs = append(errs, "--nats-url, --api-key-file and --tls-* apply to --server only")
	}
	if fl.natsURL == "" && (fl.natsCreds != "" || fl.natsUser != "") {
		errs = append(errs, "--nats-creds and --nats-user need --nats-url")
	}
	if fl.writers < 1 || fl.writers > benchMaxWriters {
		errs = append(errs, fmt.Sprintf("--writers %d: want 1 to %d", fl.writers, benchMaxWriters))
	}
	if fl.rate < 0 {
		errs = append(errs, fmt.Sprintf("--rate %v: want 0 (maximum) or more", fl.rate))
	}
	if fl.subjects < benchMinSubjects || fl.subjects > benchMaxSubjects {
		errs = append(errs, fmt.Sprintf("--subjects %d: want %d to %d", fl.subjects, benchMinSubjects, benchMaxSubjects))
	}
	if fl.batch < 1 || fl.batch > client.MaxBatchEvents {
		errs = append(errs, fmt.Sprintf("--batch %d: want 1 to %d", fl.batch, client.MaxBatchEvents))
	}
	if fl.count < 0 {
		errs = append(errs, fmt.Sprintf("--count %d: want 1 or more", fl.count))
	}
	if fl.count == 0 && fl.duration <= 0 {
		errs = append(errs, "--duration must be positive (or give --count)")
	}
	if changed("count") && changed("duration") {
		errs = append(errs, "give --count or --duration, not both")
	}
	if fl.output != "table" && fl.output != "json" {
		errs = append(errs, fmt.Sprintf("--output %q: want table or json", fl.output))
	}
	if len(errs) > 0 {
		return usageError(errors.New(strings.Join(errs, "; ")))
	}
	return nil
}

// benchReport is what bench prints; its JSON form is the --output json
// contract.
type benchReport struct {
	Scenario  string           `json:"scenario"`
	Target    string           `json:"target"`
	Writers   int              `json:"writers"`
	Batch     int              `json:"batch"`
	Subjects  int              `json:"subjects"`
	Rate      float64          `json:"rate"`
	Duration  string           `json:"duration,omitempty"`
	Count     int64            `json:"count,omitempty"`
	Seed      uint64           `json:"seed"`
	Piledger  piledgerResult   `json:"piledger"`
	Baselines []baselineResult `json:"baselines"`
	Notes     []string         `json:"notes,omitempty"`
}

// piledgerResult is the measured piledger run.
type piledgerResult struct {
	// Events is the number of events acknowledged with a receipt.
	Events int64 `json:"events"`
	// Duplicates counts receipts marked duplicate (retries of events whose
	// first answer was lost); they are in Events and in the log once.
	Duplicates   int64   `json:"duplicates"`
	Calls        int64   `json:"calls"`
	FailedCalls  int64   `json:"failedCalls"`
	FailedEvents int64   `json:"failedEvents"`
	FirstError   string  `json:"firstError,omitempty"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"eventsPerSecond"`
	// EnvelopeBytes is the mean stored size of one event (sealed envelope),
	// when it could be read from the log, and MBPerSec the stored event
	// bytes per second it gives (MB = 10^6), as for the raw baselines.
	EnvelopeBytes int     `json:"envelopeBytes,omitempty"`
	MBPerSec      float64 `json:"mbPerSecond,omitempty"`
	// CallLatencyMs are percentiles of one AppendEvents call (with retries).
	CallLatencyMs latencyMs `json:"callLatencyMs"`
	// LogEvents is how many events the log gained during the run, when
	// bench can see the whole log (embedded); it must equal Events.
	LogEvents *int64 `json:"logEvents,omitempty"`
}

type latencyMs struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// baselineResult is one raw JetStream run.
type baselineResult struct {
	Name         string  `json:"name"`
	Description  string  `json:"description"`
	Events       int64   `json:"events"`
	Failed       int64   `json:"failed"`
	PayloadBytes int     `json:"payloadBytes"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"eventsPerSecond"`
	MBPerSec     float64 `json:"mbPerSecond"`
	// Ratio is piledger's events/s divided by this baseline's.
	Ratio float64 `json:"ratio"`
}

// bench runs the append scenario and prints the report. It returns an error
// (exit 1) after the report when calls failed or the log check failed.
func bench(ctx context.Context, fl benchFlags, stdout, stderr io.Writer) (err error) {
	rep := benchReport{Scenario: fl.scenario, Writers: fl.writers, Batch: fl.batch, Subjects: fl.subjects, Rate: fl.rate, Count: fl.count, Seed: fl.seed}
	if fl.count == 0 {
		rep.Duration = fl.duration.String()
	}

	var (
		target string
		opts   []client.Option
		stack  *benchStack
	)
	if fl.embedded {
		rep.Target = "embedded"
		if stack, err = startBenchStack(ctx); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, stack.stop()) }()
		target, opts = stack.addr, []client.Option{client.WithInsecure()}
	} else {
		rep.Target = fl.conn.server
		target, opts = fl.conn.server, fl.conn.sdkOptions()
	}
	c, err := client.New(target, append(opts, client.WithUserAgent("piledger-bench"))...)
	if err != nil {
		return usageError(err)
	}
	defer func() { err = errors.Join(err, c.Close()) }()

	var logBefore uint64
	if stack != nil {
		logBefore = stack.led.Size()
	}
	progress := newBenchProgress(stderr)
	res := runAppend(ctx, c, fl, progress)
	progress.stop()
	rep.Piledger = res.result()
	if ctx.Err() != nil {
		rep.Notes = append(rep.Notes, "interrupted: the figures cover the run until the interruption")
	}

	// The raw baselines, with the size of a stored event.
	payload := 0
	switch {
	case stack != nil:
		if stack.led.Size() > logBefore {
			payload, err = envelopeSize(context.WithoutCancel(ctx), stack.js)
			if err != nil {
				return err
			}
		}
		gained := int64(stack.led.Size() - logBefore)
		rep.Piledger.LogEvents = &gained
	case fl.natsURL != "":
		nc, err := connectNATS(fl)
		if err != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("raw JetStream baseline failed: %v", err))
			break
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		if payload, err = envelopeSize(context.WithoutCancel(ctx), js); err != nil {
			payload = 512
			rep.Notes = append(rep.Notes, fmt.Sprintf("could not read an event envelope from stream %s (%v): the raw payload is %d bytes, a typical envelope", ledger.DefaultStreamName, err, payload))
		}
		if ctx.Err() == nil && res.events.Load() > 0 {
			b, err := rawBaseline(ctx, nc, "raw-jetstream", "raw JetStream at --nats-url, async publish, one message per event (that server's sync settings)",
				payload, res.events.Load(), res.elapsed)
			if err != nil {
				// Keep piledger's figures: the NATS user may lack the
				// rights to create a scratch stream.
				rep.Notes = append(rep.Notes, fmt.Sprintf("raw JetStream baseline failed: %v", err))
			} else {
				rep.Baselines = append(rep.Baselines, b)
			}
		}
	default:
		rep.Notes = append(rep.Notes, "raw JetStream baseline skipped: give --nats-url (the NATS server behind --server) to measure it")
	}
	rep.Piledger.EnvelopeBytes = payload
	rep.Piledger.MBPerSec = rep.Piledger.EventsPerSec * float64(payload) / 1e6
	if stack != nil && ctx.Err() == nil && res.events.Load() > 0 {
		for _, run := range []struct {
			name, desc string
			sync       bool
		}{
			{"raw-jetstream-fsync", "raw JetStream, async publish, one message per event, fsync before every ack (piledger's durability)", true},
			{"raw-jetstream", "raw JetStream, async publish, one message per event, default sync interval (no per-ack durability)", false},
		} {
			nc, stop, err := startRawServer(run.sync)
			if err != nil {
				return err
			}
			b, err := rawBaseline(ctx, nc, run.name, run.desc, payload, res.events.Load(), res.elapsed)
			stop()
			if err != nil {
				return err
			}
			rep.Baselines = append(rep.Baselines, b)
		}
	}
	for i := range rep.Baselines {
		if b := &rep.Baselines[i]; b.EventsPerSec > 0 {
			b.Ratio = rep.Piledger.EventsPerSec / b.EventsPerSec
		}
	}
	if len(rep.Baselines) > 0 {
		rep.Notes = append(rep.Notes, "raw baselines publish as many events as piledger recorded, for at most as long as its run took, at full speed")
	}
	if fl.rate > 0 {
		rep.Notes = append(rep.Notes, "with --rate, piledger's events/s is the rate asked for when it keeps up; the ratio then compares it with JetStream's ceiling")
	}

	if err := printBenchReport(stdout, fl.output, &rep); err != nil {
		return err
	}
	var errs []error
	if p := rep.Piledger; p.FailedCalls > 0 {
		errs = append(errs, fmt.Errorf("%d of %d calls failed (%d events); first error: %s", p.FailedCalls, p.Calls, p.FailedEvents, p.FirstError))
	}
	if l := rep.Piledger.LogEvents; l != nil && *l != rep.Piledger.Events {
		errs = append(errs, fmt.Errorf("the log gained %d events, but %d were acknowledged", *l, rep.Piledger.Events))
	}
	return errors.Join(errs...)
}

// appendRun is the state of the piledger run shared by its writers.
type appendRun struct {
	events, duplicates, calls, failedCalls, failedEvents atomic.Int64
	claimed                                              atomic.Int64
	firstErr                                             atomic.Pointer[error]
	hist                                                 *hdrhistogram.Histogram
	elapsed                                              time.Duration
}

// runAppend drives the writers until the count or duration is reached or
// ctx ends. Calls in flight then complete (their context ignores ctx), so
// every acknowledged event is counted.
func runAppend(ctx context.Context, c *client.Client, fl benchFlags, prog *benchProgress) *appendRun {
	run := &appendRun{hist: newHist()}
	prog.watch(&run.events, &run.failedEvents)
	var interval time.Duration
	if fl.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(fl.batch*fl.writers) / fl.rate)
	}
	start := time.Now()
	hists := make([]*hdrhistogram.Histogram, fl.writers)
	var wg sync.WaitGroup
	for w := range fl.writers {
		hists[w] = newHist()
		wg.Go(func() {
			gen := newBenchGen(fl.seed, w, fl.subjects)
			next := start.Add(interval * time.Duration(w) / time.Duration(fl.writers))
			for ctx.Err() == nil {
				n := fl.batch
				if fl.count > 0 {
					end := run.claimed.Add(int64(n))
					if end-int64(n) >= fl.count {
						return
					}
					if end > fl.count {
						n -= int(end - fl.count)
					}
				} else if time.Since(start) >= fl.duration {
					return
				}
				scheduled := time.Now()
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						t := time.NewTimer(d)
						select {
						case <-t.C:
						case <-ctx.Done():
							t.Stop()
							return
						}
					}
					scheduled, next = next, next.Add(interval)
				}
				events := gen.batch(n)
				rs, err := c.Append(context.WithoutCancel(ctx), events...)
				_ = hists[w].RecordValue(max(1, time.Since(scheduled).Microseconds()))
				run.calls.Add(1)
				if err != nil {
					run.failedCalls.Add(1)
					run.failedEvents.Add(int64(n))
					run.firstErr.CompareAndSwap(nil, &err)
					continue
				}
				run.events.Add(int64(len(rs)))
				for _, r := range rs {
					if r.Duplicate {
						run.duplicates.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	run.elapsed = time.Since(start)
	for _, h := range hists {
		run.hist.Merge(h)
	}
	return run
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

func (r *appendRun) result() piledgerResult {
	secs := r.elapsed.Seconds()
	ms := func(us int64) float64 { return float64(us) / 1000 }
	out := piledgerResult{
		Events:       r.events.Load(),
		Duplicates:   r.duplicates.Load(),
		Calls:        r.calls.Load(),
		FailedCalls:  r.failedCalls.Load(),
		FailedEvents: r.failedEvents.Load(),
		Seconds:      secs,
		CallLatencyMs: latencyMs{
			P50: ms(r.hist.ValueAtQuantile(50)), P90: ms(r.hist.ValueAtQuantile(90)), P99: ms(r.hist.ValueAtQuantile(99)),
			P999: ms(r.hist.ValueAtQuantile(99.9)), Max: ms(r.hist.Max()),
		},
	}
	if secs > 0 {
		out.EventsPerSec = float64(out.Events) / secs
	}
	if p := r.firstErr.Load(); p != nil {
		out.FirstError = (*p).Error()
	}
	return out
}

// rawBaseline publishes up to count messages of payloadBytes random bytes to
// a scratch stream over nc, asynchronously (4096 in flight), for at most
// budget, waits for every acknowledgement and reports the rate. The scratch
// stream is deleted afterwards.
func rawBaseline(ctx context.Context, nc *nats.Conn, name, desc string, payloadBytes int, count int64, budget time.Duration) (baselineResult, error) {
	var failed atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		return baselineResult{}, fmt.Errorf("raw baseline: %w", err)
	}
	_ = js.DeleteStream(ctx, rawStream) // left over from an interrupted run
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: rawStream, Subjects: []string{rawSubject}, Storage: jetstream.FileStorage}); err != nil {
		return baselineResult{}, fmt.Errorf("raw baseline: create stream %s: %w", rawStream, err)
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), rawStream) }()

	payload := make([]byte, payloadBytes)
	_, _ = rand.Read(payload)
	start := time.Now()
	var sent int64
	for sent < count && ctx.Err() == nil {
		if sent%256 == 0 && time.Since(start) >= budget {
			break
		}
		if _, err := js.PublishAsync(rawSubject, payload, jetstream.WithStallWait(time.Minute)); err != nil {
			return baselineResult{}, fmt.Errorf("raw baseline: publish: %w", err)
		}
		sent++
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return baselineResult{}, errors.New("raw baseline: publishes not acknowledged within 2 minutes")
	}
	secs := time.Since(start).Seconds()
	b := baselineResult{Name: name, Description: desc, Events: sent - failed.Load(), Failed: failed.Load(), PayloadBytes: payloadBytes, Seconds: secs}
	if secs > 0 {
		b.EventsPerSec = float64(b.Events) / secs
		b.MBPerSec = b.EventsPerSec * float64(payloadBytes) / 1e6
	}
	return b, nil
}

// envelopeSize returns the mean size of the event envelopes in the log's
// last block.
func envelopeSize(ctx context.Context, js jetstream.JetStream) (int, error) {
	stream, err := js.Stream(ctx, ledger.DefaultStreamName)
	if err != nil {
		return 0, err
	}
	msg, err := stream.GetLastMsgForSubject(ctx, ledger.DefaultPrefix+".log")
	if err != nil {
		return 0, err
	}
	var blk piledgerv1.Block
	if err := proto.Unmarshal(msg.Data, &blk); err != nil || len(blk.GetEnvelopes()) == 0 {
		return 0, fmt.Errorf("the last log block does not decode (%v)", err)
	}
	total := 0
	for _, e := range blk.GetEnvelopes() {
		total += len(e)
	}
	return total / len(blk.GetEnvelopes()), nil
}

// connectNATS connects to --nats-url with the NATS credentials flags.
func connectNATS(fl benchFlags) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("piledger-bench")}
	if fl.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(fl.natsCreds))
	}
	if fl.natsUser != "" {
		opts = append(opts, nats.UserInfo(fl.natsUser, fl.natsPassword))
	}
	nc, err := nats.Connect(fl.natsURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(fl.natsURL), err)
	}
	return nc, nil
}

// startRawServer starts a bare embedded nats-server with JetStream in a
// temporary directory, fsyncing before every acknowledgement or not, and
// connects to it in-process as the ledger does to its own.
func startRawServer(syncAlways bool) (*nats.Conn, func(), error) {
	dir, err := os.MkdirTemp("", "piledger-bench-raw-")
	if err != nil {
		return nil, nil, err
	}
	srv, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: dir, SyncAlways: syncAlways,
		DontListen: true, NoLog: true, NoSigs: true, MaxPayload: ledger.EmbeddedMaxPayload,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("raw baseline: nats-server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		os.RemoveAll(dir)
		return nil, nil, errors.New("raw baseline: nats-server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		srv.Shutdown()
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("raw baseline: connect: %w", err)
	}
	return nc, func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
		os.RemoveAll(dir)
	}, nil
}

// benchStack is the in-process piledger of --embedded: the wiring of
// `piledger serve` (embedded NATS, keyring, ledger, read models and their
// projector, API) with its data in a temporary directory and its API on free
// loopback ports.
type benchStack struct {
	addr string
	js   jetstream.JetStream
	led  *ledger.Ledger
	stop func() error
}

func startBenchStack(ctx context.Context) (_ *benchStack, err error) {
	dir, err := os.MkdirTemp("", "piledger-bench-")
	if err != nil {
		return nil, err
	}
	var undo []func() error
	cleanup := func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(append(errs, os.RemoveAll(dir))...)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, cleanup())
		}
	}()
	emb, err := ledger.StartEmbedded(ledger.EmbeddedConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { emb.Shutdown(); return nil })
	nc, err := emb.Connect()
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error { nc.Close(); return nil })
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
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
	store, err := projections.Open(projections.Config{Dir: filepath.Join(dir, "projections"), Logger: logger}, led, keys)
	if err != nil {
		return nil, err
	}
	undo = append(undo, store.Close)
	srv, err := api.New(api.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, led, logger, api.WithReadModels(store))
	if err != nil {
		return nil, err
	}
	ledgerCtx, stopLedger := context.WithCancel(context.WithoutCancel(ctx))
	projCtx, stopProjector := context.WithCancel(context.WithoutCancel(ctx))
	apiCtx, stopAPI := context.WithCancel(context.WithoutCancel(ctx))
	ledgerDone, projDone, apiDone := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	go func() { ledgerDone <- led.Run(ledgerCtx) }()
	go func() { projDone <- store.Run(projCtx) }()
	go func() { apiDone <- srv.Run(apiCtx) }()
	var once sync.Once
	var stopErr error
	return &benchStack{
		addr: srv.GRPCAddr(),
		js:   js,
		led:  led,
		stop: func() error {
			once.Do(func() {
				stopAPI()
				errs := []error{<-apiDone}
				stopProjector()
				stopLedger()
				errs = append(errs, <-projDone, <-ledgerDone, cleanup())
				stopErr = errors.Join(errs...)
			})
			return stopErr
		},
	}, nil
}

// printBenchReport writes rep as a table or as one JSON object.
func printBenchReport(w io.Writer, output string, rep *benchReport) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	p := rep.Piledger
	mode := fmt.Sprintf("%s, %d writers × batch %d, %d subjects", rep.Target, rep.Writers, rep.Batch, rep.Subjects)
	if rep.Rate > 0 {
		mode += fmt.Sprintf(", rate %.0f events/s", rep.Rate)
	} else {
		mode += ", max rate"
	}
	if rep.Count > 0 {
		mode += fmt.Sprintf(", %d events", rep.Count)
	} else {
		mode += ", " + rep.Duration
	}
	fmt.Fprintf(w, "piledger bench: %s — %s\n\n", rep.Scenario, mode)
	// Right-aligned numbers; names padded so that they read left-aligned.
	const self = "piledger (durable, gRPC)"
	width := len(self)
	for _, b := range rep.Baselines {
		width = max(width, len(b.Name))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tevents\tevents/s\tMB/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\t\n", width, "")
	l := p.CallLatencyMs
	mbps := "-" // unknown without the envelope size
	if p.EnvelopeBytes > 0 {
		mbps = fmt.Sprintf("%.2f", p.MBPerSec)
	}
	fmt.Fprintf(tw, "%-*s\t%d\t%.0f\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
		width, self, p.Events, p.EventsPerSec, mbps, l.P50, l.P90, l.P99, l.P999, l.Max)
	for _, b := range rep.Baselines {
		fmt.Fprintf(tw, "%-*s\t%d\t%.0f\t%.2f\t\t\t\t\t\t\n", width, b.Name, b.Events, b.EventsPerSec, b.MBPerSec)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d calls in %.2fs, %d failed", p.Calls, p.Seconds, p.FailedCalls)
	if p.Duplicates > 0 {
		fmt.Fprintf(w, ", %d duplicate receipts (retries)", p.Duplicates)
	}
	fmt.Fprintln(w, "; latency per call, from its scheduled start")
	if p.EnvelopeBytes > 0 {
		fmt.Fprintf(w, "stored event envelope: %d bytes (the raw payload size)\n", p.EnvelopeBytes)
	}
	if p.LogEvents != nil {
		verdict := "as acknowledged"
		if *p.LogEvents != p.Events {
			verdict = fmt.Sprintf("BUT %d were acknowledged", p.Events)
		}
		fmt.Fprintf(w, "log check: the log gained %d events, %s\n", *p.LogEvents, verdict)
	}
	for _, b := range rep.Baselines {
		fmt.Fprintf(w, "piledger ÷ %s = %.2f×   (%s, %d-byte payload)\n", b.Name, b.Ratio, b.Description, b.PayloadBytes)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if p.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", p.FirstError)
	}
	return nil
}

// benchProgress prints a status line to a terminal once a second.
type benchProgress struct {
	w      io.Writer
	done   chan struct{}
	wg     sync.WaitGroup
	active bool
}

// newBenchProgress returns a progress display on w, active only when w is a
// terminal.
func newBenchProgress(w io.Writer) *benchProgress {
	p := &benchProgress{w: w, done: make(chan struct{})}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.active = true
	}
	return p
}

func (p *benchProgress) watch(events, failed *atomic.Int64) {
	if !p.active {
		return
	}
	start := time.Now()
	p.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-p.done:
				fmt.Fprint(p.w, "\r\033[K")
				return
			case <-t.C:
				n := events.Load()
				fmt.Fprintf(p.w, "\r\033[K%6.1fs  %d events  %d/s  %d failed", time.Since(start).Seconds(), n, n-last, failed.Load())
				last = n
			}
		}
	})
}

func (p *benchProgress) stop() {
	close(p.done)
	p.wg.Wait()
}

// completeWords offers words as the completions of flag name.
func completeWords(cmd *cobra.Command, name string, words ...string) {
	_ = cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(words, cobra.ShellCompDirectiveNoFileComp))
}
