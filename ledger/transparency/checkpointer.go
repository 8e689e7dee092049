package transparency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/piledger/piledger/ledger/tlog"
)

// checkpointer signs the tree into the checkpoint stream until ctx is done.
//
// It signs only a tree larger than the latest checkpoint in the stream, and
// only after checking that the tree at that checkpoint's size has that
// checkpoint's root, so it never signs a checkpoint inconsistent with one
// signed before (C2SP tlog-checkpoint: "Logs MUST NOT sign any checkpoint
// which is inconsistent with any checkpoint it previously signed"). It
// publishes expecting the stream's last sequence to be the checkpoint it
// checked; when another node signed first, it loads and checks that one.
//
// While events arrive, it signs at most once per CheckpointInterval; the
// first event after a quiet spell is signed as soon as the tree holds it.
func (l *Log) checkpointer(ctx context.Context) error {
	var (
		lastSigned time.Time
		checked    uint64 // sequence of the latest checkpoint found consistent with the tree
		failures   int
	)
	if l.Stuck() != nil {
		<-ctx.Done()
		return nil
	}
	for {
		grew := l.tree.changed()
		size, root := l.tree.head()
		cp, seq, _ := l.known()
		var wait <-chan time.Time

		consistent := cp == nil || checked == seq
		if !consistent && size >= cp.Size {
			if err := l.check(cp, seq); err != nil {
				l.stop(ctx, err)
				<-ctx.Done()
				return nil
			}
			checked, consistent = seq, true
		}
		if consistent && (cp == nil || size > cp.Size) && size > 0 {
			if d := time.Until(lastSigned.Add(l.cfg.CheckpointInterval)); d > 0 {
				wait = time.After(d)
			} else {
				newSeq, err := l.sign(ctx, size, root, seq)
				switch {
				case err == nil:
					lastSigned, checked, failures = time.Now(), newSeq, 0
					continue
				case errors.Is(err, errConflict):
					// Another node signed first: check its checkpoint next.
					cp, seq, err := l.loadLatest(ctx)
					if err != nil && !errors.Is(err, ErrCheckpointNotFound) {
						l.stop(ctx, err)
						<-ctx.Done()
						return nil
					}
					l.setLatest(cp, seq)
					continue
				case ctx.Err() != nil:
					return nil
				default:
					failures++
					l.logger.WarnContext(ctx, "signing a checkpoint failed; retrying", slog.Any("error", err), slog.Int("failures", failures))
					wait = time.After(min(time.Duration(failures)*l.cfg.CheckpointInterval, 10*time.Second))
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-grew:
		case <-wait:
		}
	}
}

// check compares the tree at the checkpoint's size with its root.
func (l *Log) check(cp *tlog.Checkpoint, seq uint64) error {
	root, err := l.tree.rootAt(cp.Size)
	if err != nil {
		return err
	}
	if !bytes.Equal(root, cp.Hash) {
		return fmt.Errorf("%w: checkpoint %d (tree size %d) does not match the tree built from the log: the log was altered or lost events after it was signed",
			ErrInconsistent, seq, cp.Size)
	}
	return nil
}

// sign signs the tree head, publishes it after checkpoint after and
// returns its sequence.
func (l *Log) sign(ctx context.Context, size uint64, root []byte, after uint64) (uint64, error) {
	note, err := tlog.SignCheckpoint(l.signer, l.cfg.Origin, size, root)
	if err != nil {
		return 0, err
	}
	seq, err := l.cps.publish(ctx, note, after)
	if err != nil {
		return 0, err
	}
	cp, err := l.open(note, seq)
	if err != nil {
		return 0, err // cannot happen: signed with the same key
	}
	l.setLatest(cp, seq)
	return seq, nil
}

// stop records and logs why signing stopped.
func (l *Log) stop(ctx context.Context, err error) {
	l.mu.Lock()
	l.stuck = err
	l.mu.Unlock()
	l.logger.ErrorContext(ctx, "not signing checkpoints: the log disagrees with what was signed before; investigate with `piledger log export` and `piledger verify`",
		slog.Any("error", err))
}
