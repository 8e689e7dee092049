package projections_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	"github.com/piledger/piledger/projections/rules"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The read-model benchmarks build one log (a mix of camera captures,
// accesses, provisions, destructions, epidemic data, consents and transfers
// abroad over many subjects) and measure, in the same run:
//
//   - BenchmarkProjector: a full rebuild of the read models from that log by
//     a node with cold caches (fresh keyring index and ledger instance), in
//     events/s, against the raw ordered-consumer read of the same stream
//     (x-raw), and the rebuild time;
//   - BenchmarkDataMap: data-map queries of random subjects, p50 and p99.
//
//	go test ./projections -run '^$' -bench . -benchtime 1x
//
// The size is set by PILEDGER_BENCH_SUBJECTS and PILEDGER_BENCH_EVENTS
// (default 10,000 and 100,000), the rebuilding node's key cache by
// PILEDGER_BENCH_KEY_CACHE (default crypto.DefaultKeyCacheSize); the
// full-size run is
//
//	PILEDGER_BENCH_SUBJECTS=1000000 PILEDGER_BENCH_EVENTS=10000000 \
//	  go test ./projections -run '^$' -bench . -benchtime 1x -timeout 6h

type benchLog struct {
	s          *stack
	dir        string
	subjects   int
	events     uint64
	pseudonyms []string
	store      *projections.Store // projected, for the query benchmarks
	closers    []io.Closer        // what store needs, closed with it
	rawRate    float64
}

var (
	benchOnce    sync.Once
	benchFixture *benchLog
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchEvent is event j of a subject: a fixed cycle over the operations.
func benchEvent(r string, j int) *piledgerv1.Event {
	d := float64(j % 300)
	switch j % 10 {
	case 0:
		return cameraFace(r, "city-police", d)
	case 1, 3:
		return policeAccess(r, "city-police", d)
	case 2:
		return provide(r, "city-police", "district-office", d)
	case 4:
		return destroy(r, "city-police", d+40, "face")
	case 5:
		return epidemicCollect(r, "health-commission", d)
	case 6:
		return consent(r, "shop-42", piledgerv1.Operation_OPERATION_CONSENT_GRANTED, d)
	case 7:
		return marketingCollect(r, "shop-42", d)
	case 8:
		return consent(r, "shop-42", piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, d)
	default:
		return transferAbroad(r, "shop-42", d)
	}
}

// fixture builds the benchmark log once per run and projects it once.
func fixture(b *testing.B) *benchLog {
	benchOnce.Do(func() {
		subjects := envInt("PILEDGER_BENCH_SUBJECTS", 10_000)
		events := envInt("PILEDGER_BENCH_EVENTS", 100_000)
		dir, err := os.MkdirTemp("", "piledger-bench-")
		if err != nil {
			b.Fatal(err)
		}
		// The log outlives this benchmark: TestMain stops it (stopFixture).
		s := newStack(b, filepath.Join(dir, "node"))
		f := &benchLog{s: s, subjects: subjects, dir: dir}
		start := time.Now()
		// 8 appenders of 64-event batches: blocks of up to 256 events, as
		// concurrent emitters produce them.
		const appenders, batch = 8, 64
		var wg sync.WaitGroup
		for w := range appenders {
			wg.Go(func() {
				var evs []*piledgerv1.Event
				for k := w; k < events; k += appenders {
					evs = append(evs, benchEvent(ref("bench", k%subjects), k/subjects))
					if len(evs) == batch || k+appenders >= events {
						if _, err := s.led.Append(context.Background(), evs); err != nil {
							b.Error(err)
							return
						}
						evs = evs[:0]
					}
				}
			})
		}
		wg.Wait()
		f.events = s.led.Size()
		for i := range subjects {
			f.pseudonyms = append(f.pseudonyms, s.pseudonym(ref("bench", i)))
		}
		b.Logf("log: %d events of %d subjects appended in %s", f.events, subjects, time.Since(start).Round(time.Millisecond))
		f.rawRate = rawReadRate(b, s.js, f.events)
		benchFixture = f
	})
	if benchFixture == nil || benchFixture.events == 0 {
		b.Fatal("benchmark log not built")
	}
	benchFixture.s.t = b
	return benchFixture
}

// waitAll waits until st has applied the first size log entries, however
// long that takes.
func waitAll(b *testing.B, st *projections.Store, size uint64) {
	for st.Position().Size < size {
		if err := st.Wait(context.Background(), size-1); err != nil && !errors.Is(err, projections.ErrBehind) {
			b.Fatal(err)
		}
	}
}

// closeStore closes the projected store of the query benchmarks.
func (f *benchLog) closeStore() {
	for _, c := range f.closers {
		c.Close()
	}
	f.store, f.closers = nil, nil
}

// stopFixture stops the benchmark log, if one was built, and removes it.
func stopFixture() {
	if benchFixture != nil {
		benchFixture.closeStore()
		benchFixture.s.stop()
		os.RemoveAll(benchFixture.dir)
	}
}

// rawReadRate reads the whole stream with an ordered consumer, doing
// nothing with the messages, and returns events/s.
func rawReadRate(b *testing.B, js jetstream.JetStream, events uint64) float64 {
	ctx := context.Background()
	stream, err := js.Stream(ctx, ledger.DefaultStreamName)
	if err != nil {
		b.Fatal(err)
	}
	last := stream.CachedInfo().State.LastSeq
	start := time.Now()
	cons, err := js.OrderedConsumer(ctx, ledger.DefaultStreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		b.Fatal(err)
	}
	var bytes int
	for {
		msg, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(msg.Data())
		meta, err := msg.Metadata()
		if err != nil {
			b.Fatal(err)
		}
		if meta.Sequence.Stream == last {
			break
		}
	}
	it.Stop()
	elapsed := time.Since(start)
	b.Logf("raw ordered consumer: %d blocks, %.1f MB, %d events in %s", last, float64(bytes)/1e6, events, elapsed.Round(time.Millisecond))
	return float64(events) / elapsed.Seconds()
}

// BenchmarkProjector rebuilds the read models from the whole log on a node
// with cold caches: a fresh keyring index (keys unwrapped on first use) and
// a fresh ledger instance, with the default rule pack and with no rules
// (the cost of evaluating the rules is the difference).
func BenchmarkProjector(b *testing.B) {
	b.Run("rules=default", func(b *testing.B) { benchProjector(b, rules.Default()) })
	b.Run("rules=none", func(b *testing.B) { benchProjector(b, noRules(b)) })
}

// noRules is the default pack with every rule disabled.
func noRules(tb testing.TB) *rules.Policy {
	tb.Helper()
	y := "policy: none\nversion: \"1\"\nrules:\n"
	for _, r := range rules.Default().Rules() {
		y += "  - name: " + r.Name + "\n    disabled: true\n"
	}
	p, err := rules.Parse("none.yaml", []byte(y))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func benchProjector(b *testing.B, policy *rules.Policy) {
	f := fixture(b)
	ctx := context.Background()
	var elapsed time.Duration
	runs := 0
	for b.Loop() {
		b.StopTimer()
		// Under the fixture's directory: the last rebuild outlives this
		// benchmark.
		dir, err := os.MkdirTemp(f.dir, "rebuild-")
		if err != nil {
			b.Fatal(err)
		}
		kek, err := crypto.OpenLocalKEK(filepath.Join(f.s.dir, "kek"))
		if err != nil {
			b.Fatal(err)
		}
		keys, err := crypto.OpenKeyring(ctx, f.s.js, kek, crypto.KeyringConfig{
			IndexDir:  filepath.Join(dir, "keyring"),
			CacheSize: envInt("PILEDGER_BENCH_KEY_CACHE", crypto.DefaultKeyCacheSize),
		})
		if err != nil {
			b.Fatal(err)
		}
		led, err := ledger.Open(ctx, f.s.js, keys, ledger.Config{IndexDir: filepath.Join(dir, "index")})
		if err != nil {
			b.Fatal(err)
		}
		st, err := projections.Open(projections.Config{Dir: filepath.Join(dir, "projections"), Now: f.s.clock.now, Policy: policy}, led, keys)
		if err != nil {
			b.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- st.Run(runCtx) }()
		waitAll(b, st, f.events)
		elapsed += time.Since(start)
		runs++
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if c := st.Counts(); c.Applied+c.Duplicates+c.Shredded+c.Ignored != f.events {
			b.Fatalf("counts %+v for %d events", c, f.events)
		}
		// Keep the last rebuild for the query benchmarks.
		f.closeStore()
		f.store, f.closers = st, []io.Closer{st, led, keys}
		b.StartTimer()
	}
	rate := float64(f.events) * float64(runs) / elapsed.Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(f.rawRate, "raw-events/s")
	b.ReportMetric(rate/f.rawRate, "x-raw")
	b.ReportMetric(elapsed.Seconds()/float64(runs), "rebuild-s")
	if f.store != nil {
		b.ReportMetric(float64(f.store.Counts().Findings), "findings")
	}
}

// BenchmarkDataMap answers data-map queries for random subjects of the
// projected benchmark log: PILEDGER_BENCH_QUERIES (default 20,000) per
// iteration, after a warm-up, one at a time; p50 and p99 are per query.
func BenchmarkDataMap(b *testing.B) {
	f := fixture(b)
	if f.store == nil { // BenchmarkProjector did not run
		f.store = f.s.startProjector(projections.Config{Dir: filepath.Join(f.s.dir, "projections")})
		waitAll(b, f.store, f.events)
	}
	ctx := context.Background()
	// Warm up: a steady-state server has its keys and blocks cached.
	for i := range min(len(f.pseudonyms), 20_000) {
		if _, err := f.store.DataMap(ctx, f.pseudonyms[i], nil); err != nil {
			b.Fatal(err)
		}
	}
	queries := envInt("PILEDGER_BENCH_QUERIES", 20_000)
	var lat []time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	holdings := 0
	var total time.Duration
	for b.Loop() {
		for range queries {
			p := f.pseudonyms[rng.IntN(len(f.pseudonyms))]
			t0 := time.Now()
			dm, err := f.store.DataMap(ctx, p, nil)
			d := time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, d)
			total += d
			holdings += len(dm.GetHoldings())
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)]) / float64(time.Microsecond) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(len(lat))/total.Seconds(), "queries/s")
	b.ReportMetric(float64(holdings)/float64(len(lat)), "holdings/query")
}
