package projections

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/crypto"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// txn is one batch of the projector: an indexed Pebble batch, so that each
// event sees the rows the earlier events of the batch wrote, and the counts
// as they will be once the batch commits.
type txn struct {
	s      *Store
	ctx    context.Context
	b      *pebble.Batch
	counts Counts
	events int              // log entries in the batch
	names  []tag            // dictionary rows written by the batch
	deltas map[string]int64 // holding-count changes, written at commit

	cur   *piledgerv1.LogEntry // the entry being applied
	nfind uint16               // findings it raised so far
}

func (s *Store) newTxn(ctx context.Context, counts Counts) *txn {
	return &txn{s: s, ctx: ctx, b: s.db.NewIndexedBatch(), counts: counts, deltas: map[string]int64{}}
}

// commit writes the batch with the position and counts, synced, and
// publishes the new position.
func (t *txn) commit(pos Position) error {
	defer t.b.Close()
	if err := t.writeCounts(); err != nil {
		return err
	}
	if err := t.b.Set(metaPosition, encodePosition(pos, t.counts), nil); err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	if err := t.b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("%w: commit: %w", errStorage, err)
	}
	for _, n := range t.names {
		t.s.names.Store(n, struct{}{})
	}
	t.s.advance(pos, t.counts, nil)
	return nil
}

func (t *txn) discard() { t.b.Close() }

func (t *txn) get(key []byte) ([]byte, bool, error) {
	v, closer, err := t.b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", errStorage, err)
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

func (t *txn) set(key, value []byte) error {
	if err := t.b.Set(key, value, nil); err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	return nil
}

func (t *txn) delete(key []byte) error {
	if err := t.b.Delete(key, nil); err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	return nil
}

// scan calls fn for every row with the prefix, as the batch sees them when
// scan starts. fn must not keep key or value.
func (t *txn) scan(prefix []byte, fn func(key, value []byte) error) error {
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("%w: %w", errStorage, err)
		}
		if err := fn(it.Key(), v); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	return nil
}

// scanSealed calls fn for every row of the subject under prefix, opened
// into a new message made by newMsg, as the batch sees them when it starts;
// rows sealed under a destroyed key generation are skipped. fn must not
// keep key.
func scanSealed[M proto.Message](t *txn, sub subject, prefix []byte, newMsg func() M, fn func(key []byte, m M) error) error {
	return t.scan(prefix, func(key, value []byte) error {
		m := newMsg()
		switch err := open(t.ctx, t.s.keys, sub.pseudonym, key, value, m); {
		case errors.Is(err, errRowShredded):
			return nil
		case err != nil:
			return err
		}
		return fn(key, m)
	})
}

func newSubjectEvent() *piledgerv1.SubjectEvent { return &piledgerv1.SubjectEvent{} }

func newHolding() *piledgerv1.Holding { return &piledgerv1.Holding{} }

// subject is the subject of the event being applied.
type subject struct {
	pseudonym string
	p         [pseudonymLen]byte
	key       crypto.SubjectKey // sealing key, fetched once per event
}

// seen reports, for each entry of a block, whether its event id was
// applied before (in an earlier batch, earlier in this batch, or earlier in
// the block). Event ids are time-ordered UUIDs, so sorted lookups on one
// iterator are cheaper than a point read each.
func (t *txn) seen(entries []*piledgerv1.LogEntry) ([]bool, error) {
	out := make([]bool, len(entries))
	keys := make([][]byte, len(entries))
	order := make([]int, len(entries))
	for i, e := range entries {
		keys[i], order[i] = seenKey(e.GetHeader().GetEventId()), i
	}
	// Stable: copies of one id keep log order, so the first is the one applied.
	slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: []byte{tabSeen}, UpperBound: []byte{tabSeen + 1}})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStorage, err)
	}
	defer it.Close()
	for n, i := range order {
		if n > 0 && bytes.Equal(keys[i], keys[order[n-1]]) {
			out[i] = true // the same id earlier in this block
			continue
		}
		out[i] = it.SeekGE(keys[i]) && bytes.Equal(it.Key(), keys[i])
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("%w: %w", errStorage, err)
	}
	return out, nil
}

