package ledger

import (
	"context"
	"fmt"
)

// EnvelopeAt returns the stored envelope bytes of the event at log index i,
// exactly as they are in the log (its Merkle leaf), and the stream sequence
// of the block holding it. It returns ErrNotInLog when the log has no event
// at i, ErrCorrupt when the block does not decode or does not hold i, and
// ErrUnavailable when the stream cannot be read. The bytes are owned by the
// caller.
func (l *Ledger) EnvelopeAt(ctx context.Context, i uint64) ([]byte, uint64, error) {
	l.mu.Lock()
	if i >= l.nextIndex {
		if _, err := l.catchUpLocked(ctx); err != nil {
			l.mu.Unlock()
			return nil, 0, err
		}
	}
	end := l.nextIndex
	l.mu.Unlock()
	if i >= end {
		return nil, 0, fmt.Errorf("%w: index %d, the log holds %d events", ErrNotInLog, i, end)
	}
	seq, _, ok, err := l.idx.blockFor(i)
	if err != nil {
		return nil, 0, err
	}
	if !ok {
		return nil, 0, fmt.Errorf("%w: no block holds index %d", ErrCorrupt, i)
	}
	msg, err := l.stream.GetMsg(ctx, seq)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: read block %d: %w", ErrUnavailable, seq, err)
	}
	blk, err := decodeBlock(msg.Data)
	if err != nil {
		return nil, 0, fmt.Errorf("block at sequence %d: %w", seq, err)
	}
	envs := blk.GetEnvelopes()
	if i < blk.GetFirstIndex() || i-blk.GetFirstIndex() >= uint64(len(envs)) {
		return nil, 0, fmt.Errorf("%w: block at sequence %d does not hold index %d", ErrCorrupt, seq, i)
	}
	return envs[i-blk.GetFirstIndex()], seq, nil
}
