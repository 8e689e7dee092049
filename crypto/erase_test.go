package crypto

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// wrappedKeys returns the key-stream messages holding the subject's wrapped
// keys: generation → the wrapped keyset bytes (the ciphertext under the KEK).
func wrappedKeys(t *testing.T, e *env, pseudonym string) map[uint32][][]byte {
	t.Helper()
	ctx := t.Context()
	s, err := e.js.Stream(ctx, DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32][][]byte{}
	last := s.CachedInfo().State.LastSeq
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		if msg.Subject != DefaultPrefix+subjectKeyToken {
			continue
		}
		var wk piledgerv1.WrappedKey
		if proto.Unmarshal(msg.Data, &wk) != nil || wk.GetPseudonym() != pseudonym {
			continue
		}
		out[wk.GetGeneration()] = append(out[wk.GetGeneration()], wk.GetKeyset())
	}
	return out
}

func TestDestroy(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	kr1 := e.keyring(t, filepath.Join(dir, "idx1"))
	kr2 := e.keyring(t, filepath.Join(dir, "idx2")) // another node
	ctx := t.Context()
	pa, pb := kr1.Pseudonym("erase-me"), kr1.Pseudonym("keep-me")
	ska, err := kr1.SealingKey(ctx, pa)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr1.SealingKey(ctx, pb); err != nil {
		t.Fatal(err)
	}
	if _, err := kr2.OpeningKey(ctx, pa, ska.Generation); err != nil { // cached on node 2
		t.Fatal(err)
	}
	before := wrappedKeys(t, e, pa)
	if len(before[1]) != 1 {
		t.Fatalf("wrapped keys of the subject before erasure: %v", before)
	}

	rep, err := kr1.Destroy(ctx, pa)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Generations != 1 || rep.Overwritten != 1 || rep.AlreadyGone != 0 || rep.MarkerSequence == 0 {
		t.Errorf("Destroy = %+v, want generation 1, 1 overwritten", rep)
	}
	if got := wrappedKeys(t, e, pa); len(got) != 0 {
		t.Errorf("wrapped keys left in the key stream: %v", got)
	}
	if _, err := kr1.OpeningKey(ctx, pa, 1); !errors.Is(err, ErrShredded) {
		t.Errorf("OpeningKey after Destroy: error = %v, want ErrShredded", err)
	}
	// The other node evicts the key once it follows the marker.
	if err := kr2.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := kr2.OpeningKey(ctx, pa, 1); !errors.Is(err, ErrShredded) {
		t.Errorf("OpeningKey on the other node after Destroy: error = %v, want ErrShredded", err)
	}
	if g, err := kr2.Destroyed(pa); err != nil || g != 1 {
		t.Errorf("Destroyed on the other node = %d, %v; want 1", g, err)
	}
	// Other subjects are untouched.
	if _, err := kr2.OpeningKey(ctx, pb, 1); err != nil {
		t.Errorf("OpeningKey of another subject: %v", err)
	}

	// Repeating is harmless.
	rep, err = kr2.Destroy(ctx, pa)
	if err != nil || rep.Generations != 1 || rep.Overwritten != 0 {
		t.Errorf("repeated Destroy = %+v, %v; want generation 1, nothing overwritten", rep, err)
	}

	// A later event gets a new generation, never the destroyed one again.
	for _, kr := range []*Keyring{kr1, kr2} {
		sk, err := kr.SealingKey(ctx, pa)
		if err != nil {
			t.Fatal(err)
		}
		if sk.Generation != 2 {
			t.Errorf("SealingKey after Destroy: generation %d, want 2", sk.Generation)
		}
		if _, err := sk.AEAD.Decrypt(mustSeal(t, ska), nil); err == nil {
			t.Error("the new generation opens what the destroyed key sealed")
		}
	}

	// A node whose index is rebuilt from the stream knows the tombstone.
	kr3 := e.keyring(t, filepath.Join(dir, "idx3"))
	if _, err := kr3.OpeningKey(ctx, pa, 1); !errors.Is(err, ErrShredded) {
		t.Errorf("OpeningKey on a new node: error = %v, want ErrShredded", err)
	}
	if sk, err := kr3.SealingKey(ctx, pa); err != nil || sk.Generation != 2 {
		t.Errorf("SealingKey on a new node: generation %d, %v; want 2", sk.Generation, err)
	}

	// Scan every file: the destroyed wrapped key is gone from the NATS store
	// and the indexes; the live one (positive control) is found.
	after := wrappedKeys(t, e, pa)
	kr1.Close()
	kr2.Close()
	kr3.Close()
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	dirs := []string{e.storeDir, dir}
	if where := grep(t, dirs, before[1][0]); where != "" {
		t.Errorf("the destroyed wrapped key is still in %s", where)
	}
	if grep(t, []string{e.storeDir}, after[2][0]) == "" {
		t.Error("scan does not find a live wrapped key in the NATS store")
	}
}

