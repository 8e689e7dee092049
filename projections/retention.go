package projections

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// DueQuery selects the holdings whose destruction is due.
type DueQuery struct {
	// Before: holdings whose deadline is at or before it; zero means now.
	Before time.Time
	// Processor restricts the answer to one holder; empty means all.
	Processor string
	// PageSize: 0 means DefaultPageSize; above MaxPageSize is coerced.
	PageSize int
	// PageToken continues a previous answer; empty for the first page.
	PageToken string
	// MinIndex, when set, makes the query wait until the log entry at this
	// index is applied (read your writes).
	MinIndex *uint64
}

// dueCursor is the position of a due-holdings page, sealed in its token,
// with the first page's before and evaluation times so that every page
// answers the same question.
type dueCursor struct {
	before, now time.Time
	holder      tag
	section     byte // 0: start of holder; sectionFixed or sectionUntil
	purpose     tag  // sectionUntil only
	key         []byte
}

const (
	sectionFixed = 'a' // due rows: holdings with a fixed deadline
	sectionUntil = 'b' // until rows of purposes the holder declared ended
)

func (c dueCursor) encode() []byte {
	b := encodeTime(nil, c.before)
	b = encodeTime(b, c.now)
	b = append(b, c.holder[:]...)
	b = append(b, c.section)
	b = append(b, c.purpose[:]...)
	return append(b, c.key...)
}

func decodeDueCursor(b []byte) (dueCursor, error) {
	const fixed = 2*timeLen + tagLen + 1 + tagLen
	if len(b) < fixed {
		return dueCursor{}, ErrInvalidPageToken
	}
	c := dueCursor{before: decodeTime(b), now: decodeTime(b[timeLen:]), section: b[2*timeLen+tagLen], key: bytes.Clone(b[fixed:])}
	copy(c.holder[:], b[2*timeLen:])
	copy(c.purpose[:], b[2*timeLen+tagLen+1:])
	return c, nil
}

// endedPurpose is a purpose a holder declared ended, as the due query uses
// it.
type endedPurpose struct {
	purpose tag
	end     purposeEnd
}

// DueHoldings lists the holdings not destroyed whose destruction deadline
// is at or before q.Before, grouped by holder (in tag order, an order that
// does not reveal names). Within a holder come first the holdings with a
// fixed deadline, by deadline, then those due because the holder declared
// their purpose ended (the purpose-ended table is read here, so a
// subjectless purpose-ended event costs no write per subject). Holdings of
// subjects whose key was destroyed are listed with their pseudonymous
// metadata only (Shredded set).
//
// It returns ErrInvalidPageToken for a token issued for other parameters.
func (s *Store) DueHoldings(ctx context.Context, q DueQuery) (*piledgerv1.ListDueHoldingsResponse, error) {
	bind := "due\x00" + q.Processor + "\x00"
	if !q.Before.IsZero() {
		bind += string(encodeTime(nil, q.Before))
	}
	var cur dueCursor
	if q.PageToken != "" {
		b, err := s.openToken(ctx, bind, q.PageToken)
		if err != nil {
			return nil, err
		}
		if cur, err = decodeDueCursor(b); err != nil {
			return nil, err
		}
	} else {
		cur.now, cur.before = s.cfg.Now(), q.Before
		if cur.before.IsZero() {
			cur.before = cur.now
		}
	}
	v, err := s.view(ctx, q.MinIndex)
	if err != nil {
		return nil, err
	}
	defer v.close()
	d := &dueLister{v: v, before: cur.before, now: cur.now, size: pageSize(q.PageSize), names: map[tag]string{}}
	if err := d.list(q.Processor, cur); err != nil {
		return nil, err
	}
	resp := &piledgerv1.ListDueHoldingsResponse{
		Before:       timestamppb.New(cur.before),
		EvaluateTime: timestamppb.New(cur.now),
		LogSize:      v.pos.Size,
	}
	for i, it := range d.items {
		if i == d.size {
			next := d.items[i-1].cursor
			next.before, next.now = cur.before, cur.now
			if resp.NextPageToken, err = s.sealToken(ctx, bind, next.encode()); err != nil {
				return nil, err
			}
			break
		}
		resp.Holdings = append(resp.Holdings, it.h)
	}
	return resp, nil
}

// dueLister collects one page of due holdings, plus one more to know
// whether another page follows.
type dueLister struct {
	v           *view
	before, now time.Time
	size        int
	items       []dueItem
	names       map[tag]string
}

type dueItem struct {
	h      *piledgerv1.Holding
	cursor dueCursor
}

func (d *dueLister) full() bool { return len(d.items) > d.size }

