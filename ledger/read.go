package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// errStop ends a consume loop early without error.
var errStop = errors.New("stop")

// consume calls fn for every stream message from sequence from on, in order,
// using an ordered consumer (the fastest way to read a stream in order:
// ~570k msgs/s on the build machine), until ctx is done or fn returns an
// error; errStop ends it with nil. pending is how many messages the stream
// held after this one at delivery.
func consume(ctx context.Context, js jetstream.JetStream, stream string, from uint64, fn func(seq, pending uint64, data []byte) error) error {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
	})
	if err != nil {
		return fmt.Errorf("%w: read log: %w", ErrUnavailable, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("%w: read log: %w", ErrUnavailable, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: read log: %w", ErrUnavailable, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("%w: read log: %w", ErrUnavailable, err)
		}
		if err := fn(meta.Sequence.Stream, meta.NumPending, msg.Data()); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
	}
}

// forEachBlock calls fn for every stream message from sequence from to to,
// inclusive, in order.
func forEachBlock(ctx context.Context, js jetstream.JetStream, stream string, from, to uint64, fn func(seq uint64, data []byte) error) error {
	if from > to {
		return nil
	}
	return consume(ctx, js, stream, from, func(seq, _ uint64, data []byte) error {
		if seq > to {
			return errStop
		}
		if err := fn(seq, data); err != nil {
			return err
		}
		if seq == to {
			return errStop
		}
		return nil
	})
}

// blockReceipts derives the receipts of every event in a block from the
// envelopes' clear headers (nothing is decrypted).
func blockReceipts(seq uint64, blk *piledgerv1.Block) (indexedBlock, error) {
	ib := indexedBlock{seq: seq, first: blk.GetFirstIndex(), receipts: make([]*piledgerv1.Receipt, 0, len(blk.GetEnvelopes()))}
	for i, raw := range blk.GetEnvelopes() {
		_, h, err := DecodeEnvelope(raw)
		if err != nil {
			return indexedBlock{}, err
		}
		ib.receipts = append(ib.receipts, &piledgerv1.Receipt{
			EventId:       h.GetEventId(),
			Index:         blk.GetFirstIndex() + uint64(i),
			BlockSequence: seq,
			BlockOffset:   uint32(i),
			RecordedAt:    h.GetRecordedAt(),
			Pseudonym:     h.GetPseudonym(),
		})
	}
	return ib, nil
}

// Entries calls fn with every event of the log from index start, in log
// order, decrypted, stopping after limit entries (0: up to the end of the log
// as it is when the call begins) or at the first error fn returns. Events
// whose subject key was destroyed come with their header only and Shredded
// set. It returns ErrCorrupt for a block or envelope that does not decode or
// decrypt. The LogEntry values are owned by fn.
func (l *Ledger) Entries(ctx context.Context, start, limit uint64, fn func(*piledgerv1.LogEntry) error) error {
	l.mu.Lock()
	if _, err := l.catchUpLocked(ctx); err != nil {
		l.mu.Unlock()
		return err
	}
	last, end := l.lastSeq, l.nextIndex
	l.mu.Unlock()
	if start >= end {
		return nil
	}
	seq, _, ok, err := l.idx.blockFor(start)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no block holds index %d", ErrCorrupt, start)
	}
	var sent uint64
	err = forEachBlock(ctx, l.js, l.cfg.StreamName, seq, last, func(seq uint64, data []byte) error {
		blk, err := decodeBlock(data)
		if err != nil {
			return fmt.Errorf("block at sequence %d: %w", seq, err)
		}
		for i, raw := range blk.GetEnvelopes() {
			idx := blk.GetFirstIndex() + uint64(i)
			if idx < start {
				continue
			}
			entry, err := open(ctx, l.keys, raw)
			if err != nil {
				return fmt.Errorf("log index %d: %w", idx, err)
			}
			entry.Index, entry.BlockSequence = idx, seq
			if err := fn(entry); err != nil {
				return err
			}
			sent++
			if limit > 0 && sent == limit {
				return errStop
			}
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// Block is one block of the log as read by Follow.
type Block struct {
	// Seq is the block's stream sequence; pass it back to Follow to resume
	// after it.
	Seq uint64
	// FirstIndex is the log index of the first envelope.
	FirstIndex uint64
	// Envelopes are the stored envelope bytes, in log order; each is a
	// Merkle leaf. Decode with DecodeEnvelope, decrypt with Ledger.OpenEnvelope.
	Envelopes [][]byte
	// Pending is how many more blocks the stream held after this one when
	// it was delivered: 0 means the reader has caught up, a good moment to
	// commit a batch of work.
	Pending uint64
}

// Follow calls fn for every block after stream sequence after, in log order,
// and then for each new block as it is appended, until ctx is done (it then
// returns ctx.Err()) or fn returns an error (returned as is). It is how read
// models follow the log: each records the Seq it applied last, atomically with
// its effects, and resumes from it.
func (l *Ledger) Follow(ctx context.Context, after uint64, fn func(Block) error) error {
	return consume(ctx, l.js, l.cfg.StreamName, after+1, func(seq, pending uint64, data []byte) error {
		blk, err := decodeBlock(data)
		if err != nil {
			return fmt.Errorf("block at sequence %d: %w", seq, err)
		}
		return fn(Block{Seq: seq, FirstIndex: blk.GetFirstIndex(), Envelopes: blk.GetEnvelopes(), Pending: pending})
	})
}

// Open decrypts one stored envelope. When the subject's key was destroyed it
// returns the header alone with Shredded set. It returns ErrCorrupt for bytes
// that do not decode, or that do not decrypt under the subject's key. The
// entry's Index and BlockSequence are left for the caller to set.
func (l *Ledger) OpenEnvelope(ctx context.Context, envelope []byte) (*piledgerv1.LogEntry, error) {
	return open(ctx, l.keys, envelope)
}
