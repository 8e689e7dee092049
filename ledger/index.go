package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The event-id index is a node-local Pebble database derived from the log.
// It answers "was this event id recorded, and where?" forever (JetStream's own
// de-duplication forgets ids after its window), and "which block holds log
// index i?". Deleting it is safe: Open rebuilds it from the stream.
//
// Keys:
//
//	'a' "applied"               -> 8-byte last applied stream sequence
//	'a' "next"                  -> 8-byte next log index
//	'a' "stream"                -> the stream identity the index was built from
//	'b' + 8-byte first index    -> 8-byte stream sequence of the block
//	'e' + 16-byte event id      -> marshaled Receipt
//
// Event-id keys sort last on purpose. Nearly every lookup is of a new id,
// and ids are UUIDv7s, which grow with time: a new id sorts after every id
// in the tables flushed before it, so Pebble skips those tables by their
// bounds instead of opening each one to find the id absent. (Until 2026-11
// the state keys used 'm', which made every table span every event id;
// an index in that layout has no 'a' "stream" key and is rebuilt.)
//
// Nothing in it is personal data: event ids are emitter-chosen UUIDv7s and
// receipts carry pseudonyms only.
var (
	keyApplied  = []byte("aapplied")
	keyNext     = []byte("anext")
	keyIdentity = []byte("astream")
)

// quietLogger drops Pebble's informational messages and keeps its errors.
type quietLogger struct{ pebble.Logger }

func (quietLogger) Infof(string, ...any) {}

// identity returns the stream identity the index was built from (empty for
// a new index).
func (x *index) identity() ([]byte, error) {
	v, closer, err := x.db.Get(keyIdentity)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: event-id index: %w", err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// setIdentity records the stream identity the index is built from.
func (x *index) setIdentity(id []byte) error {
	if err := x.db.Set(keyIdentity, id, pebble.Sync); err != nil {
		return fmt.Errorf("ledger: event-id index: %w", err)
	}
	return nil
}

type index struct {
	db *pebble.DB
}

func openIndex(dir string) (*index, error) {
	cache := pebble.NewCache(16 << 20)
	defer cache.Unref()
	opts := &pebble.Options{
		Cache:        cache,
		MemTableSize: 16 << 20,
		Logger:       quietLogger{pebble.DefaultLogger},
	}
	// A lookup of a new event id that falls within a table's bounds (an
	// emitter with a slow clock) is answered by its bloom filter without
	// reading blocks.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("ledger: open event-id index: %w", err)
	}
	return &index{db: db}, nil
}

func (x *index) close() error { return x.db.Close() }

func eventKey(id string) ([]byte, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("%w: event id is not a UUID", ErrCorrupt)
	}
	return append([]byte{'e'}, u[:]...), nil
}

func blockKey(firstIndex uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{'b'}, firstIndex)
}

// receipt returns the stored receipt of an event id, or ok=false.
func (x *index) receipt(id string) (r *piledgerv1.Receipt, ok bool, err error) {
	k, err := eventKey(id)
	if err != nil {
		return nil, false, err
	}
	v, closer, err := x.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("ledger: event-id index: %w", err)
	}
	defer closer.Close()
	r = &piledgerv1.Receipt{}
	if err := proto.Unmarshal(v, r); err != nil {
		return nil, false, fmt.Errorf("%w: event-id index entry: %w", ErrCorrupt, err)
	}
	return r, true, nil
}

// state returns the last applied stream sequence and the next log index.
func (x *index) state() (applied, next uint64, err error) {
	get := func(k []byte) (uint64, error) {
		v, closer, err := x.db.Get(k)
		if errors.Is(err, pebble.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("ledger: event-id index: %w", err)
		}
		defer closer.Close()
		if len(v) != 8 {
			return 0, fmt.Errorf("%w: event-id index state", ErrCorrupt)
		}
		return binary.BigEndian.Uint64(v), nil
	}
	if applied, err = get(keyApplied); err != nil {
		return 0, 0, err
	}
	next, err = get(keyNext)
	return applied, next, err
}

// blockFor returns the stream sequence and first index of the block holding
// log index i, or ok=false when no indexed block holds it.
func (x *index) blockFor(i uint64) (seq, first uint64, ok bool, err error) {
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{'b'}, UpperBound: blockKey(i + 1)})
	if err != nil {
		return 0, 0, false, fmt.Errorf("ledger: event-id index: %w", err)
	}
	defer it.Close()
	if !it.Last() {
		return 0, 0, false, it.Error()
	}
	k, v := it.Key(), it.Value()
	if len(k) != 9 || len(v) != 8 {
		return 0, 0, false, fmt.Errorf("%w: event-id index block entry", ErrCorrupt)
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(k[1:]), true, nil
}

// indexedBlock is one block ready to be recorded in the index.
type indexedBlock struct {
	seq      uint64
	first    uint64
	receipts []*piledgerv1.Receipt
}

// apply records blocks and advances the applied sequence in one atomic
// batch. With onlyNew set, event ids already present keep their original
// receipt (a duplicate that reached the log twice counts once). The batch is
// not synced: the index is rebuilt from the log after a crash.
func (x *index) apply(blocks []indexedBlock, onlyNew bool) error {
	if len(blocks) == 0 {
		return nil
	}
	b := x.db.NewBatch()
	defer b.Close()
	seen := make(map[string]bool)
	for _, blk := range blocks {
		for _, r := range blk.receipts {
			k, err := eventKey(r.GetEventId())
			if err != nil {
				return err
			}
			if onlyNew {
				if seen[r.GetEventId()] {
					continue
				}
				seen[r.GetEventId()] = true
				if _, found, err := x.receipt(r.GetEventId()); err != nil {
					return err
				} else if found {
					continue
				}
			}
			v, err := deterministic.Marshal(r)
			if err != nil {
				return fmt.Errorf("ledger: marshal receipt: %w", err)
			}
			if err := b.Set(k, v, nil); err != nil {
				return err
			}
		}
		if err := b.Set(blockKey(blk.first), binary.BigEndian.AppendUint64(nil, blk.seq), nil); err != nil {
			return err
		}
	}
	last := blocks[len(blocks)-1]
	if err := b.Set(keyApplied, binary.BigEndian.AppendUint64(nil, last.seq), nil); err != nil {
		return err
	}
	next := last.first + uint64(len(last.receipts))
	if err := b.Set(keyNext, binary.BigEndian.AppendUint64(nil, next), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("ledger: event-id index: %w", err)
	}
	return nil
}

// reset deletes everything, for a rebuild. The range tombstone is compacted
// away at once: a table holding it spans every key, and each lookup would
// otherwise open that table (new ids would no longer skip old tables).
func (x *index) reset() error {
	it, err := x.db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("ledger: event-id index reset: %w", err)
	}
	empty := !it.First()
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("ledger: event-id index reset: %w", err)
	}
	if empty {
		return nil
	}
	lo, hi := []byte{0}, []byte{0xff}
	if err := x.db.DeleteRange(lo, hi, pebble.Sync); err != nil {
		return fmt.Errorf("ledger: event-id index reset: %w", err)
	}
	if err := x.db.Compact(context.Background(), lo, hi, false); err != nil {
		return fmt.Errorf("ledger: event-id index reset: %w", err)
	}
	return nil
}