// list walks the holders from the cursor on.
func (d *dueLister) list(processor string, cur dueCursor) error {
	ended, err := d.endedByHolder(processor)
	if err != nil {
		return err
	}
	if processor != "" {
		t := d.v.s.tags.tag(tagProcessor, processor)
		if bytes.Compare(t[:], cur.holder[:]) < 0 {
			return nil
		}
		return d.holder(t, ended[t], cur)
	}
	rit, err := d.v.iter([]byte{tabDue}, []byte{tabDue + 1})
	if err != nil {
		return err
	}
	defer rit.Close()
	endedTags := slices.SortedFunc(func(yield func(tag) bool) {
		for t := range ended {
			if !yield(t) {
				return
			}
		}
	}, func(a, b tag) int { return bytes.Compare(a[:], b[:]) })
	next, ok := cur.holder, true
	for ok && !d.full() {
		// The next holder with due rows or ended purposes, from next on.
		var cand tag
		found := false
		if rit.SeekGE(append([]byte{tabDue}, next[:]...)) {
			copy(cand[:], rit.Key()[1:])
			found = true
		}
		if i, _ := slices.BinarySearchFunc(endedTags, next, func(a, b tag) int { return bytes.Compare(a[:], b[:]) }); i < len(endedTags) {
			if !found || bytes.Compare(endedTags[i][:], cand[:]) < 0 {
				cand, found = endedTags[i], true
			}
		}
		if err := rit.Error(); err != nil {
			return fmt.Errorf("projections: %w", err)
		}
		if !found {
			return nil
		}
		c := cur
		if cand != cur.holder {
			c = dueCursor{}
		}
		if err := d.holder(cand, ended[cand], c); err != nil {
			return err
		}
		next, ok = nextTag(cand)
	}
	return nil
}

// nextTag returns the tag after t; ok is false after the last tag.
func nextTag(t tag) (tag, bool) {
	for i := tagLen - 1; i >= 0; i-- {
		if t[i]++; t[i] != 0 {
			return t, true
		}
	}
	return t, false
}

