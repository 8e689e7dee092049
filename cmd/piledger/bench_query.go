package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/api/client"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Streams of the seeded random generators, apart from the writers' (0 up to
// benchMaxWriters): readers are queryStream+r, the erasure draw eraseStream,
// the raw baselines rawReadStream+r.
const (
	queryStream   = 1 << 32
	eraseStream   = 2 << 32
	rawReadStream = 3 << 32
)

// queryResult is the measurement of --scenario query.
type queryResult struct {
	// Requested is --queries; Queries counts those answered, Failed the
	// others.
	Requested  int64  `json:"requested"`
	Queries    int64  `json:"queries"`
	Failed     int64  `json:"failed"`
	FirstError string `json:"firstError,omitempty"`
	Readers    int    `json:"readers"`
	// SubjectsWithEvents is the population queried: the subjects the fill
	// recorded events of.
	SubjectsWithEvents int `json:"subjectsWithEvents"`
	// CatchUpSeconds is how long the read models took, after the fill, to
	// apply its last event (the first read with the last receipt's index as
	// MinIndex); not part of the latencies.
	CatchUpSeconds float64 `json:"catchUpSeconds"`
	Seconds        float64 `json:"seconds"`
	QueriesPerSec  float64 `json:"queriesPerSecond"`
	// MeanHoldings is the mean number of holdings per data map returned.
	MeanHoldings float64 `json:"meanHoldings"`
	// LatencyMs are percentiles of one Client.DataMap call (ResolveSubject
	// and GetDataMap) that succeeded.
	LatencyMs latencyMs        `json:"latencyMs"`
	Baseline  *latencyBaseline `json:"baseline,omitempty"`
}

// eraseResult is the measurement of --scenario erase.
type eraseResult struct {
	// Requested is the number of subjects drawn: --erasures, or fewer when
	// fewer subjects got events. Erasures counts the signed receipts.
	Requested          int64   `json:"requested"`
	Erasures           int64   `json:"erasures"`
	Failed             int64   `json:"failed"`
	FirstError         string  `json:"firstError,omitempty"`
	Callers            int     `json:"callers"`
	SubjectsWithEvents int     `json:"subjectsWithEvents"`
	CatchUpSeconds     float64 `json:"catchUpSeconds"`
	Seconds            float64 `json:"seconds"`
	ErasuresPerSec     float64 `json:"erasuresPerSecond"`
	// LatencyMs are percentiles of one EraseSubject call that succeeded.
	LatencyMs latencyMs `json:"latencyMs"`
	// Verified counts the erased subjects whose data map, read afterwards,
	// shows the erasure; VerifyError is the first failure to read one.
	Verified    int64  `json:"verified"`
	VerifyError string `json:"verifyError,omitempty"`
	// EventsPerErasedSubject is the mean number of log entries an erasure
	// made unreadable, from the erasure records of the verified data maps.
	EventsPerErasedSubject float64          `json:"eventsPerErasedSubject"`
	Baseline               *latencyBaseline `json:"baseline,omitempty"`
}

// latencyBaseline is a raw JetStream operation timed one at a time from
// Concurrency callers, as piledger's queries or erasures are.
type latencyBaseline struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Ops         int64   `json:"ops"`
	Failed      int64   `json:"failed"`
	Concurrency int     `json:"concurrency"`
	MeanBytes   int     `json:"meanBytes"`
	Seconds     float64 `json:"seconds"`
	OpsPerSec   float64 `json:"opsPerSecond"`
	// LatencyMs are percentiles of one operation.
	LatencyMs latencyMs `json:"latencyMs"`
	// RatioP50 is piledger's p50 latency divided by this one's: how many
	// times longer piledger takes (lower is better). RatioP99 the same at
	// p99.
	RatioP50 float64 `json:"ratioP50"`
	RatioP99 float64 `json:"ratioP99"`
}

