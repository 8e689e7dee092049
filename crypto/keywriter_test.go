package crypto

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// TestSealingKeysBatchesNewSubjects creates the keys of many new subjects in
// one call: each distinct subject gets exactly one key message, the keys go
// to the stream in atomic batches, and another node opens them.
func TestSealingKeysBatchesNewSubjects(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	kr := e.keyring(t, filepath.Join(dir, "idx1"))
	ctx := t.Context()
	if !kr.writer.atomic.Load() {
		t.Fatal("the key stream does not accept atomic batches")
	}
	known := kr.Pseudonym("known")
	if _, err := kr.SealingKey(ctx, known); err != nil {
		t.Fatal(err)
	}
	before := e.keyMessages(t)

	const fresh = 300
	var ps []string
	for i := range fresh {
		ps = append(ps, kr.Pseudonym(fmt.Sprintf("new-%d", i)))
	}
	ps = append(ps, ps[7], known, ps[0]) // repeats and a subject with a key
	keys, err := kr.SealingKeys(ctx, ps)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.keyMessages(t) - before; got != fresh {
		t.Errorf("SealingKeys stored %d key messages, want %d (one per new subject)", got, fresh)
	}
	if kr.writer.batches.Load() == 0 {
		t.Error("no atomic batch was written for 300 new subjects")
	}
	other := e.keyring(t, filepath.Join(dir, "idx2"))
	for i, p := range ps {
		if keys[i].Generation != 1 {
			t.Fatalf("keys[%d].Generation = %d, want 1", i, keys[i].Generation)
		}
		open, err := other.OpeningKey(ctx, p, 1)
		if err != nil {
			t.Fatalf("another node opening keys[%d]: %v", i, err)
		}
		roundTrip(t, keys[i].AEAD, open)
	}
	roundTrip(t, keys[fresh].AEAD, keys[7].AEAD)
	roundTrip(t, keys[fresh+2].AEAD, keys[0].AEAD)

	if _, err := kr.SealingKeys(ctx, []string{ps[1], "not a pseudonym"}); !errors.Is(err, ErrInvalidPseudonym) {
		t.Errorf("SealingKeys with an invalid pseudonym: %v, want ErrInvalidPseudonym", err)
	}
}

// TestKeyStreamGainsAtomicPublish opens a keyring on a key stream created
// before keys were batched: the keyring allows atomic batches on it.
func TestKeyStreamGainsAtomicPublish(t *testing.T) {
	e := newEnv(t)
	cfg := keyStreamConfig(KeyringConfig{}.withDefaults())
	cfg.AllowAtomicPublish = false
	if _, err := e.js.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	kr := e.keyring(t, t.TempDir())
	s, err := e.js.Stream(t.Context(), DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if !s.CachedInfo().Config.AllowAtomicPublish || !kr.writer.atomic.Load() {
		t.Errorf("after opening: stream allows atomic batches %v, keyring uses them %v; want both",
			s.CachedInfo().Config.AllowAtomicPublish, kr.writer.atomic.Load())
	}

	// Atomic batches switched off behind the keyring's back: keys are
	// stored one by one instead of failing.
	cfg = s.CachedInfo().Config
	cfg.AllowAtomicPublish = false
	if _, err := e.js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	w := newKeyWriter(e.js, DefaultKeyStreamName, DefaultPrefix+".keys.test", true)
	defer w.close()
	before := e.keyMessages(t)
	batch := make([]*keyWrite, minAtomicKeyBatch+4)
	for i := range batch {
		batch[i] = &keyWrite{data: fmt.Appendf(nil, "key %d", i), done: make(chan struct{})}
	}
	w.commit(batch)
	for i, kw := range batch {
		if kw.err != nil || kw.seq == 0 {
			t.Errorf("write %d: sequence %d, error %v", i, kw.seq, kw.err)
		}
	}
	if got := e.keyMessages(t) - before; got != uint64(len(batch)) {
		t.Errorf("stored %d keys, want %d", got, len(batch))
	}
	if w.atomic.Load() {
		t.Error("the writer still sends atomic batches to a stream that refuses them")
	}
}

// TestKeyWriterOneByOne checks the path for servers without atomic batches:
// concurrent writes each get their own message and sequence.
func TestKeyWriterOneByOne(t *testing.T) {
	e := newEnv(t)
	kr := e.keyring(t, t.TempDir())
	w := newKeyWriter(e.js, DefaultKeyStreamName, DefaultPrefix+".keys.test", false)
	seqs := make([]uint64, 40)
	var wg sync.WaitGroup
	for i := range seqs {
		wg.Go(func() {
			var err error
			if seqs[i], err = w.write(t.Context(), fmt.Appendf(nil, "key %d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	w.close()
	if _, err := w.write(t.Context(), []byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close: %v, want ErrClosed", err)
	}
	if w.batches.Load() != 0 {
		t.Errorf("%d atomic batches written with atomic batches off", w.batches.Load())
	}
	for i, seq := range seqs {
		msg, err := kr.stream.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("key %d", i); string(msg.Data) != want {
			t.Errorf("message at sequence %d = %q, want %q", seq, msg.Data, want)
		}
	}
	slices.Sort(seqs)
	if len(slices.Compact(seqs)) != 40 {
		t.Error("two writes got the same sequence")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	w2 := newKeyWriter(e.js, DefaultKeyStreamName, DefaultPrefix+".keys.test", true)
	defer w2.close()
	if _, err := w2.write(ctx, []byte("x")); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("write with a canceled context: %v", err)
	}
}
