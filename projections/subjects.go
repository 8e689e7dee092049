package projections

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// SubjectName returns the resource name of a subject, "subjects/{pseudonym}".
func SubjectName(pseudonym string) string { return "subjects/" + pseudonym }

// Resolve returns the pseudonym of a raw subject reference and whether the
// read models hold any event of the subject. ref is used for nothing else:
// it is not stored, logged or returned in errors. Callers validate ref (the
// ledger's rules for subjectRef: at most 256 bytes of UTF-8 without control
// characters).
func (s *Store) Resolve(ctx context.Context, ref string) (pseudonym string, recorded bool, err error) {
	pseudonym = s.keys.Pseudonym(ref)
	p, _ := pseudonymBytes(pseudonym)
	v, err := s.view(ctx, nil)
	if err != nil {
		return "", false, err
	}
	defer v.close()
	recorded, err = v.recorded(p)
	return pseudonym, recorded, err
}

// DataMap returns every holding of the subject, evaluated at the Store's
// clock: oldest first, with state, destruction deadline and what set it.
// Holdings sealed under a destroyed key are counted, not shown. It waits for
// minIndex first (see GetDataMapRequest.min_index) and returns ErrNotFound
// when the read models hold no event of the subject.
func (s *Store) DataMap(ctx context.Context, pseudonym string, minIndex *uint64) (*piledgerv1.DataMap, error) {
	p, ok := pseudonymBytes(pseudonym)
	if !ok {
		return nil, ErrNotFound
	}
	v, err := s.view(ctx, minIndex)
	if err != nil {
		return nil, err
	}
	defer v.close()
	return v.dataMap(pseudonym, p, s.cfg.Now())
}

func (v *view) dataMap(pseudonym string, p [pseudonymLen]byte, now time.Time) (*piledgerv1.DataMap, error) {
	if ok, err := v.recorded(p); err != nil {
		return nil, err
	} else if !ok {
		return nil, ErrNotFound
	}
	dm := &piledgerv1.DataMap{
		Name:         SubjectName(pseudonym) + "/datamap",
		Pseudonym:    pseudonym,
		EvaluateTime: timestamppb.New(now),
		LogSize:      v.pos.Size,
	}
	var err error
	if dm.Erasures, err = v.erasures(p); err != nil {
		return nil, err
	}
	type item struct {
		h  *piledgerv1.Holding
		id holdingID
	}
	var items []item
	prefix := subjectSub(p, subHolding)
	it, err := v.iter(prefix, prefixEnd(prefix))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		key := it.Key()
		if len(key) != len(prefix)+tagLen+holdingIDLen {
			return nil, fmt.Errorf("%w: holding key", ErrCorrupt)
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("projections: %w", err)
		}
		h := &piledgerv1.Holding{}
		switch err := open(v.ctx, v.s.keys, pseudonym, key, val, h); {
		case errors.Is(err, errRowShredded):
			dm.ShreddedHoldingCount++
			continue
		case err != nil:
			return nil, err
		}
		h, err = v.evaluate(pseudonym, parseHoldingID(key[len(prefix)+tagLen:]), h, now)
		if err != nil {
			return nil, err
		}
		items = append(items, item{h: h, id: parseHoldingID(key[len(prefix)+tagLen:])})
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := a.h.GetObtainTime().AsTime().Compare(b.h.GetObtainTime().AsTime()); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.id.index, b.id.index), cmp.Compare(a.id.n, b.id.n))
	})
	for _, x := range items {
		dm.Holdings = append(dm.Holdings, x.h)
	}
	return dm, nil
}

// evaluate names a stored holding, merges the processor-wide end of its
// purpose and computes its state at now.
func (v *view) evaluate(pseudonym string, id holdingID, h *piledgerv1.Holding, now time.Time) (*piledgerv1.Holding, error) {
	end, err := v.purposeEnded(h.GetProcessor(), h.GetRetention().GetUntilPurposeEnds())
	if err != nil {
		return nil, err
	}
	return v.s.evaluateAt(pseudonym, id, h, end, now), nil
}

// evaluateAt names a holding, merges end (the processor-wide end of its
// purpose, zero when none) and computes its state at now. h may be
// modified.
func (s *Store) evaluateAt(pseudonym string, id holdingID, h *piledgerv1.Holding, end purposeEnd, now time.Time) *piledgerv1.Holding {
	h = withPurposeEnd(h, end)
	h.Name = holdingName(pseudonym, id)
	evaluate(h, now, s.cfg.DestructionGrace, s.vocab)
	return h
}

func holdingName(pseudonym string, id holdingID) string {
	return SubjectName(pseudonym) + "/holdings/" + strconv.FormatUint(id.index, 10) + "-" + strconv.FormatUint(uint64(id.n), 10)
}

