package projections

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// FindingQuery selects findings. Every filter is optional.
type FindingQuery struct {
	// Rule keeps only findings of this rule.
	Rule string
	// Processor keeps only findings about this processor.
	Processor string
	// Severity keeps only findings of at least this severity.
	Severity piledgerv1.FindingSeverity
	// Start and End keep only findings whose event happened in [Start, End);
	// a zero time is no bound.
	Start, End time.Time
	// PageSize: 0 means DefaultPageSize; above MaxPageSize is coerced.
	PageSize int
	// PageToken continues a previous answer; empty for the first page.
	PageToken string
	// MinIndex, when set, makes the query wait until the log entry at this
	// index is applied (read your writes).
	MinIndex *uint64
}

// bind is what a page token is bound to: every parameter but the page.
func (q FindingQuery) bind() string {
	b := fmt.Appendf(nil, "findings\x00%s\x00%s\x00%d\x00", q.Rule, q.Processor, q.Severity)
	for _, t := range []time.Time{q.Start, q.End} {
		if !t.IsZero() {
			b = encodeTime(b, t)
		}
		b = append(b, 0)
	}
	return string(b)
}

func (q FindingQuery) keep(f *piledgerv1.Finding) bool {
	at := f.GetOccurTime().AsTime()
	return (q.Rule == "" || f.GetRule() == q.Rule) &&
		(q.Processor == "" || f.GetProcessor() == q.Processor) &&
		f.GetSeverity() >= q.Severity &&
		(q.Start.IsZero() || !at.Before(q.Start)) &&
		(q.End.IsZero() || at.Before(q.End))
}

// findingCursor is the position of a findings page, sealed in its token:
// the evaluation time of computed findings (fixed by the first page), then
// either the last stored finding's key, or the due-holdings cursor of the
// last holding whose computed findings were all returned and how many of
// the next holding's were.
type findingCursor struct {
	now      time.Time
	computed bool
	key      []byte    // stored: the last key returned
	due      dueCursor // computed: after this holding
	skip     int       // computed: findings of the next holding already returned
}

func (c findingCursor) encode() []byte {
	b := encodeTime(nil, c.now)
	if !c.computed {
		return append(append(b, 's'), c.key...)
	}
	b = binary.BigEndian.AppendUint16(append(b, 'c'), uint16(c.skip))
	return append(b, c.due.encode()...)
}

func decodeFindingCursor(b []byte) (findingCursor, error) {
	if len(b) < timeLen+1 {
		return findingCursor{}, ErrInvalidPageToken
	}
	c := findingCursor{now: decodeTime(b)}
	switch b[timeLen] {
	case 's':
		c.key = bytes.Clone(b[timeLen+1:])
		return c, nil
	case 'c':
		rest := b[timeLen+1:]
		if len(rest) < 2 {
			return findingCursor{}, ErrInvalidPageToken
		}
		c.computed, c.skip = true, int(binary.BigEndian.Uint16(rest))
		var err error
		c.due, err = decodeDueCursor(rest[2:])
		return c, err
	}
	return findingCursor{}, ErrInvalidPageToken
}