// apply applies one log entry; seen says whether its event id was applied
// before (see txn.seen). Each event id counts once: a repeated id is counted
// as a duplicate and changes nothing. Shredded entries (the subject key is
// gone) are counted and change nothing else.
func (t *txn) apply(e *piledgerv1.LogEntry, seen bool) error {
	h := e.GetHeader()
	if p, ok := pseudonymBytes(h.GetPseudonym()); ok && !h.GetErasure() {
		if err := t.countEntry(p, e.GetIndex()); err != nil {
			return err
		}
	}
	if seen {
		t.counts.Duplicates++
		return nil
	}
	if err := t.set(seenKey(h.GetEventId()), binary.BigEndian.AppendUint64(nil, e.GetIndex())); err != nil {
		return err
	}
	ev := e.GetEvent()
	t.cur, t.nfind = e, 0
	switch {
	case h.GetErasure():
		t.counts.Applied++
		return t.erase(e)
	case e.GetShredded() || ev == nil:
		t.counts.Shredded++
		return nil
	case h.GetPseudonym() == "" && ev.GetOperation() == piledgerv1.Operation_OPERATION_PURPOSE_ENDED:
		t.counts.Applied++
		if err := t.raiseEvent(e, nil); err != nil {
			return err
		}
		return t.endPurpose(e.GetIndex(), ev)
	case h.GetPseudonym() == "":
		t.counts.Ignored++
		return t.raiseEvent(e, nil)
	}
	sub := subject{pseudonym: h.GetPseudonym()}
	var ok bool
	if sub.p, ok = pseudonymBytes(sub.pseudonym); !ok {
		return fmt.Errorf("%w: envelope header holds a malformed pseudonym", ErrCorrupt)
	}
	// The rows of an event are sealed under the key that sealed the event,
	// not the subject's current key: an event read (decrypted) just before
	// an erasure must not be written under the generation created after it,
	// which the erasure does not destroy.
	gen := h.GetKeyGeneration()
	aead, err := t.s.keys.OpeningKey(t.ctx, sub.pseudonym, gen)
	if errors.Is(err, crypto.ErrShredded) || errors.Is(err, crypto.ErrKeyNotFound) {
		t.counts.Shredded++ // erased after the event was read: nothing to write
		return nil
	}
	if err != nil {
		return fmt.Errorf("projections: subject key: %w", err)
	}
	sub.key = crypto.SubjectKey{Generation: gen, AEAD: aead}
	ev.SubjectRef = "" // the read models never keep the raw reference
	if err := t.raiseEvent(e, &sub); err != nil {
		return err
	}
	se := &piledgerv1.SubjectEvent{Index: e.GetIndex(), RecordTime: h.GetRecordedAt(), Event: ev}
	if err := t.subjectEvent(sub, se); err != nil {
		return err
	}
	t.counts.Applied++
	return nil
}

// subjectEvent writes the timeline row of an event and applies it to the
// subject's holdings.
func (t *txn) subjectEvent(sub subject, se *piledgerv1.SubjectEvent) error {
	ev := se.GetEvent()
	key := timelineKey(sub.p, ev.GetOccurredAt().AsTime(), se.GetIndex())
	v, err := seal(sub.key, key, se)
	if err != nil {
		return err
	}
	if err := t.set(key, v); err != nil {
		return err
	}
	r := ev.GetRecipient()
	switch ev.GetOperation() {
	case piledgerv1.Operation_OPERATION_COLLECT:
		return t.createHoldings(sub, se, holder{processor: ev.GetProcessor(), system: ev.GetSystem(), provenance: piledgerv1.Provenance_PROVENANCE_COLLECTED})
	case piledgerv1.Operation_OPERATION_STORE:
		return t.createHoldings(sub, se, holder{processor: ev.GetProcessor(), system: ev.GetSystem(), provenance: piledgerv1.Provenance_PROVENANCE_STORED})
	case piledgerv1.Operation_OPERATION_TRANSMIT:
		if r == nil {
			return nil // moved inside the processor to an unnamed system: nothing new is held
		}
		return t.createHoldings(sub, se, fromSource(ev, piledgerv1.Provenance_PROVENANCE_TRANSMITTED))
	case piledgerv1.Operation_OPERATION_PROVIDE:
		return t.createHoldings(sub, se, fromSource(ev, piledgerv1.Provenance_PROVENANCE_PROVIDED))
	case piledgerv1.Operation_OPERATION_ENTRUST:
		return t.createHoldings(sub, se, fromSource(ev, piledgerv1.Provenance_PROVENANCE_ENTRUSTED))
	case piledgerv1.Operation_OPERATION_TRANSFER_ABROAD:
		return t.createHoldings(sub, se, fromSource(ev, piledgerv1.Provenance_PROVENANCE_TRANSFERRED_ABROAD))
	case piledgerv1.Operation_OPERATION_DESTROY:
		return t.record(sub, recDestroy, se)
	case piledgerv1.Operation_OPERATION_DISCLOSE:
		return t.record(sub, recDisclose, se)
	case piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN:
		return t.record(sub, recWithdraw, se)
	case piledgerv1.Operation_OPERATION_PURPOSE_ENDED:
		return t.record(sub, recPurposeEnd, se)
	}
	return nil // use, process, access, consent granted: timeline only
}