// compare sets the ratios of piledger's latencies l to b's and returns b.
func (b *latencyBaseline) compare(l latencyMs) *latencyBaseline {
	if b.LatencyMs.P50 > 0 {
		b.RatioP50 = l.P50 / b.LatencyMs.P50
	}
	if b.LatencyMs.P99 > 0 {
		b.RatioP99 = l.P99 / b.LatencyMs.P99
	}
	return b
}

// subjectSet is a set of subject numbers, safe for concurrent adds.
type subjectSet struct{ bits []atomic.Uint64 }

func newSubjectSet(n int) *subjectSet {
	return &subjectSet{bits: make([]atomic.Uint64, (n+63)/64)}
}

func (s *subjectSet) add(i int) { s.bits[i/64].Or(1 << (i % 64)) }

// members returns the subjects in the set, in ascending order, in a new
// slice.
func (s *subjectSet) members() []int32 {
	var out []int32
	for w := range s.bits {
		b := s.bits[w].Load()
		for i := range 64 {
			if b&(1<<i) != 0 {
				out = append(out, int32(w*64+i))
			}
		}
	}
	return out
}

// benchReader makes the reads and erasures of --scenario query and erase:
// data maps through the Go SDK, and what the SDK does not offer
// (ResolveSubject alone, EraseSubject, GetDataMap by pseudonym) through the
// generated gRPC client.
type benchReader struct {
	sdk      *client.Client
	ownSDK   bool // sdk is not the fill's client: close it
	conn     io.Closer
	subjects piledgerv1.SubjectServiceClient
	embedded bool
	token    bool // a regulator's or admin's token is sent
}

// newBenchReader connects to target for the reads. The embedded stack needs
// no credential; a --server takes the token and reason of the flags (the
// fill's client, with its API key, reads when no token is given: against a
// server without authentication).
func newBenchReader(fl benchFlags, target string, fill *client.Client, embedded bool) (*benchReader, error) {
	r := &benchReader{embedded: embedded, sdk: fill}
	cf := connFlags{server: target}
	if !embedded {
		cf = fl.conn
		cf.server, cf.apiKey = target, "" // the API key is the emitter's, for the fill
		r.token = cf.token != ""
		if cf.token != "" || cf.reason != "" {
			opts := cf.sdkOptions()
			if cf.token != "" {
				opts = append(opts, client.WithToken(cf.token))
			}
			if cf.reason != "" {
				opts = append(opts, client.WithReason(cf.reason))
			}
			c, err := client.New(target, append(opts, client.WithUserAgent("piledger-bench"))...)
			if err != nil {
				return nil, usageError(err)
			}
			r.sdk, r.ownSDK = c, true
		}
	}
	_, closer, err := cf.dial()
	if err != nil {
		if r.ownSDK {
			_ = r.sdk.Close()
		}
		return nil, err
	}
	cc, ok := closer.(grpc.ClientConnInterface)
	if !ok {
		_ = closer.Close()
		return nil, fmt.Errorf("bench: the connection (%T) cannot make calls", closer)
	}
	r.conn, r.subjects = closer, piledgerv1.NewSubjectServiceClient(cc)
	return r, nil
}

func (r *benchReader) close() error {
	err := r.conn.Close()
	if r.ownSDK {
		err = errors.Join(err, r.sdk.Close())
	}
	return err
}

// catchUp waits until the read models have applied the log entry at index
// (the fill's last receipt), reading the data map of a subject of written
// with index as MinIndex until the server answers, and returns how long it
// took.
func (r *benchReader) catchUp(ctx context.Context, index uint64, written *subjectSet) (time.Duration, error) {
	members := written.members()
	if len(members) == 0 {
		return 0, errors.New("no subject got an event")
	}
	ref := benchSubject(int(members[0]))
	start := time.Now()
	for {
		_, err := r.sdk.DataMap(ctx, ref, client.MinIndex(index))
		if err == nil {
			return time.Since(start), nil
		}
		// The SDK retries UNAVAILABLE (read models behind) for a minute
		// per call; a large fill may need longer.
		if !errors.Is(err, client.ErrUnavailable) || ctx.Err() != nil {
			return 0, err
		}
	}
}