// Findings lists findings (see piledgerv1.FindingService): first the
// stored findings in log order, then the findings computed at the query's
// evaluation time on the holdings past their deadline (in the order of
// DueHoldings). A finding whose subject was erased is listed with
// Shredded set and without its holding. Every page of one listing uses the
// first page's evaluation time.
//
// It returns ErrInvalidPageToken for a token issued for other parameters.
func (s *Store) Findings(ctx context.Context, q FindingQuery) (*piledgerv1.ListFindingsResponse, error) {
	bind := q.bind()
	cur := findingCursor{now: s.cfg.Now()}
	if q.PageToken != "" {
		b, err := s.openToken(ctx, bind, q.PageToken)
		if err != nil {
			return nil, err
		}
		if cur, err = decodeFindingCursor(b); err != nil {
			return nil, err
		}
	}
	v, err := s.view(ctx, q.MinIndex)
	if err != nil {
		return nil, err
	}
	defer v.close()
	l := &findingLister{v: v, q: q, size: pageSize(q.PageSize), now: cur.now}
	if !cur.computed {
		if err := l.stored(cur.key); err != nil {
			return nil, err
		}
		if l.next == nil {
			cur = findingCursor{now: cur.now, computed: true}
		}
	}
	if cur.computed && l.next == nil {
		if err := l.computedFrom(cur.due, cur.skip); err != nil {
			return nil, err
		}
	}
	resp := &piledgerv1.ListFindingsResponse{
		Findings:      l.out,
		LogSize:       v.pos.Size,
		EvaluateTime:  timestamppb.New(cur.now),
		PolicyVersion: s.cfg.Policy.Version(),
	}
	if l.next != nil {
		l.next.now = cur.now
		if resp.NextPageToken, err = s.sealToken(ctx, bind, l.next.encode()); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// findingLister collects one page of findings.
type findingLister struct {
	v    *view
	q    FindingQuery
	size int
	now  time.Time
	out  []*piledgerv1.Finding
	next *findingCursor // where the next page starts; nil when none
}

// stored lists stored findings after key (nil: from the first) until the
// page is full.
func (l *findingLister) stored(after []byte) error {
	lower := []byte{tabFinding}
	if after != nil {
		lower = append(bytes.Clone(after), 0)
	}
	it, err := l.v.iter(lower, []byte{tabFinding + 1})
	if err != nil {
		return err
	}
	defer it.Close()
	var last []byte
	for it.First(); it.Valid(); it.Next() {
		val, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("projections: %w", err)
		}
		f, err := l.v.openFinding(it.Key(), val)
		if err != nil {
			return err
		}
		if !l.q.keep(f) {
			continue
		}
		if len(l.out) == l.size {
			l.next = &findingCursor{key: last}
			return nil
		}
		l.out = append(l.out, f)
		last = bytes.Clone(it.Key())
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	return nil
}

// openFinding decodes a stored finding row.
func (v *view) openFinding(key, val []byte) (*piledgerv1.Finding, error) {
	n, w := binary.Uvarint(val)
	if w <= 0 || uint64(len(val)-w) < n {
		return nil, fmt.Errorf("%w: finding row", ErrCorrupt)
	}
	a, b := val[w:w+int(n)], val[w+int(n):]
	f := &piledgerv1.Finding{}
	if err := open(v.ctx, v.s.keys, "", key, a, f); err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return f, nil
	}
	h := &piledgerv1.Holding{}
	switch err := open(v.ctx, v.s.keys, f.GetPseudonym(), append(bytes.Clone(key), 'h'), b, h); {
	case errors.Is(err, errRowShredded):
		f.Shredded = true
	case err != nil:
		return nil, err
	default:
		f.Holding = h
	}
	return f, nil
}

// computedFrom lists the findings computed on the holdings past their
// deadline, after the due cursor and skipping skip findings of the next
// holding, until the page is full.
func (l *findingLister) computedFrom(after dueCursor, skip int) error {
	const chunk = 256
	for {
		d := &dueLister{v: l.v, before: l.now, now: l.now, size: chunk, names: map[tag]string{}}
		if err := d.list(l.q.Processor, after); err != nil {
			return err
		}
		for i, it := range d.items {
			if i == d.size {
				break // the extra item tells another chunk follows
			}
			fs := l.computed(it.h)
			for j := skip; j < len(fs); j++ {
				if len(l.out) == l.size {
					l.next = &findingCursor{computed: true, due: after, skip: j}
					return nil
				}
				l.out = append(l.out, fs[j])
			}
			after, skip = it.cursor, 0
		}
		if !d.full() {
			return nil
		}
	}
}

// computed returns the findings the holding rules raise on an open holding
// past its deadline, as of the listing's evaluation time.
func (l *findingLister) computed(h *piledgerv1.Holding) []*piledgerv1.Finding {
	if h.GetShredded() {
		return nil // erased: the data is gone with the key
	}
	var out []*piledgerv1.Finding
	for _, r := range l.v.s.cfg.Policy.EvaluateHolding(h, l.now) {
		f := &piledgerv1.Finding{
			Name:           "findings/computed/" + h.GetName(),
			Rule:           r.Name,
			Severity:       r.Severity,
			LegalReference: r.Reference,
			Description:    r.Description,
			RuleVersion:    r.Version,
			Processor:      h.GetProcessor(),
			Pseudonym:      pseudonymOf(h.GetName()),
			LogIndex:       h.GetSourceIndex(),
			EventId:        h.GetSourceEventId(),
			Operation:      provenanceOperation[h.GetProvenance()],
			OccurTime:      h.GetObtainTime(),
			Holding:        h,
			Computed:       true,
		}
		if l.q.keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// pseudonymOf returns the pseudonym in a holding name
// ("subjects/{pseudonym}/holdings/...").
func pseudonymOf(holdingName string) string {
	const prefix = "subjects/"
	if len(holdingName) < len(prefix)+2*pseudonymLen {
		return ""
	}
	return holdingName[len(prefix) : len(prefix)+2*pseudonymLen]
}

// provenanceOperation is the operation that creates a holding of each
// provenance.
var provenanceOperation = map[piledgerv1.Provenance]piledgerv1.Operation{
	piledgerv1.Provenance_PROVENANCE_COLLECTED:          piledgerv1.Operation_OPERATION_COLLECT,
	piledgerv1.Provenance_PROVENANCE_STORED:             piledgerv1.Operation_OPERATION_STORE,
	piledgerv1.Provenance_PROVENANCE_TRANSMITTED:        piledgerv1.Operation_OPERATION_TRANSMIT,
	piledgerv1.Provenance_PROVENANCE_PROVIDED:           piledgerv1.Operation_OPERATION_PROVIDE,
	piledgerv1.Provenance_PROVENANCE_ENTRUSTED:          piledgerv1.Operation_OPERATION_ENTRUST,
	piledgerv1.Provenance_PROVENANCE_TRANSFERRED_ABROAD: piledgerv1.Operation_OPERATION_TRANSFER_ABROAD,
}
