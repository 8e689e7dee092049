package transparency_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/piledger/piledger/ledger/transparency"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// BenchmarkAppendToCheckpoint measures the time from calling Append to a
// signed checkpoint that covers the event being published in the checkpoint
// stream (fsync on, default checkpoint interval), with writers appending one
// event at a time concurrently, each waiting for its checkpoint:
//
//	go test ./ledger/transparency -run '^$' -bench AppendToCheckpoint -benchtime 10s
//
// Metrics: p50-ms and p99-ms of that time (goal: p99 <= 1 s), events/s, and
// checkpoints/s signed during the run.
func BenchmarkAppendToCheckpoint(b *testing.B) {
	for _, writers := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			n := startNode(b, filepath.Join(b.TempDir(), "n"), transparency.Config{})
			ctx := context.Background()
			// Create the subjects' keys first: a steady-state ledger mostly
			// sees subjects it already knows.
			for i := range writers {
				n.appendN(b, ref(i), piledgerv1.Operation_OPERATION_COLLECT, 1)
			}
			n.waitSigned(b)
			signed0 := checkpointCount(b, n)

			var next atomic.Int64
			lat := make([][]time.Duration, writers)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						rs, err := n.led.Append(ctx, []*piledgerv1.Event{event(ref(w), piledgerv1.Operation_OPERATION_COLLECT)})
						if err != nil {
							b.Error(err)
							return
						}
						if _, err := n.tl.WaitCheckpoint(ctx, rs[0].GetIndex()+1); err != nil {
							b.Error(err)
							return
						}
						lat[w] = append(lat[w], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			signed := checkpointCount(b, n) - signed0
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			ms := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))]) / float64(time.Millisecond) }
			b.ReportMetric(ms(0.50), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(signed)/elapsed.Seconds(), "checkpoints/s")
		})
	}
}

// checkpointCount returns how many checkpoints the stream holds.
func checkpointCount(b *testing.B, n *node) uint64 {
	s, err := n.js.Stream(context.Background(), transparency.DefaultStreamName)
	if err != nil {
		b.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// BenchmarkAppendToCheckpointOpenLoop is BenchmarkAppendToCheckpoint with
// events arriving on a fixed schedule (rate events/s, spread over at least
// 64 writers) instead of writers waiting for their checkpoint: appends are not
// synchronized with the checkpointer, as with real emitters. The time of an
// event is from its Append call to the moment this node published the first
// checkpoint covering it.
//
//	go test ./ledger/transparency -run '^$' -bench AppendToCheckpointOpenLoop -benchtime 20000x
func BenchmarkAppendToCheckpointOpenLoop(b *testing.B) {
	for _, rate := range []int{1000, 5000, 20000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			n := startNode(b, filepath.Join(b.TempDir(), "n"), transparency.Config{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Enough writers that the rate never waits for an Append (each
			// takes a few ms under load).
			writers := max(64, rate/50)
			for i := range writers {
				n.appendN(b, ref(i), piledgerv1.Operation_OPERATION_COLLECT, 1)
			}
			first := n.waitSigned(b).Size

			// The monitor notes when each checkpoint is published.
			type signedAt struct {
				size uint64
				at   time.Time
			}
			var (
				mu  sync.Mutex
				cps []signedAt
			)
			seen := func() uint64 {
				mu.Lock()
				defer mu.Unlock()
				if len(cps) == 0 {
					return first
				}
				return cps[len(cps)-1].size
			}
			monitorDone := make(chan struct{})
			go func() {
				defer close(monitorDone)
				for last := first; ; {
					cp, err := n.tl.WaitCheckpoint(ctx, last+1)
					if err != nil {
						return
					}
					mu.Lock()
					cps = append(cps, signedAt{cp.Size, time.Now()})
					mu.Unlock()
					last = cp.Size
				}
			}()

			type appended struct {
				index uint64
				t0    time.Time
			}
			recs := make([][]appended, writers)
			var wg sync.WaitGroup
			period := time.Second * time.Duration(writers) / time.Duration(rate)
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Go(func() {
					for k := 0; w+k*writers < b.N; k++ {
						due := start.Add(time.Duration(k)*period + time.Duration(w)*period/time.Duration(writers))
						time.Sleep(time.Until(due))
						t0 := time.Now()
						rs, err := n.led.Append(ctx, []*piledgerv1.Event{event(ref(w), piledgerv1.Operation_OPERATION_COLLECT)})
						if err != nil {
							b.Error(err)
							return
						}
						recs[w] = append(recs[w], appended{rs[0].GetIndex(), t0})
					}
				})
			}
			wg.Wait()
			// Wait until the monitor has seen a checkpoint of every event.
			for total := n.led.Size(); seen() < total; {
				time.Sleep(time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			cancel()
			<-monitorDone

			var all []time.Duration
			for _, r := range slices.Concat(recs...) {
				i, _ := slices.BinarySearchFunc(cps, r.index+1, func(c signedAt, size uint64) int {
					return cmpUint(c.size, size)
				})
				if i == len(cps) {
					b.Fatalf("no checkpoint covers index %d", r.index)
				}
				all = append(all, cps[i].at.Sub(r.t0))
			}
			slices.Sort(all)
			ms := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))]) / float64(time.Millisecond) }
			b.ReportMetric(ms(0.50), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
			b.ReportMetric(ms(1), "max-ms")
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(len(cps))/elapsed.Seconds(), "checkpoints/s")
		})
	}
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// BenchmarkTreeRebuild measures rebuilding the Merkle tree from the log (the
// tree's directory deleted, the node restarted): events applied per second,
// leaf hashing, node writes and synced commits included.
//
//	go test ./ledger/transparency -run '^$' -bench TreeRebuild -benchtime 200000x
func BenchmarkTreeRebuild(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "n")
	n := startNode(b, dir, transparency.Config{})
	for appended := 0; appended < b.N; {
		count := min(1000, b.N-appended)
		n.appendN(b, ref(appended%512), piledgerv1.Operation_OPERATION_COLLECT, count)
		appended += count
	}
	n.waitSigned(b)
	_, root := n.tl.Root()
	n.stop(b)
	if err := os.RemoveAll(filepath.Join(dir, "tree")); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	n = startNode(b, dir, transparency.Config{})
	for n.tl.Size() < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if _, got := n.tl.Root(); !bytes.Equal(got, root) {
		b.Fatal("the rebuilt tree has another root")
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