// authHint returns advice for an error that says the reads or erasures
// lack the credentials, and "" for any other error.
func authHint(err error) string {
	if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated || errors.Is(err, client.ErrPermissionDenied) {
		return " (reading data maps needs a regulator's or admin's token, erasing an admin's: --token-file or $PILEDGER_TOKEN, with --reason)"
	}
	return ""
}

// queryNote says what a query is and how it authenticates.
func (r *benchReader) queryNote() string {
	const what = "each query is Client.DataMap (Go SDK): ResolveSubject, then GetDataMap by pseudonym — two gRPC calls, timed together"
	switch {
	case r.embedded:
		return what + "; the embedded piledger serves without authentication (as serve --insecure-no-auth): the queries carry no credential and are not recorded, whereas a regulator's or admin's read of a server with authentication also appends one access event to the log"
	case r.token:
		return what + ", with the token and --reason; the server records every read as an access event in the log, which the latency includes"
	default:
		return what + ", without a token: only a server without authentication (--insecure-no-auth) answers them"
	}
}

// eraseNote says what an erasure is and how it authenticates.
func (r *benchReader) eraseNote() string {
	const what = "each erasure is one SubjectService.EraseSubject call (generated gRPC client; the SDK has no erase), the subject's pseudonym resolved beforehand and not timed: the fsynced erasure entry, the key destruction, the wait for the read models to apply the entry, the signed receipt"
	switch {
	case r.embedded:
		return what + "; the embedded piledger serves without authentication (as serve --insecure-no-auth): the erasures carry no credential"
	case r.token:
		return what + "; with the admin's token and --reason; the verification reads of the erased data maps are recorded as accesses"
	default:
		return what + ", without a token: only a server without authentication (--insecure-no-auth) accepts them"
	}
}

// opsRun is a run of timed operations from concurrent callers.
type opsRun struct {
	ok, failed, claimed atomic.Int64
	firstErr            atomic.Pointer[error]
	hist                *hdrhistogram.Histogram
	elapsed             time.Duration
}