// holder is who holds the holdings an event creates, and how they got them.
type holder struct {
	processor, system             string
	provenance                    piledgerv1.Provenance
	sourceProcessor, sourceSystem string
	country                       string
}

// fromSource is the recipient of an event that passes data on.
func fromSource(ev *piledgerv1.Event, p piledgerv1.Provenance) holder {
	r := ev.GetRecipient()
	return holder{
		processor: r.GetProcessor(), system: r.GetSystem(), country: r.GetCountry(), provenance: p,
		sourceProcessor: ev.GetProcessor(), sourceSystem: ev.GetSystem(),
	}
}

// record is a stored destroy, disclosure, withdrawal or purpose end.
type record struct {
	kind byte
	ev   *piledgerv1.Event
}

// createHoldings creates one holding per data category of the event, with
// every record of the subject at the holder already applied to it (a
// destroy reported before the collection it destroys still destroys it).
func (t *txn) createHoldings(sub subject, se *piledgerv1.SubjectEvent, to holder) error {
	ev := se.GetEvent()
	htag := t.s.tags.tag(tagProcessor, to.processor)
	records, err := t.records(sub, htag)
	if err != nil {
		return err
	}
	for n, category := range ev.GetDataCategories() {
		h := &piledgerv1.Holding{
			Processor:       to.processor,
			System:          to.system,
			DataCategory:    category,
			ObtainTime:      ev.GetOccurredAt(),
			Purpose:         ev.GetPurpose(),
			LegalBasis:      ev.GetLegalBasis(),
			Consent:         ev.GetConsent(),
			Provenance:      to.provenance,
			SourceProcessor: to.sourceProcessor,
			SourceSystem:    to.sourceSystem,
			Country:         to.country,
			PlaceKind:       ev.GetPlace().GetKind(),
			SourceEventId:   ev.GetEventId(),
			SourceIndex:     se.GetIndex(),
			Retention:       ev.GetRetention(),
		}
		for _, r := range records {
			applyRecord(h, r.kind, r.ev)
		}
		if err := t.putHolding(sub, htag, holdingID{index: se.GetIndex(), n: uint16(n)}, h, nil); err != nil {
			return err
		}
	}
	return nil
}

// records returns the subject's records at the processor with tag ptag.
// Rows sealed under a destroyed key generation are skipped. A subject's
// first records are usually written after its first holdings: a point read
// of the subject's flag row for the processor (a bloom-filter miss, mostly)
// spares the scan.
func (t *txn) records(sub subject, ptag tag) ([]record, error) {
	if _, found, err := t.get(recordFlagKey(sub.p, ptag)); err != nil || !found {
		return nil, err
	}
	var out []record
	prefix := recordPrefix(sub.p, ptag)
	err := scanSealed(t, sub, prefix, newSubjectEvent, func(key []byte, se *piledgerv1.SubjectEvent) error {
		if len(key) != len(prefix)+1+8 {
			return fmt.Errorf("%w: record key", ErrCorrupt)
		}
		out = append(out, record{kind: key[len(prefix)], ev: se.GetEvent()})
		return nil
	})
	return out, err
}

