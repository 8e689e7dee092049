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
	processor string
	queries   int64
	erasures  int

	natsPassword string // from $PILEDGER_NATS_PASSWORD only
}

// Bounds of the bench flags.
const (
	benchMinSubjects = 10
	benchMaxSubjects = 10_000_000
	benchMaxWriters  = 10_000

	benchDefaultQueries  = 10_000
	benchDefaultErasures = 100
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
		Short: "Measure append, query and erase throughput and latency against raw JetStream",
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

--scenario query first fills the ledger exactly as the append scenario does
(and reports it the same way), waits until the read models have applied every
acknowledged event (the last receipt's index as MinIndex), then runs --queries
data-map reads (Client.DataMap: resolve the reference, read the map) of random
subjects that got events, from --writers concurrent readers, beside the raw
JetStream cost of fetching one stored log message by sequence (direct get on
the ledger's stream, same concurrency). --scenario erase fills the same way,
then erases --erasures distinct random subjects that got events
(SubjectService.EraseSubject, from --writers concurrent callers), checks that
each one's data map shows the erasure, and compares with one raw fsynced
JetStream publish (an erasure appends one fsynced entry).

The embedded piledger serves without authentication, as 'piledger serve
--insecure-no-auth' does: queries and erasures carry no credential and reads
are not recorded as accesses. Against --server, the events are appended with
the API key (--api-key-file or $PILEDGER_API_KEY), and queries and erasures
use a regulator's or admin's token (--token-file or $PILEDGER_TOKEN) with
--reason, which the server then records with every read.

Progress goes to stderr when it is a terminal. --output json prints one JSON
object for machines.`,
		Example: `  # one command, one machine: piledger and raw JetStream side by side
  piledger bench --duration 10s --writers 64

  # a fixed rate, a large population, batches of 20 events per call
  piledger bench --rate 20000 --subjects 1000000 --batch 20 --duration 30s

  # a test deployment, with its NATS for the baseline, as JSON
  PILEDGER_API_KEY=... piledger bench --server ledger-test:7070 --tls-ca ca.pem \
    --nats-url nats://nats-test:4222 --count 100000 --output json

  # data-map query latency: fill 200,000 events of 100,000 subjects, then query
  piledger bench --scenario query --subjects 100000 --count 200000 --queries 20000

  # erase latency: 100 erasures, 8 at a time
  piledger bench --scenario erase --subjects 10000 --count 50000 --erasures 100 --writers 8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := fl.validate(cmd); err != nil {
				return err
			}
			if err := fl.resolveCredentials(getenv); err != nil {
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
	f.StringVar(&fl.scenario, "scenario", "append", "what to measure: append (events/s and call latency), query (data-map latency after an append fill) or erase (erasure latency after an append fill)")
	f.IntVar(&fl.writers, "writers", 16, "concurrent writers; with --scenario query or erase, also the concurrent readers or erasers")
	f.Float64Var(&fl.rate, "rate", 0, "total events per second over all writers; 0 = as fast as possible")
	f.IntVar(&fl.subjects, "subjects", 10_000, "distinct data subjects, 10 to 10,000,000")
	f.DurationVar(&fl.duration, "duration", 10*time.Second, "how long to run (ignored with --count)")
	f.Int64Var(&fl.count, "count", 0, "run until this many events were sent, instead of --duration")
	f.IntVar(&fl.batch, "batch", 1, "events per AppendEvents call, 1 to 1000")
	f.StringVarP(&fl.output, "output", "o", "table", "output: table or json")
	f.StringVar(&fl.processor, "processor", "", "with --server: the processor id of every event (the one your API key is bound to); by default events come from a mix of five processors")
	f.Uint64Var(&fl.seed, "seed", 1, "seed of the event generator and of the subjects queried or erased (the same seed gives the same mix)")
	f.Int64Var(&fl.queries, "queries", benchDefaultQueries, "with --scenario query: data-map queries to run after the fill")
	f.IntVar(&fl.erasures, "erasures", benchDefaultErasures, "with --scenario erase: distinct subjects to erase after the fill (at most --subjects)")
	f.Lookup("token-file").Usage = "with --server and --scenario query or erase: file holding the regulator's or admin's token for the queries and erasures (or set $PILEDGER_TOKEN); the events are still appended with the API key"
	f.Lookup("reason").Usage = "with --token-file: why the bench reads and erases (a case or request reference), recorded by the server with every read"
	withEnv(cmd, getenv, "api-key-file", "token-file", "reason", "tls-ca", "tls-cert", "tls-key", "nats-url", "nats-creds", "nats-user", "output")
	completeWords(cmd, "output", "table", "json")
	completeWords(cmd, "scenario", "append", "query", "erase")
	return cmd
}

// validate checks the flags' values and combinations.
func (fl *benchFlags) validate(cmd *cobra.Command) error {
	changed := cmd.Flags().Changed
	var errs []string
	switch fl.scenario {
	case "append", "query", "erase":
	default:
		return usageError(fmt.Errorf("--scenario %q: want append, query or erase", fl.scenario))
	}
	if changed("queries") && fl.scenario != "query" {
		errs = append(errs, "--queries applies to --scenario query only")
	} else if fl.scenario == "query" && fl.queries < 1 {
		errs = append(errs, fmt.Sprintf("--queries %d: want 1 or more", fl.queries))
	}
	if changed("erasures") && fl.scenario != "erase" {
		errs = append(errs, "--erasures applies to --scenario erase only")
	} else if fl.scenario == "erase" && (fl.erasures < 1 || fl.erasures > fl.subjects) {
		errs = append(errs, fmt.Sprintf("--erasures %d: want 1 to --subjects (%d): each erasure takes a distinct subject", fl.erasures, fl.subjects))
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
	if fl.embedded && (fl.natsURL != "" || fl.conn.apiKeyFile != "" || fl.conn.tokenFile != "" || fl.conn.reason != "" || fl.conn.tls()) {
		errs = append(errs, "--nats-url, --api-key-file, --token-file, --reason and --tls-* apply to --server only")
	} else if fl.scenario == "append" && (fl.conn.tokenFile != "" || fl.conn.reason != "") {
		errs = append(errs, "--token-file and --reason apply to --scenario query and erase only (appends use the API key)")
	}
	if fl.natsURL == "" && (fl.natsCreds != "" || fl.natsUser != "") {
		errs = append(errs, "--nats-creds and --nats-user need --nats-url")
	}
	if fl.processor != "" && !ledger.IsIdentifier(fl.processor) {
		errs = append(errs, fmt.Sprintf("--processor %q: want an identifier of 1-128 characters from [a-z0-9._-]", fl.processor))
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

// resolveCredentials reads the credentials. The append scenario, and any
// scenario against the embedded stack, takes one as the other commands do.
// Query and erase against --server may take two: the API key the events are
// appended with, and the token of the regulator or admin who reads and
// erases.
func (fl *benchFlags) resolveCredentials(getenv func(string) string) error {
	if fl.scenario == "append" || fl.embedded {
		return fl.conn.resolve(getenv)
	}
	without := func(name string) func(string) string {
		return func(k string) string {
			if k == name {
				return ""
			}
			return getenv(k)
		}
	}
	key, tok := fl.conn, fl.conn
	key.tokenFile, tok.apiKeyFile = "", ""
	if err := key.resolve(without("PILEDGER_TOKEN")); err != nil {
		return err
	}
	if err := tok.resolve(without("PILEDGER_API_KEY")); err != nil {
		return err
	}
	fl.conn.apiKey, fl.conn.token = key.apiKey, tok.token
	if fl.conn.token != "" && strings.TrimSpace(fl.conn.reason) == "" {
		return usageError(errors.New("a token (--token-file or $PILEDGER_TOKEN) needs --reason: regulators and admins say why they read and erase people's records"))
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
	// Query and Erase are the measurement of --scenario query and erase,
	// after the fill reported in Piledger and Baselines.
	Query *queryResult `json:"query,omitempty"`
	Erase *eraseResult `json:"erase,omitempty"`
	Notes []string     `json:"notes,omitempty"`
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

// bench runs the scenario and prints the report. It returns an error (exit
// 1) after the report when calls failed or a check failed.
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

	// Query and erase read back what the fill wrote: the subjects that got
	// events, and the read models' view of them.
	var (
		written *subjectSet
		rd      *benchReader
	)
	if fl.scenario != "append" {
		written = newSubjectSet(fl.subjects)
		if rd, err = newBenchReader(fl, target, c, stack != nil); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, rd.close()) }()
	}

	var logBefore uint64
	if stack != nil {
		logBefore = stack.led.Size()
	}
	progress := newBenchProgress(stderr)
	res := runAppend(ctx, c, fl, progress, written)
	progress.stop()
	rep.Piledger = res.result()
	if ctx.Err() != nil {
		rep.Notes = append(rep.Notes, "interrupted: the figures cover the run until the interruption")
	}

	// Before the baselines, so that the projector does not compete with
	// them: the read models apply everything the fill wrote.
	var catchUp time.Duration
	filled := fl.scenario != "append" && ctx.Err() == nil && res.events.Load() > 0
	if filled {
		wait := newBenchProgress(stderr)
		wait.status("waiting for the read models to apply the fill")
		catchUp, err = rd.catchUp(ctx, res.lastIndex.Load(), written)
		wait.stop()
		switch {
		case err != nil && ctx.Err() != nil:
			filled = false
			rep.Notes = append(rep.Notes, fmt.Sprintf("interrupted while waiting for the read models: the %s scenario did not run", fl.scenario))
		case err != nil:
			return fmt.Errorf("waiting for the read models to apply the fill: %w%s", err, authHint(err))
		}
	} else if fl.scenario != "append" {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s scenario skipped: the fill recorded no event or was interrupted", fl.scenario))
	}

	// The raw baselines, with the size of a stored event.
	var (
		remoteNC *nats.Conn          // --nats-url, when it could be reached
		remoteJS jetstream.JetStream // on remoteNC
	)
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
		remoteNC, remoteJS = nc, js
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

	// The scenario's own measurement, after the fill and its baselines.
	if filled && ctx.Err() == nil {
		var rawJS jetstream.JetStream // holds the ledger's stream
		switch {
		case stack != nil:
			rawJS = stack.js
		case remoteJS != nil:
			rawJS = remoteJS
		}
		switch fl.scenario {
		case "query":
			rep.Query = runQueries(ctx, rd, fl, written, stderr)
			rep.Query.CatchUpSeconds = catchUp.Seconds()
			if rawJS == nil {
				rep.Notes = append(rep.Notes, "raw JetStream get baseline skipped: give --nats-url (the NATS server behind --server) to measure it")
			} else if b, err := rawGetBaseline(ctx, rawJS, fl.seed, fl.writers, rep.Query.Queries+rep.Query.Failed); err != nil {
				rep.Notes = append(rep.Notes, fmt.Sprintf("raw JetStream get baseline failed: %v", err))
			} else {
				rep.Query.Baseline = b.compare(rep.Query.LatencyMs)
			}
			rep.Notes = append(rep.Notes, rd.queryNote())
		case "erase":
			rep.Erase, err = runErasures(ctx, rd, fl, written, stderr)
			if err != nil {
				return err
			}
			rep.Erase.CatchUpSeconds = catchUp.Seconds()
			nc := remoteNC
			name, desc := "raw-jetstream-publish", "raw JetStream at --nats-url, one synchronous publish to a scratch stream (that server's sync settings), same concurrency"
			if stack != nil {
				var stop func()
				if nc, stop, err = startRawServer(true); err != nil {
					return err
				}
				defer stop()
				name, desc = "raw-jetstream-fsync-publish", "raw JetStream, one synchronous publish with fsync before the ack (an erasure appends one such entry), same concurrency"
			}
			if nc == nil {
				rep.Notes = append(rep.Notes, "raw JetStream publish baseline skipped: give --nats-url (the NATS server behind --server) to measure it")
			} else if b, err := rawPublishLatency(ctx, nc, name, desc, max(payload, 1), fl.writers, rep.Erase.Erasures+rep.Erase.Failed); err != nil {
				rep.Notes = append(rep.Notes, fmt.Sprintf("raw JetStream publish baseline failed: %v", err))
			} else {
				rep.Erase.Baseline = b.compare(rep.Erase.LatencyMs)
			}
			rep.Notes = append(rep.Notes, rd.eraseNote())
		}
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
	if q := rep.Query; q != nil && q.Failed > 0 {
		errs = append(errs, fmt.Errorf("%d of %d queries failed; first error: %s", q.Failed, q.Requested, q.FirstError))
	}
	if e := rep.Erase; e != nil {
		if e.Failed > 0 {
			errs = append(errs, fmt.Errorf("%d of %d erasures failed; first error: %s", e.Failed, e.Requested, e.FirstError))
		}
		if e.Verified != e.Erasures {
			errs = append(errs, fmt.Errorf("%d subjects were erased, but the data maps of %d show it", e.Erasures, e.Verified))
		}
		if e.Requested < int64(fl.erasures) {
			errs = append(errs, fmt.Errorf("--erasures %d: only %d subjects got events", fl.erasures, e.Requested))
		}
	}
	return errors.Join(errs...)
}

// appendRun is the state of the piledger run shared by its writers.
type appendRun struct {
	events, duplicates, calls, failedCalls, failedEvents atomic.Int64
	claimed                                              atomic.Int64
	lastIndex                                            atomic.Uint64 // the highest receipt index
	firstErr                                             atomic.Pointer[error]
	hist                                                 *hdrhistogram.Histogram
	elapsed                                              time.Duration
}

// runAppend drives the writers until the count or duration is reached or
// ctx ends. Calls in flight then complete (their context ignores ctx), so
// every acknowledged event is counted. The subjects of acknowledged events
// are added to written, unless it is nil.
func runAppend(ctx context.Context, c *client.Client, fl benchFlags, prog *benchProgress, written *subjectSet) *appendRun {
	run := &appendRun{hist: newHist()}
	prog.watch("events", &run.events, &run.failedEvents)
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
			gen := newBenchGen(fl.seed, w, fl.subjects, fl.processor)
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
				var last uint64
				for _, r := range rs {
					if r.Duplicate {
						run.duplicates.Add(1)
					}
					last = max(last, r.Index)
				}
				for old := run.lastIndex.Load(); last > old && !run.lastIndex.CompareAndSwap(old, last); old = run.lastIndex.Load() {
				}
				if written != nil {
					for _, s := range gen.picked {
						written.add(s)
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

// latencyOf returns the percentiles of h, a histogram of microseconds.
func latencyOf(h *hdrhistogram.Histogram) latencyMs {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return latencyMs{
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()),
	}
}

func (r *appendRun) result() piledgerResult {
	secs := r.elapsed.Seconds()
	out := piledgerResult{
		Events:        r.events.Load(),
		Duplicates:    r.duplicates.Load(),
		Calls:         r.calls.Load(),
		FailedCalls:   r.failedCalls.Load(),
		FailedEvents:  r.failedEvents.Load(),
		Seconds:       secs,
		CallLatencyMs: latencyOf(r.hist),
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
// projector, erasure, API) with its data in a temporary directory and its
// API on free loopback ports, without authentication.
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
	// Erasure receipts are signed as `piledger serve` signs them, with the
	// transparency log's key (the bench runs no transparency log: the name
	// is its own).
	signer, err := keys.LogSigner(ctx, "piledger-bench.invalid/log")
	if err != nil {
		return nil, err
	}
	// No api.Config.Auth: every caller may call every method, and reads are
	// not recorded as accesses (as `piledger serve --insecure-no-auth`).
	srv, err := api.New(api.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, led, logger,
		api.WithReadModels(store), api.WithErasure(led, keys, signer))
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
	if q := rep.Query; q != nil {
		fmt.Fprintf(w, "\nquery: %d data-map queries of random subjects among the %d that got events, %d readers; the read models applied the fill %.2fs after it ended\n\n",
			q.Requested, q.SubjectsWithEvents, q.Readers, q.CatchUpSeconds)
		if err := printLatencyTable(w, "queries", "piledger DataMap (SDK)", q.Queries, q.QueriesPerSec, q.LatencyMs, q.Baseline); err != nil {
			return err
		}
		fmt.Fprintf(w, "\n%d answered in %.2fs, %d failed; %.1f holdings per data map\n", q.Queries, q.Seconds, q.Failed, q.MeanHoldings)
		printLatencyRatio(w, q.Baseline)
		if q.FirstError != "" {
			fmt.Fprintf(w, "first query error: %s\n", q.FirstError)
		}
	}
	if e := rep.Erase; e != nil {
		fmt.Fprintf(w, "\nerase: %d distinct random subjects among the %d that got events, %d callers; the read models applied the fill %.2fs after it ended\n\n",
			e.Requested, e.SubjectsWithEvents, e.Callers, e.CatchUpSeconds)
		if err := printLatencyTable(w, "erasures", "piledger EraseSubject", e.Erasures, e.ErasuresPerSec, e.LatencyMs, e.Baseline); err != nil {
			return err
		}
		fmt.Fprintf(w, "\n%d receipts in %.2fs, %d failed; %.1f events per erased subject (mean)\n", e.Erasures, e.Seconds, e.Failed, e.EventsPerErasedSubject)
		verdict := "as receipted"
		if e.Verified != e.Erasures {
			verdict = fmt.Sprintf("BUT %d were receipted", e.Erasures)
		}
		fmt.Fprintf(w, "erasure check: %d erased subjects' data maps show the erasure, %s\n", e.Verified, verdict)
		printLatencyRatio(w, e.Baseline)
		if e.FirstError != "" {
			fmt.Fprintf(w, "first erasure error: %s\n", e.FirstError)
		}
		if e.VerifyError != "" {
			fmt.Fprintf(w, "first check error: %s\n", e.VerifyError)
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if p.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", p.FirstError)
	}
	return nil
}

// printLatencyTable prints piledger's operations (n of unit at perSec) and
// the baseline b, if any, with their latencies.
func printLatencyTable(w io.Writer, unit, self string, n int64, perSec float64, l latencyMs, b *latencyBaseline) error {
	width := len(self)
	if b != nil {
		width = max(width, len(b.Name))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\t%s\t%s/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\t\n", width, "", unit, unit)
	row := func(name string, n int64, perSec float64, l latencyMs) {
		fmt.Fprintf(tw, "%-*s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", width, name, n, perSec, l.P50, l.P90, l.P99, l.P999, l.Max)
	}
	row(self, n, perSec, l)
	if b != nil {
		row(b.Name, b.Ops, b.OpsPerSec, b.LatencyMs)
	}
	return tw.Flush()
}

// printLatencyRatio prints how piledger's latency compares with b's.
func printLatencyRatio(w io.Writer, b *latencyBaseline) {
	if b == nil {
		return
	}
	fmt.Fprintf(w, "piledger p50 ÷ %s p50 = %.2f×, p99 ÷ p99 = %.2f×   (%s", b.Name, b.RatioP50, b.RatioP99, b.Description)
	if b.MeanBytes > 0 {
		fmt.Fprintf(w, ", %d bytes per message", b.MeanBytes)
	}
	fmt.Fprintln(w, "; lower is better)")
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

// watch prints the count of done (a number of unit) and failed, and the
// rate, once a second.
func (p *benchProgress) watch(unit string, done, failed *atomic.Int64) {
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
				n := done.Load()
				fmt.Fprintf(p.w, "\r\033[K%6.1fs  %d %s  %d/s  %d failed", time.Since(start).Seconds(), n, unit, n-last, failed.Load())
				last = n
			}
		}
	})
}

// status prints msg, with the time since, until stop.
func (p *benchProgress) status(msg string) {
	if !p.active {
		return
	}
	start := time.Now()
	p.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			fmt.Fprintf(p.w, "\r\033[K%6.1fs  %s", time.Since(start).Seconds(), msg)
			select {
			case <-p.done:
				fmt.Fprint(p.w, "\r\033[K")
				return
			case <-t.C:
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
