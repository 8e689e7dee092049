package ledger_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The append benchmarks measure the whole path — validation, pseudonym,
// encryption, blocks, JetStream with fsync before every acknowledgement —
// and report it against raw JetStream publishing of the same envelope bytes
// measured in the same run:
//
//	go test ./ledger -run '^$' -bench 'Append|Raw' -benchtime 5s
//
// Metrics: events/s, p50-ms and p99-ms per Append call, cpu-us/event (CPU
// time of the whole process per event), and x-raw-async, the ratio to
// one-message-per-event async publishing with the default (2 min) sync
// interval, which is JetStream's ceiling without durability (x-raw-fsync for
// first contact: the same with fsync before every acknowledgement).

const benchSubjects = 10_000

// benchRefs are the subjects' references, built once so that formatting
// them is not counted as append work.
var benchRefs = func() []string {
	refs := make([]string, benchSubjects)
	for i := range refs {
		refs[i] = fmt.Sprintf("resident-%06d", i)
	}
	return refs
}()

func benchRef(i int) string { return benchRefs[i%benchSubjects] }

func BenchmarkAppend(b *testing.B) {
	for _, callers := range []int{1, 16, 64, 128, 512} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			n := startNode(b, filepath.Join(b.TempDir(), "node"))
			// Create every subject's key first: a steady-state ledger
			// mostly sees subjects it already knows.
			ps := make([]string, benchSubjects)
			for i := range ps {
				ps[i] = n.keys.Pseudonym(benchRef(i))
			}
			for chunk := range slices.Chunk(ps, 1000) {
				if _, err := n.keys.SealingKeys(context.Background(), chunk); err != nil {
					b.Fatal(err)
				}
			}
			raw := rawPublishRate(b, false)
			rate := driveAppends(b, n, callers, 1, func(i int) *piledgerv1.Event { return collectFace(benchRef(i)) })
			b.ReportMetric(rate/raw, "x-raw-async")
		})
	}
}

// BenchmarkAppendFirstContact appends events of subjects the ledger has
// never seen, so every event also creates its subject's key: a camera at a
// busy gate. Callers × events per call; the baseline is raw JetStream with
// fsync before every acknowledgement, one message per event (what storing
// one key message per new subject would cost without group commit).
func BenchmarkAppendFirstContact(b *testing.B) {
	for _, shape := range []struct{ callers, batch int }{{64, 1}, {8, 64}} {
		b.Run(fmt.Sprintf("callers=%d/batch=%d", shape.callers, shape.batch), func(b *testing.B) {
			n := startNode(b, filepath.Join(b.TempDir(), "node"))
			raw := rawPublishRate(b, true)
			refs := make([]string, b.N)
			for i := range refs {
				refs[i] = fmt.Sprintf("visitor-%d-%d", b.N, i)
			}
			rate := driveAppends(b, n, shape.callers, shape.batch, func(i int) *piledgerv1.Event { return collectFace(refs[i]) })
			b.ReportMetric(rate/raw, "x-raw-fsync")
		})
	}
}