// record stores a destroy, disclosure, withdrawal or purpose end and applies
// it to the subject's holdings at the event's processor.
func (t *txn) record(sub subject, kind byte, se *piledgerv1.SubjectEvent) error {
	ev := se.GetEvent()
	ptag := t.s.tags.tag(tagProcessor, ev.GetProcessor())
	key := recordKey(sub.p, kind, ptag, se.GetIndex())
	v, err := seal(sub.key, key, se)
	if err != nil {
		return err
	}
	if err := t.set(key, v); err != nil {
		return err
	}
	if err := t.set(recordFlagKey(sub.p, ptag), nil); err != nil {
		return err
	}
	type change struct {
		id       holdingID
		old, new *piledgerv1.Holding
	}
	var changes []change
	prefix := holdingPrefix(sub.p, ptag)
	err = scanSealed(t, sub, prefix, newHolding, func(key []byte, h *piledgerv1.Holding) error {
		old := cloneHolding(h)
		if applyRecord(h, kind, ev) {
			changes = append(changes, change{id: parseHoldingID(key[len(prefix):]), old: old, new: h})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range changes {
		if err := t.putHolding(sub, ptag, c.id, c.new, c.old); err != nil {
			return err
		}
	}
	return nil
}

// putHolding writes a holding and brings its index rows and counts in line:
// an open holding has a due row when its deadline is fixed, an until row
// when it is kept until a purpose ends, and counts towards its purpose.
// old is the holding as stored before, nil for a new one.
func (t *txn) putHolding(sub subject, htag tag, id holdingID, h, old *piledgerv1.Holding) error {
	key := holdingKey(sub.p, htag, id)
	v, err := seal(sub.key, key, h)
	if err != nil {
		return err
	}
	if err := t.set(key, v); err != nil {
		return err
	}
	before, after := t.indexKeys(sub, htag, id, old), t.indexKeys(sub, htag, id, h)
	for _, k := range before {
		if !containsKey(after, k) {
			if err := t.delete(k); err != nil {
				return err
			}
		}
	}
	for _, k := range after {
		if !containsKey(before, k) {
			if err := t.set(k, nil); err != nil {
				return err
			}
		}
	}
	wasOpen, isOpen := old != nil && old.DestroyTime == nil, h.DestroyTime == nil
	switch {
	case isOpen && !wasOpen:
		t.addCount(h, 1)
	case wasOpen && !isOpen:
		t.addCount(h, -1)
	}
	if !isOpen && (old == nil || old.DestroyTime == nil) {
		if err := t.raiseHolding(sub, id, h); err != nil {
			return err
		}
	}
	if old == nil {
		return t.ensureName(htag, h.GetProcessor())
	}
	return nil
}

// indexKeys returns the index rows of a holding: none once destroyed.
func (t *txn) indexKeys(sub subject, htag tag, id holdingID, h *piledgerv1.Holding) [][]byte {
	if h == nil || h.DestroyTime != nil {
		return nil
	}
	var keys [][]byte
	if at, _, ok := deadline(h); ok {
		keys = append(keys, dueKey(htag, at, sub.p, id))
	}
	if p := h.GetRetention().GetUntilPurposeEnds(); p != "" {
		keys = append(keys, untilKey(htag, t.s.tags.tag(tagPurpose, p), sub.p, id))
	}
	return keys
}

func containsKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

// addCount adds delta to the count of open holdings of h's purpose, holder,
// system, category and day; the batch's changes are written at commit.
// Holdings obtained for no purpose are not counted.
func (t *txn) addCount(h *piledgerv1.Holding, delta int64) {
	if h.GetPurpose() == "" {
		return
	}
	t.deltas[string(countKey(h.GetPurpose(), h.GetProcessor(), h.GetSystem(), h.GetDataCategory(), daysSinceEpoch(h.GetObtainTime().AsTime())))] += delta
}

// writeCounts applies the batch's count changes: one read and one write per
// distinct count, however many holdings changed it.
func (t *txn) writeCounts() error {
	for key, delta := range t.deltas {
		if delta == 0 {
			continue
		}
		v, found, err := t.get([]byte(key))
		if err != nil {
			return err
		}
		var n int64
		if found {
			if len(v) != 8 {
				return fmt.Errorf("%w: holding count", ErrCorrupt)
			}
			n = int64(binary.BigEndian.Uint64(v))
		}
		if n += delta; n <= 0 {
			err = t.delete([]byte(key))
		} else {
			err = t.set([]byte(key), binary.BigEndian.AppendUint64(nil, uint64(n)))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ensureName stores the dictionary row of a holder tag, sealed under the
// ledger's own key, once.
func (t *txn) ensureName(tg tag, name string) error {
	if _, ok := t.s.names.Load(tg); ok {
		return nil
	}
	key := nameKey(tg)
	if _, found, err := t.get(key); err != nil || found {
		return err
	}
	k, err := t.s.keys.SealingKey(t.ctx, "")
	if err != nil {
		return fmt.Errorf("projections: ledger key: %w", err)
	}
	v, err := sealBytes(k, key, []byte(name))
	if err != nil {
		return err
	}
	t.names = append(t.names, tg)
	return t.set(key, v)
}

// endPurpose records a processor's end of a purpose for all its subjects:
// one row, the earliest end counting. Holdings read it at query time.
func (t *txn) endPurpose(index uint64, ev *piledgerv1.Event) error {
	key := endedKey(ev.GetProcessor(), ev.GetPurpose())
	v, found, err := t.get(key)
	if err != nil {
		return err
	}
	at := ev.GetOccurredAt().AsTime()
	if found {
		cur, err := decodeEnded(v)
		if err != nil {
			return err
		}
		if !earlier(at, ev.GetEventId(), timestamppb.New(cur.at), cur.eventID) {
			return nil
		}
	}
	v = encodeTime(nil, at)
	v = binary.BigEndian.AppendUint64(v, index)
	return t.set(key, append(v, ev.GetEventId()...))
}

// decodeEnded decodes an ended-purpose row.
func decodeEnded(v []byte) (purposeEnd, error) {
	if len(v) < timeLen+8 {
		return purposeEnd{}, fmt.Errorf("%w: ended purpose row", ErrCorrupt)
	}
	return purposeEnd{at: decodeTime(v), eventID: string(v[timeLen+8:])}, nil
}
