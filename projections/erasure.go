package projections

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Erasures. The projector records every log entry of a subject (readable,
// shredded or repeated) since the subject's last erasure entry as an empty
// row, from the clear envelope headers, so the count does not depend on
// whether the key still existed when the entry was applied: a rebuild after
// the erasure gives the same numbers. The row is a blind write (no read on
// the projector's path). When it applies an erasure entry it counts and
// deletes those rows and stores one row with the erasure's time,
// generation, count and index range. It also finishes an erasure a crash
// interrupted (Log.CompleteErasure: the generation the entry names, if
// still the latest and live, is destroyed).
//
//	s <P 32> n <index 8>       an entry of the subject since its last erasure -> empty
//	s <P 32> e <index 8>       erasure entry at a log index -> recorded time (12), generation (4), count (8), first (8), last (8)

const (
	subEntry   = 'n'
	subErasure = 'e'
)

const entryCountLen = 24

func entryKey(p [pseudonymLen]byte, index uint64) []byte {
	return binary.BigEndian.AppendUint64(subjectSub(p, subEntry), index)
}

func erasureKey(p [pseudonymLen]byte, index uint64) []byte {
	return binary.BigEndian.AppendUint64(subjectSub(p, subErasure), index)
}

// countEntry records the log entry at index as one of the subject's entries
// since its last erasure.
func (t *txn) countEntry(p [pseudonymLen]byte, index uint64) error {
	return t.set(entryKey(p, index), nil)
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
	var count, first, last uint64
	var keys [][]byte
	prefix := subjectSub(p, subEntry)
	err = t.scan(prefix, func(key, _ []byte) error {
		if len(key) != len(prefix)+8 {
			return fmt.Errorf("%w: entry row", ErrCorrupt)
		}
		index := binary.BigEndian.Uint64(key[len(prefix):])
		if count == 0 {
			first = index
		}
		count, last = count+1, index
		keys = append(keys, bytes.Clone(key))
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := t.delete(k); err != nil {
			return err
		}
	}
	v := encodeTime(nil, e.GetHeader().GetRecordedAt().AsTime())
	v = binary.BigEndian.AppendUint32(v, gen)
	v = binary.BigEndian.AppendUint64(v, count)
	v = binary.BigEndian.AppendUint64(v, first)
	v = binary.BigEndian.AppendUint64(v, last)
	return t.set(erasureKey(p, e.GetIndex()), v)
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