// driveAppends appends b.N events, made by event(i), through n's ledger
// from callers concurrent callers with batch events per Append call, and
// reports events/s (which it returns) and the p50 and p99 latency of a call.
func driveAppends(b *testing.B, n *node, callers, batch int, event func(i int) *piledgerv1.Event) float64 {
	ctx := context.Background()
	var next atomic.Int64
	lat := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := processCPU(b)
	start := time.Now()
	for c := range callers {
		wg.Go(func() {
			for {
				end := int(next.Add(int64(batch)))
				if end-batch >= b.N {
					return
				}
				evs := make([]*piledgerv1.Event, 0, batch)
				for i := end - batch; i < min(end, b.N); i++ {
					evs = append(evs, event(i))
				}
				t0 := time.Now()
				if _, err := n.l.Append(ctx, evs); err != nil {
					b.Error(err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU(b) - cpu0
	b.StopTimer()
	all := slices.Concat(lat...)
	rate := float64(b.N) / elapsed.Seconds()
	// CPU time of the whole process (callers, ledger, embedded NATS, kernel
	// time of its syscalls) per event: the cores divided by this bound the
	// rate on this machine however the work is scheduled.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/event")
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(percentile(all, 0.50), "p50-ms")
	b.ReportMetric(percentile(all, 0.99), "p99-ms")
	return rate
}

// BenchmarkRawJetStream publishes the envelope bytes of one sealed event,
// one message per event, straight to JetStream: with fsync before every
// acknowledgement (SyncAlways, as the ledger runs) and with the default sync
// interval.
func BenchmarkRawJetStream(b *testing.B) {
	payload := envelopeBytes(b)
	for _, mode := range []struct {
		name string
		sync bool
	}{{"sync-always", true}, {"async-default-sync", false}} {
		b.Run(mode.name, func(b *testing.B) {
			js := rawServer(b, mode.sync)
			b.ResetTimer()
			start := time.Now()
			publishAsync(b, js, payload, b.N)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// rawRates caches raw JetStream publishing rates, measured once per run.
var rawRates struct {
	sync.Mutex
	rate map[bool]float64 // by fsync before every acknowledgement
}

// rawPublishRate measures, once per run, raw async publishing of envelope
// bytes, one message per event, with fsync before every acknowledgement or
// with the default sync interval, in events/s.
func rawPublishRate(b *testing.B, syncAlways bool) float64 {
	rawRates.Lock()
	defer rawRates.Unlock()
	if r, ok := rawRates.rate[syncAlways]; ok {
		return r
	}
	payload := envelopeBytes(b)
	js := rawServer(b, syncAlways)
	count := 200_000
	if syncAlways {
		count = 20_000
	}
	start := time.Now()
	publishAsync(b, js, payload, count)
	if rawRates.rate == nil {
		rawRates.rate = make(map[bool]float64)
	}
	rawRates.rate[syncAlways] = float64(count) / time.Since(start).Seconds()
	return rawRates.rate[syncAlways]
}

func publishAsync(b *testing.B, js jetstream.JetStream, payload []byte, count int) {
	for i := 0; i < count; i++ {
		if _, err := js.PublishAsync("raw.log", payload, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("raw publishes not acknowledged")
	}
}

// rawServer starts a bare embedded nats-server with one stream "RAW".
func rawServer(b *testing.B, syncAlways bool) jetstream.JetStream {
	b.Helper()
	srv, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: b.TempDir(), SyncAlways: syncAlways,
		DontListen: true, NoLog: true, NoSigs: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		b.Fatal("raw nats-server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "RAW", Subjects: []string{"raw.log"}, Storage: jetstream.FileStorage,
	}); err != nil {
		b.Fatal(err)
	}
	return js
}

// envelopeBytes appends one benchmark event through a real ledger and
// returns its stored envelope bytes.
func envelopeBytes(b *testing.B) []byte {
	b.Helper()
	n := startNode(b, filepath.Join(b.TempDir(), "node"))
	defer n.stop()
	if _, err := n.l.Append(context.Background(), []*piledgerv1.Event{collectFace(benchRef(0))}); err != nil {
		b.Fatal(err)
	}
	stream, err := n.js.Stream(context.Background(), "PILEDGER")
	if err != nil {
		b.Fatal(err)
	}
	msg, err := stream.GetMsg(context.Background(), 1)
	if err != nil {
		b.Fatal(err)
	}
	blk := &piledgerv1.Block{}
	if err := proto.Unmarshal(msg.Data, blk); err != nil {
		b.Fatal(err)
	}
	return blk.GetEnvelopes()[0]
}

// processCPU returns the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return float64(d[int(float64(len(d)-1)*p)]) / float64(time.Millisecond)
}
