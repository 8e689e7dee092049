package projections

import (
	"encoding/binary"
	"fmt"
	"log/slog"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Erasures. The projector counts every log entry of a subject (readable,
// shredded or repeated) since the subject's last erasure entry, from the
// clear envelope headers, so the count does not depend on whether the key
// still existed when the entry was applied: a rebuild after the erasure
// gives the same numbers. When it applies an erasure entry it stores one
// row with the erasure's time, generation and that count, and starts
// counting again. It also finishes an erasure a crash interrupted
// (Log.CompleteErasure: the generation the entry names, if still the latest
// and live, is destroyed).
//
//	s <P 32> n                 entries since the last erasure -> count (8), first index (8), last index (8)
//	s <P 32> e <index 8>       erasure entry at a log index -> recorded time (12), generation (4), count, first, last

const (
	subCount   = 'n'
	subErasure = 'e'
)

const entryCountLen = 24

func entryCountKey(p [pseudonymLen]byte) []byte { return subjectSub(p, subCount) }

func erasureKey(p [pseudonymLen]byte, index uint64) []byte {
	return binary.BigEndian.AppendUint64(subjectSub(p, subErasure), index)
}

// countEntry adds the log entry at index to the subject's entries since its
// last erasure.
func (t *txn) countEntry(p [pseudonymLen]byte, index uint64) error {
	key := entryCountKey(p)
	v, found, err := t.get(key)
	if err != nil {
		return err
	}
	count, first := uint64(0), index
	if found {
		if len(v) != entryCountLen {
			return fmt.Errorf("%w: entry count row", ErrCorrupt)
		}
		count, first = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	}
	out := binary.BigEndian.AppendUint64(make([]byte, 0, entryCountLen), count+1)
	out = binary.BigEndian.AppendUint64(out, first)
	return t.set(key, binary.BigEndian.AppendUint64(out, index))
}

// erase applies an erasure entry: it finishes destroying the keys if a
// crash interrupted the erasure, and records the erasure with the entries
// it made unreadable.
func (t *txn) erase(e *piledgerv1.LogEntry) error {
	pseudonym := e.GetHeader().GetPseudonym()
	p, ok := pseudonymBytes(pseudonym)
	if !ok {
		return fmt.Errorf("%w: erasure entry with a malformed pseudonym", ErrCorrupt)
	}
	gen := e.GetErasure().GetGeneration()
	done, err := t.s.log.CompleteErasure(t.ctx, pseudonym, gen)
	if err != nil {
		return fmt.Errorf("projections: log index %d: %w", e.GetIndex(), err)
	}
	if done {
		t.s.logger.InfoContext(t.ctx, "finished an interrupted erasure", slog.Uint64("log_index", e.GetIndex()))
	}
	cur, found, err := t.get(entryCountKey(p))
	if err != nil {
		return err
	}
	if !found {
		cur = make([]byte, entryCountLen)
	} else if len(cur) != entryCountLen {
		return fmt.Errorf("%w: entry count row", ErrCorrupt)
	}
	v := encodeTime(nil, e.GetHeader().GetRecordedAt().AsTime())
	v = binary.BigEndian.AppendUint32(v, gen)
	if err := t.set(erasureKey(p, e.GetIndex()), append(v, cur...)); err != nil {
		return err
	}
	return t.delete(entryCountKey(p))
}

// erasures returns the subject's erasures, oldest first.
func (v *view) erasures(p [pseudonymLen]byte) ([]*piledgerv1.SubjectErasure, error) {
	prefix := subjectSub(p, subErasure)
	it, err := v.iter(prefix, prefixEnd(prefix))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []*piledgerv1.SubjectErasure
	for it.First(); it.Valid(); it.Next() {
		key := it.Key()
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("projections: %w", err)
		}
		if len(key) != len(prefix)+8 || len(val) != timeLen+4+entryCountLen {
			return nil, fmt.Errorf("%w: erasure row", ErrCorrupt)
		}
		c := val[timeLen+4:]
		se := &piledgerv1.SubjectErasure{
			LogIndex:   binary.BigEndian.Uint64(key[len(prefix):]),
			EraseTime:  timestamppb.New(decodeTime(val)),
			Generation: binary.BigEndian.Uint32(val[timeLen:]),
			EventCount: binary.BigEndian.Uint64(c),
		}
		if se.EventCount > 0 {
			se.FirstIndex, se.LastIndex = binary.BigEndian.Uint64(c[8:]), binary.BigEndian.Uint64(c[16:])
		}
		out = append(out, se)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	return out, nil
}