// endedByHolder reads the purpose-ended table: the purposes each holder
// declared ended at or before d.before, by purpose tag.
func (d *dueLister) endedByHolder(processor string) (map[tag][]endedPurpose, error) {
	prefix := []byte{tabEnded}
	if processor != "" {
		prefix = append(append(prefix, processor...), 0)
	}
	it, err := d.v.iter(prefix, prefixEnd(prefix))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[tag][]endedPurpose{}
	for it.First(); it.Valid(); it.Next() {
		name := it.Key()[1:]
		i := bytes.IndexByte(name, 0)
		if i < 0 {
			return nil, fmt.Errorf("%w: ended purpose key", ErrCorrupt)
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("projections: %w", err)
		}
		end, err := decodeEnded(val)
		if err != nil {
			return nil, err
		}
		if end.at.After(d.before) {
			continue
		}
		holder := d.v.s.tags.tag(tagProcessor, string(name[:i]))
		out[holder] = append(out[holder], endedPurpose{purpose: d.v.s.tags.tag(tagPurpose, string(name[i+1:])), end: end})
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	for _, e := range out {
		slices.SortFunc(e, func(a, b endedPurpose) int { return bytes.Compare(a.purpose[:], b.purpose[:]) })
	}
	return out, nil
}

// holder lists one holder's due holdings from the cursor on (a zero cursor
// section: from the start).
func (d *dueLister) holder(h tag, ended []endedPurpose, cur dueCursor) error {
	if cur.section != sectionUntil {
		lower := append([]byte{tabDue}, h[:]...)
		if cur.section == sectionFixed {
			lower = append(bytes.Clone(cur.key), 0)
		}
		upper := prefixEnd(encodeTime(append([]byte{tabDue}, h[:]...), d.before))
		if err := d.rows(lower, upper, 1+tagLen+timeLen, func(key []byte, p string, id holdingID) error {
			return d.fixed(h, key, p, id)
		}); err != nil {
			return err
		}
	}
	for _, e := range ended {
		if d.full() {
			return nil
		}
		if cur.section == sectionUntil && bytes.Compare(e.purpose[:], cur.purpose[:]) < 0 {
			continue
		}
		prefix := append(append([]byte{tabUntil}, h[:]...), e.purpose[:]...)
		lower := prefix
		if cur.section == sectionUntil && e.purpose == cur.purpose {
			lower = append(bytes.Clone(cur.key), 0)
		}
		if err := d.rows(lower, prefixEnd(prefix), 1+2*tagLen, func(key []byte, p string, id holdingID) error {
			return d.until(h, e, key, p, id)
		}); err != nil {
			return err
		}
	}
	return nil
}

// rows calls fn for each index row in [lower, upper) until the page is
// full; the pseudonym and holding id start at offset off of the key.
func (d *dueLister) rows(lower, upper []byte, off int, fn func(key []byte, p string, id holdingID) error) error {
	it, err := d.v.iter(lower, upper)
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid() && !d.full(); it.Next() {
		key := it.Key()
		if len(key) != off+pseudonymLen+holdingIDLen {
			return fmt.Errorf("%w: index key", ErrCorrupt)
		}
		if err := fn(bytes.Clone(key), hex.EncodeToString(key[off:off+pseudonymLen]), parseHoldingID(key[off+pseudonymLen:])); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	return nil
}

// load reads and opens a holding; ok is false (and err nil) when its key
// was destroyed.
func (d *dueLister) load(h tag, pseudonym string, id holdingID) (*piledgerv1.Holding, bool, error) {
	p, _ := pseudonymBytes(pseudonym)
	key := holdingKey(p, h, id)
	val, found, err := d.v.get(key)
	if err != nil {
		return nil, false, err
	}
	if !found {
		return nil, false, fmt.Errorf("%w: index row without its holding", ErrCorrupt)
	}
	hd := &piledgerv1.Holding{}
	switch err := open(d.v.ctx, d.v.s.keys, pseudonym, key, val, hd); {
	case errors.Is(err, errRowShredded):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return hd, true, nil
}

// fixed lists a holding from its due row.
func (d *dueLister) fixed(h tag, key []byte, pseudonym string, id holdingID) error {
	c := dueCursor{holder: h, section: sectionFixed, key: key}
	hd, ok, err := d.load(h, pseudonym, id)
	if err != nil {
		return err
	}
	if !ok {
		return d.shredded(h, pseudonym, id, decodeTime(key[1+tagLen:]), c)
	}
	if hd, err = d.v.evaluate(pseudonym, id, hd, d.now); err != nil {
		return err
	}
	d.items = append(d.items, dueItem{h: hd, cursor: c})
	return nil
}

// until lists a holding kept until a purpose its holder declared ended,
// unless its deadline is after d.before or it was listed from a due row.
func (d *dueLister) until(h tag, e endedPurpose, key []byte, pseudonym string, id holdingID) error {
	c := dueCursor{holder: h, section: sectionUntil, purpose: e.purpose, key: key}
	hd, ok, err := d.load(h, pseudonym, id)
	if err != nil {
		return err
	}
	if !ok {
		return d.shredded(h, pseudonym, id, e.end.at, c)
	}
	if fixed, _, has := deadline(hd); has && !fixed.After(d.before) {
		return nil // listed from its due row
	}
	if hd, err = d.v.evaluate(pseudonym, id, hd, d.now); err != nil {
		return err
	}
	if hd.DestroyDueTime == nil || hd.GetDestroyDueTime().AsTime().After(d.before) {
		return nil
	}
	d.items = append(d.items, dueItem{h: hd, cursor: c})
	return nil
}

// shredded lists a holding whose subject key was destroyed: only what the
// index row and the dictionary say.
func (d *dueLister) shredded(h tag, pseudonym string, id holdingID, due time.Time, c dueCursor) error {
	name, err := d.name(h)
	if err != nil {
		return err
	}
	hd := &piledgerv1.Holding{
		Name:           holdingName(pseudonym, id),
		Processor:      name,
		SourceIndex:    id.index,
		DestroyDueTime: timestamppb.New(due),
		Shredded:       true,
	}
	switch {
	case d.now.Before(due):
		hd.State = piledgerv1.HoldingState_HOLDING_STATE_HELD
	case d.now.Before(due.Add(d.v.s.cfg.DestructionGrace)):
		hd.State = piledgerv1.HoldingState_HOLDING_STATE_DUE
	default:
		hd.State = piledgerv1.HoldingState_HOLDING_STATE_OVERDUE
	}
	d.items = append(d.items, dueItem{h: hd, cursor: c})
	return nil
}

// name returns the processor name of a holder tag from the dictionary.
func (d *dueLister) name(h tag) (string, error) {
	if n, ok := d.names[h]; ok {
		return n, nil
	}
	key := nameKey(h)
	val, found, err := d.v.get(key)
	if err != nil || !found {
		return "", err
	}
	b, err := openBytes(d.v.ctx, d.v.s.keys, "", key, val)
	if err != nil {
		return "", err
	}
	d.names[h] = string(b)
	return string(b), nil
}
