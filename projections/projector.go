package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// errStorage marks a failure of the Pebble database itself: the projector
// cannot go on.
var errStorage = errors.New("projections: storage")

// Run is the projector: it follows the log from the position stored with
// the read models, decrypts every event and applies blocks in batches, each
// batch together with the new position and counts in one atomic, synced
// Pebble write. A crash (even SIGKILL) loses at most the batch being built,
// which is applied again from the stored position: every event is applied
// exactly once. A batch ends when the projector has caught up with the log
// or after Config.BatchEvents events, so live events are visible as soon as
// their block is read.
//
// Beside it, Run sweeps the holdings past their deadline every
// Config.SweepInterval (see Sweep).
//
// Run returns nil once ctx is done. When the log is unreachable it waits
// (Config.RetryDelay, doubling up to 30 s) and follows it again; it stops
// with an error, after which queries asking for a position fail with
// ErrStopped, only when the log or the read models are corrupt (ErrCorrupt,
// a key that does not unwrap) or Pebble fails. Run must be called at most
// once.
func (s *Store) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("projections: Run called twice")
	}
	sweepCtx, stopSweep := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		s.sweepLoop(sweepCtx)
	}()
	defer func() { stopSweep(); <-swept }()
	delay := s.cfg.RetryDelay
	pos := s.Position()
	s.logger.InfoContext(ctx, "projector starting", slog.Uint64("log_size", pos.Size), slog.Uint64("stream_seq", pos.Seq))
	for {
		progressed, err := s.follow(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			err = errors.New("projections: the log ended its stream")
		}
		if permanent(err) {
			s.logger.ErrorContext(ctx, "projector stopped", slog.Any("error", err))
			s.advance(Position{}, Counts{}, err)
			return err
		}
		if progressed {
			delay = s.cfg.RetryDelay
		}
		s.logger.WarnContext(ctx, "projector cannot follow the log; retrying",
			slog.Duration("retry_in", delay), slog.Any("error", err))
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// permanent reports whether a projector error cannot heal by retrying.
func permanent(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ledger.ErrCorrupt) || errors.Is(err, errStorage) ||
		errors.Is(err, crypto.ErrInvalidKey) || errors.Is(err, crypto.ErrKEKDestroyed) ||
		errors.Is(err, crypto.ErrInvalidPseudonym)
}

// follow applies the log from the stored position until ctx is done or an
// error; it reports whether it committed anything. Two stages overlap: the
// log reader decrypts block n+1 (spread over the CPUs) while the applier
// applies block n to the batch.
func (s *Store) follow(ctx context.Context) (progressed bool, err error) {
	pos, counts := s.Position(), s.Counts()
	g, gctx := errgroup.WithContext(ctx)
	blocks := make(chan openedBlock, 4)
	g.Go(func() error {
		var t *txn
		defer func() {
			if t != nil {
				t.discard() // an unfinished batch is applied again next time
			}
		}()
		for ob := range blocks {
			if t == nil {
				t = s.newTxn(gctx, counts)
			}
			seen, err := t.seen(ob.entries)
			if err != nil {
				return err
			}
			for i, e := range ob.entries {
				e.Index, e.BlockSequence = ob.FirstIndex+uint64(i), ob.Seq
				if err := t.apply(e, seen[i]); err != nil {
					return fmt.Errorf("log index %d: %w", e.Index, err)
				}
			}
			t.events += len(ob.entries)
			if ob.Pending > 0 && t.events < s.cfg.BatchEvents {
				continue
			}
			err = t.commit(Position{Seq: ob.Seq, Size: ob.FirstIndex + uint64(len(ob.entries))})
			counts, t = t.counts, nil
			if err != nil {
				return err
			}
			progressed = true
		}
		return nil
	})
	next := pos.Size
	ferr := s.log.Follow(gctx, pos.Seq, func(blk ledger.Block) error {
		if blk.FirstIndex != next {
			return fmt.Errorf("%w: block at sequence %d starts at log index %d, want %d (a gap in the log)",
				ErrCorrupt, blk.Seq, blk.FirstIndex, next)
		}
		entries, err := s.openBlock(gctx, blk)
		if err != nil {
			return err
		}
		next += uint64(len(entries))
		select {
		case blocks <- openedBlock{Block: blk, entries: entries}:
			return nil
		case <-gctx.Done():
			return gctx.Err()
		}
	})
	close(blocks)
	if err := g.Wait(); err != nil {
		return progressed, err // the applier's error caused the reader's
	}
	return progressed, ferr
}

// openedBlock is a block with its decrypted entries.
type openedBlock struct {
	ledger.Block
	entries []*piledgerv1.LogEntry
}

// openWorkersPerCPU is how many goroutines per CPU decrypt a large block.
// Decrypting is CPU work, but an event whose subject key is not cached
// waits for a key-stream read first; more workers than CPUs overlap those
// waits. Measured on 2 cores (docs/BENCHMARKS.md, read models): 8 per CPU
// rebuilt 300k subjects 1.3× faster than 1 per CPU, and 100k events of
// 10k subjects 1.1–1.2× faster.
const openWorkersPerCPU = 8

// openBlock decrypts a block's envelopes, spreading large blocks over
// several goroutines.
func (s *Store) openBlock(ctx context.Context, blk ledger.Block) ([]*piledgerv1.LogEntry, error) {
	entries := make([]*piledgerv1.LogEntry, len(blk.Envelopes))
	workers := min(openWorkersPerCPU*runtime.GOMAXPROCS(0), len(blk.Envelopes)/8+1)
	g, gctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			for i := w; i < len(entries); i += workers {
				e, err := s.log.OpenEnvelope(gctx, blk.Envelopes[i])
				if err != nil {
					return fmt.Errorf("log index %d: %w", blk.FirstIndex+uint64(i), err)
				}
				entries[i] = e
			}
			return nil
		})
	}
	return entries, g.Wait()
}
