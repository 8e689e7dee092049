package ledger_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// BenchmarkErase measures Ledger.Erase end to end — the erasure entry
// appended with fsync, the erasure marker, SecureDeleteMsg of the key
// message — for subjects with 10 and with 10,000 events, against one raw
// fsynced JetStream publish measured in the same run (x-raw-publish: how
// many fsynced publishes an erasure costs). Erasure cost should not grow
// with the number of events: the log is never rewritten.
//
//	go test ./ledger -run '^$' -bench Erase -benchtime 30x
func BenchmarkErase(b *testing.B) {
	for _, events := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("events=%d", events), func(b *testing.B) {
			n := startNode(b, filepath.Join(b.TempDir(), "node"))
			ctx := context.Background()
			raw := rawFsyncedPublish(b)
			var lat []time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				ref := fmt.Sprintf("erase-bench-%d-%d", events, i)
				i++
				for done := 0; done < events; {
					batch := make([]*piledgerv1.Event, 0, min(500, events-done))
					for range cap(batch) {
						batch = append(batch, collectFace(ref))
					}
					if _, err := n.l.Append(ctx, batch); err != nil {
						b.Fatal(err)
					}
					done += len(batch)
				}
				p := n.keys.Pseudonym(ref)
				b.StartTimer()
				t0 := time.Now()
				if _, err := n.l.Erase(ctx, p, ledger.ErasureRequest{RequestedBy: "admin"}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
			b.ReportMetric(p50, "p50-ms")
			b.ReportMetric(p99, "p99-ms")
			b.ReportMetric(raw, "raw-publish-p50-ms")
			b.ReportMetric(p50/raw, "x-raw-publish")
		})
	}
}

// rawFsyncedPublish returns the median latency, in ms, of one synchronous
// publish to a raw JetStream stream with fsync before every
// acknowledgement.
func rawFsyncedPublish(b *testing.B) float64 {
	js := rawServer(b, true)
	payload := envelopeBytes(b)
	var lat []time.Duration
	for range 200 {
		t0 := time.Now()
		if _, err := js.Publish(context.Background(), "raw.log", payload); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	return percentile(lat, 0.50)
}
