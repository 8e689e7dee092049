package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/piledger/piledger/crypto"
)

// Ledger appends events to the log and reads them back.
//
// Open prepares it; Run must be running for appends to complete. A Ledger is
// safe for concurrent use by any number of goroutines.
type Ledger struct {
	cfg    Config
	js     jetstream.JetStream
	stream jetstream.Stream
	keys   *crypto.Keyring
	idx    *index

	queue    chan *request // admitted, sealed requests waiting for a block
	stopping chan struct{} // closed when Run begins to shut down
	done     chan struct{} // closed when Run has returned
	runOnce  sync.Once
	closing  sync.RWMutex // enqueuers hold R; Run takes W once to stop admissions
	closed   bool         // guarded by closing

	ids      admissions
	fence    fence                 // erasures against appends of the same subject (erase.go)
	indexErr atomic.Pointer[error] // set when the index failed to record a committed block
	identity []byte                // the log stream's incarnation, set by Open

	// mu guards the log position and index writes: the Run loop's commits
	// and catch-ups from readers are serialized by it.
	mu        sync.Mutex
	lastSeq   uint64 // stream sequence of the last block applied
	nextIndex uint64 // log index of the next event
}

// queueDepth bounds requests waiting for a block; callers beyond it wait.
const queueDepth = 4096

// Open creates or checks the log stream, opens the node-local event-id index
// and brings it up to date with the log (rebuilding it when it is missing or
// belongs to another log). It returns ErrUnsafeStream when the existing
// stream could lose events. The caller must call Run, and Close after Run
// returned.
func Open(ctx context.Context, js jetstream.JetStream, keys *crypto.Keyring, cfg Config) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if keys == nil {
		return nil, errors.New("ledger: a keyring is required")
	}
	if max := int(js.Conn().MaxPayload()) - 16<<10; cfg.MaxBlockBytes > max {
		cfg.MaxBlockBytes = max
	}
	stream, err := ensureStream(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	idx, err := openIndex(cfg.IndexDir)
	if err != nil {
		return nil, err
	}
	l := &Ledger{
		cfg:      cfg,
		js:       js,
		stream:   stream,
		keys:     keys,
		idx:      idx,
		queue:    make(chan *request, queueDepth),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
	l.ids.init()
	l.fence.seed = maphash.MakeSeed()
	if err := l.recover(ctx); err != nil {
		idx.close()
		return nil, err
	}
	return l, nil
}

// recover loads the log position from the index and catches the index up
// with the stream, rebuilding it when it was built from another stream (one
// deleted and created again) or is ahead of this one.
func (l *Ledger) recover(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	info, err := l.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("%w: stream info: %w", ErrUnavailable, err)
	}
	identity := []byte(info.Created.UTC().Format(time.RFC3339Nano))
	l.identity = identity
	built, err := l.idx.identity()
	if err != nil {
		return err
	}
	applied, next, err := l.idx.state()
	if err != nil {
		return err
	}
	if !bytes.Equal(built, identity) || applied > info.State.LastSeq {
		if err := l.idx.reset(); err != nil {
			return err
		}
		if err := l.idx.setIdentity(identity); err != nil {
			return err
		}
		applied, next = 0, 0
	}
	l.lastSeq, l.nextIndex = applied, next
	_, err = l.catchUpLocked(ctx)
	return err
}

// StreamIdentity identifies the incarnation of the log stream this Ledger
// reads: a stream deleted and created again under the same name has another
// identity, and its sequences mean other blocks. Read models record it next to
// the last sequence they applied, and rebuild when it changes. The returned
// bytes must not be modified.
func (l *Ledger) StreamIdentity() []byte { return l.identity }

// Size returns the number of events in the log as known to this node.
func (l *Ledger) Size() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextIndex
}

// Close closes the event-id index. Call it after Run has returned.
func (l *Ledger) Close() error {
	return l.idx.close()
}

// catchUpLocked applies blocks written after lastSeq (by another node, or by
// this one before a crash or an unacknowledged publish) to the index. It
// reports whether anything was applied. l.mu must be held.
func (l *Ledger) catchUpLocked(ctx context.Context) (bool, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("%w: stream info: %w", ErrUnavailable, err)
	}
	last := info.State.LastSeq
	if last <= l.lastSeq {
		return false, nil
	}
	const chunk = 1024
	var pending []indexedBlock
	flush := func() error {
		err := l.idx.apply(pending, true)
		pending = pending[:0]
		return err
	}
	err = l.readBlocks(ctx, l.lastSeq+1, last, func(seq uint64, data []byte) error {
		blk, err := decodeBlock(data)
		if err != nil {
			return fmt.Errorf("block at sequence %d: %w", seq, err)
		}
		if blk.GetFirstIndex() != l.nextIndex {
			return fmt.Errorf("%w: block at sequence %d starts at index %d, want %d", ErrCorrupt, seq, blk.GetFirstIndex(), l.nextIndex)
		}
		ib, err := blockReceipts(seq, blk)
		if err != nil {
			return fmt.Errorf("block at sequence %d: %w", seq, err)
		}
		pending = append(pending, ib)
		l.lastSeq, l.nextIndex = seq, blk.GetFirstIndex()+uint64(len(blk.GetEnvelopes()))
		if len(pending) == chunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		// Fall back to what the index holds, so memory never runs ahead of it.
		if applied, next, serr := l.idx.state(); serr == nil {
			l.lastSeq, l.nextIndex = applied, next
		}
		return false, err
	}
	return true, nil
}

// directGetMax is the largest gap read with direct gets (one request per
// block, no consumer to set up) rather than an ordered consumer. Small gaps
// are the common case when another writer got a block in first.
const directGetMax = 32

// readBlocks calls fn for the blocks at stream sequences from..to, in order.
func (l *Ledger) readBlocks(ctx context.Context, from, to uint64, fn func(seq uint64, data []byte) error) error {
	if to-from >= directGetMax {
		return forEachBlock(ctx, l.js, l.cfg.StreamName, from, to, fn)
	}
	for seq := from; seq <= to; seq++ {
		msg, err := l.stream.GetMsg(ctx, seq)
		if err != nil {
			return fmt.Errorf("%w: read block %d: %w", ErrUnavailable, seq, err)
		}
		if err := fn(seq, msg.Data); err != nil {
			return err
		}
	}
	return nil
}