func mustSeal(t *testing.T, sk SubjectKey) []byte {
	t.Helper()
	ct, err := sk.AEAD.Encrypt([]byte("canary"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// TestDestroyCompletesAfterCrash: a marker published without the deletions
// (a crash in between) already makes the key unusable, and the next open of
// a keyring — on the same index, or on an index rebuilt from the stream —
// deletes the key message; a repeated Destroy then has nothing to overwrite.
func TestDestroyCompletesAfterCrash(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	kr := e.keyring(t, filepath.Join(dir, "idx"))
	ctx := t.Context()
	pa, pb := kr.Pseudonym("crash-a"), kr.Pseudonym("crash-b")
	for _, p := range []string{pa, pb} {
		if _, err := kr.SealingKey(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// Subject a: the marker is applied by a running keyring, then it stops.
	if _, err := e.js.Publish(ctx, DefaultPrefix+erasedToken, []byte(pa+":1")); err != nil {
		t.Fatal(err)
	}
	if err := kr.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.OpeningKey(ctx, pa, 1); !errors.Is(err, ErrShredded) {
		t.Errorf("OpeningKey after a half-done erasure: error = %v, want ErrShredded", err)
	}
	if len(wrappedKeys(t, e, pa)) != 1 {
		t.Fatal("the simulated crash left no key message to delete")
	}
	kr.Close()
	// Subject b: the marker is published while no keyring runs.
	if _, err := e.js.Publish(ctx, DefaultPrefix+erasedToken, []byte(pb+":1")); err != nil {
		t.Fatal(err)
	}

	kr = e.keyring(t, filepath.Join(dir, "idx")) // restart on the same index
	if got := wrappedKeys(t, e, pa); len(got) != 0 {
		t.Errorf("restart on the same index did not complete the erasure: %v", got)
	}
	if got := wrappedKeys(t, e, pb); len(got) != 0 {
		t.Errorf("restart did not complete an erasure published while down: %v", got)
	}
	kr2 := e.keyring(t, filepath.Join(dir, "idx-new")) // an index rebuilt from the stream
	for _, k := range []*Keyring{kr, kr2} {
		for _, p := range []string{pa, pb} {
			if _, err := k.OpeningKey(ctx, p, 1); !errors.Is(err, ErrShredded) {
				t.Errorf("OpeningKey after restart: error = %v, want ErrShredded", err)
			}
		}
	}
	for _, p := range []string{pa, pb} {
		rep, err := kr.Destroy(ctx, p)
		if err != nil || rep.Overwritten != 0 || rep.Generations != 1 {
			t.Errorf("Destroy after the completed erasure = %+v, %v; want generation 1, nothing overwritten", rep, err)
		}
	}
}

// TestDestroyRacesSealingKey: sealers on two nodes race an erasure. After
// Destroy returns, no destroyed generation is handed out, opened, or left in
// the key stream, and later keys are new generations.
func TestDestroyRacesSealingKey(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	kr1 := e.keyring(t, filepath.Join(dir, "idx1"))
	kr2 := e.keyring(t, filepath.Join(dir, "idx2"))
	ctx := t.Context()
	p := kr1.Pseudonym("race")
	var stop atomic.Bool
	var wg sync.WaitGroup
	var destroyedGen atomic.Uint32 // set once Destroy returned
	var violations atomic.Int32
	for _, kr := range []*Keyring{kr1, kr2} {
		wg.Go(func() {
			for !stop.Load() {
				floor := destroyedGen.Load()
				sk, err := kr.SealingKey(ctx, p)
				if errors.Is(err, ErrShredded) {
					continue // lost a race with the marker: the caller retries
				}
				if err != nil {
					t.Error(err)
					return
				}
				if kr == kr1 && floor > 0 && sk.Generation <= floor {
					violations.Add(1)
				}
			}
		})
	}
	for round := 1; round <= 5; round++ {
		if _, err := kr1.SealingKey(ctx, p); err != nil && !errors.Is(err, ErrShredded) {
			t.Fatal(err)
		}
		rep, err := kr1.Destroy(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		destroyedGen.Store(rep.Generations)
		for g := uint32(1); g <= rep.Generations; g++ {
			if _, err := kr1.OpeningKey(ctx, p, g); !errors.Is(err, ErrShredded) {
				t.Errorf("round %d: OpeningKey(%d) after Destroy: %v, want ErrShredded", round, g, err)
			}
		}
		for g := range wrappedKeys(t, e, p) {
			if g <= rep.Generations {
				t.Errorf("round %d: destroyed generation %d left in the key stream", round, g)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := violations.Load(); n > 0 {
		t.Errorf("%d destroyed keys handed out by SealingKey after Destroy returned", n)
	}
	// The subject is not stuck: both nodes hand out a live generation.
	floor := destroyedGen.Load()
	for i, kr := range []*Keyring{kr1, kr2} {
		if err := kr.refresh(ctx); err != nil {
			t.Fatal(err)
		}
		sk, err := kr.SealingKey(ctx, p)
		if err != nil || sk.Generation <= floor {
			t.Errorf("node %d: SealingKey after the race = generation %d, %v; want > %d", i+1, sk.Generation, err, floor)
		}
	}
}

// BenchmarkDestroy measures erasure at the key layer (marker, follower,
// SecureDeleteMsg) with 10 and 10,000 other subjects' keys in the stream,
// reporting p50 and p99 latencies.
func BenchmarkDestroy(b *testing.B) {
	for _, others := range []int{10, 10_000} {
		b.Run(fmt.Sprint("keys=", others), func(b *testing.B) {
			e := newEnv(b)
			kr := e.keyring(b, b.TempDir())
			ctx := context.Background()
			for i := range others {
				if _, err := kr.SealingKey(ctx, kr.Pseudonym(fmt.Sprint("other-", i))); err != nil {
					b.Fatal(err)
				}
			}
			var lat []time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				p := kr.Pseudonym(fmt.Sprint("erase-", i))
				if _, err := kr.SealingKey(ctx, p); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				if _, err := kr.Destroy(ctx, p); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
