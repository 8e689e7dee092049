package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// view is one query's consistent read of the read models: a Pebble
// snapshot and the position it reflects.
type view struct {
	s     *Store
	ctx   context.Context
	snap  *pebble.Snapshot
	pos   Position
	ended map[[2]string]purposeEnd // (processor, purpose) -> end, read once per query
}

// view waits for minIndex (see await) and opens a snapshot. The caller must
// close it.
func (s *Store) view(ctx context.Context, minIndex *uint64) (*view, error) {
	if err := s.await(ctx, minIndex); err != nil {
		return nil, err
	}
	snap := s.db.NewSnapshot()
	pos, _, err := readPosition(snap)
	if err != nil {
		snap.Close()
		return nil, err
	}
	return &view{s: s, ctx: ctx, snap: snap, pos: pos, ended: make(map[[2]string]purposeEnd)}, nil
}

func (v *view) close() { _ = v.snap.Close() }

func (v *view) get(key []byte) ([]byte, bool, error) {
	val, closer, err := v.snap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("projections: %w", err)
	}
	defer closer.Close()
	return bytes.Clone(val), true, nil
}

// iter returns an iterator over [lower, upper).
func (v *view) iter(lower, upper []byte) (*pebble.Iterator, error) {
	it, err := v.snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	return it, nil
}

// recorded reports whether any row of the subject exists.
func (v *view) recorded(p [pseudonymLen]byte) (bool, error) {
	prefix := subjectPrefix(p)
	it, err := v.iter(prefix, prefixEnd(prefix))
	if err != nil {
		return false, err
	}
	defer it.Close()
	found := it.First()
	if err := it.Error(); err != nil {
		return false, fmt.Errorf("projections: %w", err)
	}
	return found, nil
}

// purposeEnded returns the processor-wide end of a purpose, if declared.
func (v *view) purposeEnded(processor, purpose string) (purposeEnd, error) {
	if purpose == "" {
		return purposeEnd{}, nil
	}
	k := [2]string{processor, purpose}
	if e, ok := v.ended[k]; ok {
		return e, nil
	}
	e, err := readPurposeEnd(v.get, processor, purpose)
	if err != nil {
		return purposeEnd{}, err
	}
	v.ended[k] = e
	return e, nil
}

// readPurposeEnd reads, through get, the end a processor declared for a
// purpose; zero when none was declared.
func readPurposeEnd(get func(key []byte) ([]byte, bool, error), processor, purpose string) (purposeEnd, error) {
	val, found, err := get(endedKey(processor, purpose))
	if err != nil || !found {
		return purposeEnd{}, err
	}
	return decodeEnded(val)
}