// SubjectEvents returns one page of the subject's events, newest first (by
// occurredAt, then log order), from the page token's position (empty: the
// first page). pageSize 0 means DefaultPageSize; larger than MaxPageSize is
// coerced. It returns ErrInvalidPageToken for a token not issued for this
// subject, and ErrNotFound when the read models hold no event of the
// subject. Events sealed under a destroyed key are skipped.
func (s *Store) SubjectEvents(ctx context.Context, pseudonym string, size int, pageToken string, minIndex *uint64) (*piledgerv1.ListSubjectEventsResponse, error) {
	p, ok := pseudonymBytes(pseudonym)
	if !ok {
		return nil, ErrNotFound
	}
	bind := "events\x00" + pseudonym
	prefix := subjectSub(p, subTimeline)
	upper := prefixEnd(prefix)
	if pageToken != "" {
		cursor, err := s.openToken(ctx, bind, pageToken)
		if err != nil {
			return nil, err
		}
		if len(cursor) != timeLen+8 {
			return nil, ErrInvalidPageToken
		}
		upper = append(prefix[:len(prefix):len(prefix)], cursor...)
	}
	v, err := s.view(ctx, minIndex)
	if err != nil {
		return nil, err
	}
	defer v.close()
	if ok, err := v.recorded(p); err != nil {
		return nil, err
	} else if !ok {
		return nil, ErrNotFound
	}
	resp := &piledgerv1.ListSubjectEventsResponse{LogSize: v.pos.Size}
	if resp.Erasures, err = v.erasures(p); err != nil {
		return nil, err
	}
	size = pageSize(size)
	var last []byte
	err = v.events(pseudonym, prefix, upper, func(key []byte, se *piledgerv1.SubjectEvent) bool {
		if len(resp.SubjectEvents) == size {
			return false
		}
		resp.SubjectEvents = append(resp.SubjectEvents, se)
		last = bytes.Clone(key)
		return true
	})
	if err != nil {
		return nil, err
	}
	if len(resp.SubjectEvents) == size && last != nil {
		// Is there anything after the page? The token is only issued if so.
		more := false
		if err := v.events(pseudonym, prefix, last, func([]byte, *piledgerv1.SubjectEvent) bool { more = true; return false }); err != nil {
			return nil, err
		}
		if more {
			if resp.NextPageToken, err = s.sealToken(ctx, bind, last[len(prefix):]); err != nil {
				return nil, err
			}
		}
	}
	return resp, nil
}

// events calls fn with the subject's timeline rows in [lower, upper),
// newest first, until fn returns false. Rows sealed under a destroyed key
// are skipped. key is valid only during the call.
func (v *view) events(pseudonym string, lower, upper []byte, fn func(key []byte, se *piledgerv1.SubjectEvent) bool) error {
	it, err := v.iter(lower, upper)
	if err != nil {
		return err
	}
	defer it.Close()
	for it.Last(); it.Valid(); it.Prev() {
		val, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("projections: %w", err)
		}
		se := &piledgerv1.SubjectEvent{}
		switch err := open(v.ctx, v.s.keys, pseudonym, it.Key(), val, se); {
		case errors.Is(err, errRowShredded):
			continue
		case err != nil:
			return err
		}
		se.Name = SubjectName(pseudonym) + "/events/" + se.GetEvent().GetEventId()
		if !fn(it.Key(), se) {
			break
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	return nil
}

// Export returns everything the read models hold about the subject: the
// data map, every event newest first, and the state of each consent. It
// waits for minIndex first and returns ErrNotFound when the read models
// hold no event of the subject.
func (s *Store) Export(ctx context.Context, pseudonym string, minIndex *uint64) (*piledgerv1.SubjectExport, error) {
	p, ok := pseudonymBytes(pseudonym)
	if !ok {
		return nil, ErrNotFound
	}
	v, err := s.view(ctx, minIndex)
	if err != nil {
		return nil, err
	}
	defer v.close()
	now := s.cfg.Now()
	dm, err := v.dataMap(pseudonym, p, now)
	if err != nil {
		return nil, err
	}
	out := &piledgerv1.SubjectExport{
		Name:       SubjectName(pseudonym),
		Pseudonym:  pseudonym,
		ExportTime: timestamppb.New(now),
		LogSize:    v.pos.Size,
		DataMap:    dm,
	}
	consents := map[[2]string]*piledgerv1.ConsentStatus{}
	prefix := subjectSub(p, subTimeline)
	err = v.events(pseudonym, prefix, prefixEnd(prefix), func(_ []byte, se *piledgerv1.SubjectEvent) bool {
		out.Events = append(out.Events, se)
		ev := se.GetEvent()
		var state piledgerv1.ConsentState
		switch ev.GetOperation() {
		case piledgerv1.Operation_OPERATION_CONSENT_GRANTED:
			state = piledgerv1.ConsentState_CONSENT_STATE_GRANTED
		case piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN:
			state = piledgerv1.ConsentState_CONSENT_STATE_WITHDRAWN
		default:
			return true
		}
		k := [2]string{ev.GetProcessor(), ev.GetPurpose()}
		if cur := consents[k]; cur != nil && !earlier(cur.GetUpdateTime().AsTime(), cur.GetEventId(), ev.GetOccurredAt(), ev.GetEventId()) {
			return true // cur is the later statement
		}
		consents[k] = &piledgerv1.ConsentStatus{
			Processor: ev.GetProcessor(), Purpose: ev.GetPurpose(), State: state,
			UpdateTime: ev.GetOccurredAt(), EventId: ev.GetEventId(), Consent: ev.GetConsent(),
			DataCategories: ev.GetDataCategories(),
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	for _, k := range slices.SortedFunc(maps.Keys(consents), func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	}) {
		out.Consents = append(out.Consents, consents[k])
	}
	return out, nil
}
