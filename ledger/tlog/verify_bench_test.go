package tlog_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/piledger/piledger/ledger/tlog"
)

// BenchmarkVerify measures full-bundle verification (decoding, leaf hashing,
// tree building, header decoding, checkpoint signatures) against the raw
// SHA-256 leaf-hash rate over the same envelopes, measured in the same run:
//
//	go test ./ledger/tlog -run '^$' -bench Verify -benchtime 5x
//
// Envelopes are 314 bytes, the mean of the committed real fixture; blocks
// hold 1024 events, a checkpoint follows every 8th block. Metrics: events/s,
// raw-events/s (one reused SHA-256 state over 0x00 || envelope, nothing
// else, on one core), and x-raw, their ratio (goal >= 0.5). workers=1 hashes
// on one core like the raw loop; the default hashes a block's leaves on
// every core.
func BenchmarkVerify(b *testing.B) {
	const blocks, perBlock = 256, 1024
	sizes := make([]int, blocks)
	var signAfter []int
	for i := range sizes {
		sizes[i] = perBlock
		if i%8 == 7 || i == blocks-1 {
			signAfter = append(signAfter, i)
		}
	}
	// 314-byte envelopes: a ~233-byte ciphertext behind the clear header.
	s := newSynthetic(b, sizes, signAfter, func(i int) bool { return i%97 == 0 }, 233)
	bundle := encode(b, s.recs)
	var envs [][]byte
	for _, blk := range blocksOf(s.recs) {
		envs = append(envs, blk.Envelopes...)
	}
	events := float64(len(envs))

	raw := func() time.Duration {
		d := sha256.New()
		var sum [sha256.Size]byte
		start := time.Now()
		for _, env := range envs {
			d.Reset()
			d.Write([]byte{0})
			d.Write(env)
			d.Sum(sum[:0])
		}
		return time.Since(start)
	}
	for _, workers := range []int{1, 0} {
		name := "workers=1"
		if workers == 0 {
			name = fmt.Sprintf("workers=%d", runtime.GOMAXPROCS(0))
		}
		b.Run(name, func(b *testing.B) {
			var verifyTime, rawTime time.Duration
			for b.Loop() {
				start := time.Now()
				rep, err := tlog.Verify(bytes.NewReader(bundle), tlog.Options{VerifierKey: s.vkey, Workers: workers})
				verifyTime += time.Since(start)
				if err != nil || rep.Events != uint64(len(envs)) {
					b.Fatalf("Verify: %v", err)
				}
				rawTime += raw()
			}
			n := float64(b.N)
			b.ReportMetric(events*n/verifyTime.Seconds(), "events/s")
			b.ReportMetric(events*n/rawTime.Seconds(), "raw-events/s")
			b.ReportMetric(rawTime.Seconds()/verifyTime.Seconds(), "x-raw")
			b.ReportMetric(float64(len(bundle))/events, "bundle-bytes/event")
		})
	}
}