// runOps calls op n times in all from workers goroutines, op i of worker w
// as op(ctx, w, i), each timed on its own; the latencies of those that
// succeed go to the histogram. It stops claiming operations when ctx ends;
// those in flight complete (their context ignores ctx). prog, unless nil,
// shows the progress counted in unit.
func runOps(ctx context.Context, workers int, n int64, prog *benchProgress, unit string, op func(ctx context.Context, w int, i int64) error) *opsRun {
	run := &opsRun{hist: newHist()}
	if prog != nil {
		prog.watch(unit, &run.ok, &run.failed)
	}
	hists := make([]*hdrhistogram.Histogram, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		hists[w] = newHist()
		wg.Go(func() {
			for ctx.Err() == nil {
				i := run.claimed.Add(1) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				err := op(context.WithoutCancel(ctx), w, i)
				d := time.Since(t0)
				if err != nil {
					run.failed.Add(1)
					run.firstErr.CompareAndSwap(nil, &err)
					continue
				}
				_ = hists[w].RecordValue(max(1, d.Microseconds()))
				run.ok.Add(1)
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

func (r *opsRun) perSecond() float64 {
	if s := r.elapsed.Seconds(); s > 0 {
		return float64(r.ok.Load()) / s
	}
	return 0
}

func (r *opsRun) firstError() string {
	if p := r.firstErr.Load(); p != nil {
		return (*p).Error()
	}
	return ""
}

// seeded returns n generators seeded by seed, on streams base, base+1, ...
func seeded(seed uint64, base uint64, n int) []*mrand.Rand {
	out := make([]*mrand.Rand, n)
	for i := range out {
		out[i] = mrand.New(mrand.NewPCG(seed, base+uint64(i)))
	}
	return out
}

// runQueries reads --queries data maps of random subjects of written from
// --writers readers.
func runQueries(ctx context.Context, rd *benchReader, fl benchFlags, written *subjectSet, stderr io.Writer) *queryResult {
	members := written.members()
	rngs := seeded(fl.seed, queryStream, fl.writers)
	var holdings atomic.Int64
	prog := newBenchProgress(stderr)
	run := runOps(ctx, fl.writers, fl.queries, prog, "queries", func(ctx context.Context, w int, _ int64) error {
		ref := benchSubject(int(members[rngs[w].IntN(len(members))]))
		dm, err := rd.sdk.DataMap(ctx, ref)
		if err != nil {
			return err
		}
		holdings.Add(int64(len(dm.GetHoldings())))
		return nil
	})
	prog.stop()
	q := &queryResult{
		Requested: fl.queries, Queries: run.ok.Load(), Failed: run.failed.Load(), FirstError: run.firstError(),
		Readers: fl.writers, SubjectsWithEvents: len(members), Seconds: run.elapsed.Seconds(),
		QueriesPerSec: run.perSecond(), LatencyMs: latencyOf(run.hist),
	}
	if q.Queries > 0 {
		q.MeanHoldings = float64(holdings.Load()) / float64(q.Queries)
	}
	return q
}

// runErasures erases --erasures distinct random subjects of written from
// --writers callers, then reads each erased subject's data map to check that
// it shows the erasure.
func runErasures(ctx context.Context, rd *benchReader, fl benchFlags, written *subjectSet, stderr io.Writer) (*eraseResult, error) {
	members := written.members()
	k := min(fl.erasures, len(members))
	rng := seeded(fl.seed, eraseStream, 1)[0]
	for i := range k { // a partial Fisher-Yates shuffle: members[:k] are the draw
		j := i + rng.IntN(len(members)-i)
		members[i], members[j] = members[j], members[i]
	}
	// The pseudonyms, resolved before and apart from the timed erasures.
	pseudonyms := make([]string, k)
	for i, s := range members[:k] {
		callCtx, cancel := context.WithTimeout(ctx, client.DefaultCallTimeout)
		res, err := rd.subjects.ResolveSubject(callCtx, &piledgerv1.ResolveSubjectRequest{SubjectRef: benchSubject(int(s))})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("resolve the subjects to erase: %w%s", err, authHint(err))
		}
		pseudonyms[i] = res.GetPseudonym()
	}

	erased := make([]bool, k)
	prog := newBenchProgress(stderr)
	run := runOps(ctx, min(fl.writers, k), int64(k), prog, "erasures", func(ctx context.Context, _ int, i int64) error {
		callCtx, cancel := context.WithTimeout(ctx, client.DefaultCallTimeout)
		defer cancel()
		r, err := rd.subjects.EraseSubject(callCtx, &piledgerv1.EraseSubjectRequest{Name: "subjects/" + pseudonyms[i]})
		if err != nil {
			return err
		}
		if r.GetSignedNote() == "" {
			return errors.New("the erasure receipt is not signed")
		}
		erased[i] = true
		return nil
	})
	prog.stop()
	e := &eraseResult{
		Requested: int64(k), Erasures: run.ok.Load(), Failed: run.failed.Load(), FirstError: run.firstError(),
		Callers: min(fl.writers, k), SubjectsWithEvents: len(members), Seconds: run.elapsed.Seconds(),
		ErasuresPerSec: run.perSecond(), LatencyMs: latencyOf(run.hist),
	}

	// Every erased subject's data map says so, with the entries it made
	// unreadable.
	var events uint64
	for i, ok := range erased {
		if !ok {
			continue
		}
		callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), client.DefaultCallTimeout)
		dm, err := rd.subjects.GetDataMap(callCtx, &piledgerv1.GetDataMapRequest{Name: "subjects/" + pseudonyms[i] + "/datamap"})
		cancel()
		switch {
		case err != nil:
			if e.VerifyError == "" {
				e.VerifyError = err.Error()
			}
		case len(dm.GetErasures()) == 0:
			if e.VerifyError == "" {
				e.VerifyError = "an erased subject's data map shows no erasure"
			}
		default:
			e.Verified++
			events += dm.GetErasures()[len(dm.GetErasures())-1].GetEventCount()
		}
	}
	if e.Verified > 0 {
		e.EventsPerErasedSubject = float64(events) / float64(e.Verified)
	}
	return e, nil
}

// rawGetBaseline fetches n messages of the ledger's stream at random
// sequences, one call at a time from workers callers (direct get when the
// stream allows it, as the ledger's does).
func rawGetBaseline(ctx context.Context, js jetstream.JetStream, seed uint64, workers int, n int64) (*latencyBaseline, error) {
	if n <= 0 {
		return nil, errors.New("no query was made")
	}
	stream, err := js.Stream(ctx, ledger.DefaultStreamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", ledger.DefaultStreamName, err)
	}
	info := stream.CachedInfo()
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 || last < first {
		return nil, fmt.Errorf("stream %s is empty", ledger.DefaultStreamName)
	}
	how := "JetStream API get (STREAM.MSG.GET)"
	if info.Config.AllowDirect {
		how = "direct get"
	}
	workers = int(min(int64(workers), n))
	rngs := seeded(seed, rawReadStream, workers)
	var bytes atomic.Int64
	run := runOps(ctx, workers, n, nil, "", func(ctx context.Context, w int, _ int64) error {
		for try := 0; ; try++ {
			msg, err := stream.GetMsg(ctx, first+rngs[w].Uint64N(last-first+1))
			if errors.Is(err, jetstream.ErrMsgNotFound) && try < 10 {
				continue // a gap in the stream
			}
			if err != nil {
				return err
			}
			bytes.Add(int64(len(msg.Data)))
			return nil
		}
	})
	if run.ok.Load() == 0 {
		return nil, fmt.Errorf("every get failed: %s", run.firstError())
	}
	b := &latencyBaseline{
		Name: "raw-jetstream-get",
		Description: fmt.Sprintf("raw JetStream, one %s of the ledger's stream %s by random sequence (%d to %d; one message is a log block), same concurrency",
			how, ledger.DefaultStreamName, first, last),
		Ops: run.ok.Load(), Failed: run.failed.Load(), Concurrency: workers,
		Seconds: run.elapsed.Seconds(), OpsPerSec: run.perSecond(), LatencyMs: latencyOf(run.hist),
	}
	b.MeanBytes = int(bytes.Load() / b.Ops)
	return b, nil
}

// rawPublishLatency publishes n messages of payloadBytes random bytes to a
// scratch stream over nc, each synchronously (waiting for its ack), from
// workers callers. The scratch stream is deleted afterwards.
func rawPublishLatency(ctx context.Context, nc *nats.Conn, name, desc string, payloadBytes, workers int, n int64) (*latencyBaseline, error) {
	if n <= 0 {
		return nil, errors.New("no erasure was made")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	_ = js.DeleteStream(ctx, rawStream) // left over from an interrupted run
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: rawStream, Subjects: []string{rawSubject}, Storage: jetstream.FileStorage}); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", rawStream, err)
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), rawStream) }()
	payload := make([]byte, payloadBytes)
	_, _ = rand.Read(payload)
	workers = int(min(int64(workers), n))
	run := runOps(ctx, workers, n, nil, "", func(ctx context.Context, _ int, _ int64) error {
		_, err := js.Publish(ctx, rawSubject, payload)
		return err
	})
	if run.ok.Load() == 0 {
		return nil, fmt.Errorf("every publish failed: %s", run.firstError())
	}
	return &latencyBaseline{
		Name: name, Description: desc, Ops: run.ok.Load(), Failed: run.failed.Load(), Concurrency: workers,
		MeanBytes: payloadBytes, Seconds: run.elapsed.Seconds(), OpsPerSec: run.perSecond(), LatencyMs: latencyOf(run.hist),
	}, nil
}
