package projections

import (
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The holding state machine.
//
// A holding is one data category of one subject held by one processor (and
// system), created by one event: collect, store, transmit (with a
// recipient), provide, entrust or transfer abroad. Its stored facts are
// what that event said plus what later or earlier events of the subject did
// to it. Every rule below depends only on the set of events, never on the
// order they reached the log, so a late-reported event (an occurredAt older
// than events already applied) lands where it belongs:
//
//   - destroy (processor X, optional system S, categories C, at T) destroys
//     every holding of X (in S) of a category in C obtained at or before T;
//     a holding takes the earliest such destroy (by time, then event id);
//   - disclose marks holdings the same way (the earliest disclosure counts);
//   - consent withdrawn (X, purpose P, optional categories, at W) ends the
//     holdings of X for P obtained at or before W that rely on consent
//     (legal basis "consent", or no basis but a consent): they are due at
//     the earliest such W (PIPL Art. 47(1)(3));
//   - purpose ended (X, P, at E), for the subject or, without a subject, for
//     every subject of X: holdings of X kept until P ends are due at
//     max(E, obtained), the earliest E counting. The subjectless event is a
//     single row in the "ended purposes" table, read at query time, so it
//     costs no write per subject.
//
// The deadline is the earliest of keep_for (from the obtain time),
// keep_until, the purpose end and the consent withdrawal; the minimum
// retention postpones a deadline that falls inside it. The state follows
// from the deadline, the destruction and the evaluation time; see
// evaluate.

// earlier reports whether (t, id) comes before the time and id stored in
// (cur, curID); an unset cur is never earlier.
func earlier(t time.Time, id string, cur *timestamppb.Timestamp, curID string) bool {
	if cur == nil {
		return true
	}
	c := cur.AsTime()
	return t.Before(c) || t.Equal(c) && id < curID
}

// reliesOnConsent reports whether a holding's lawfulness rests on consent.
func reliesOnConsent(h *piledgerv1.Holding) bool {
	return h.GetLegalBasis() == "consent" || h.GetLegalBasis() == "" && h.GetConsent() != nil
}

// applyRecord applies one record (a destroy, disclosure, consent withdrawal
// or purpose end of the holding's subject) to h and reports whether h
// changed. ev is the record's event.
func applyRecord(h *piledgerv1.Holding, kind byte, ev *piledgerv1.Event) bool {
	if ev.GetProcessor() != h.GetProcessor() {
		return false
	}
	t := ev.GetOccurredAt().AsTime()
	id := ev.GetEventId()
	obtained := h.GetObtainTime().AsTime()
	switch kind {
	case recDestroy, recDisclose:
		if ev.GetSystem() != "" && ev.GetSystem() != h.GetSystem() ||
			!slices.Contains(ev.GetDataCategories(), h.GetDataCategory()) || t.Before(obtained) {
			return false
		}
		if kind == recDestroy {
			if !earlier(t, id, h.DestroyTime, h.GetDestroyEventId()) {
				return false
			}
			h.DestroyTime, h.DestroyEventId = timestamppb.New(t), id
			return true
		}
		if !earlier(t, id, h.DiscloseTime, h.GetDiscloseEventId()) {
			return false
		}
		h.DiscloseTime, h.DiscloseEventId = timestamppb.New(t), id
		return true
	case recWithdraw:
		if ev.GetPurpose() != h.GetPurpose() || !reliesOnConsent(h) || t.Before(obtained) ||
			len(ev.GetDataCategories()) > 0 && !slices.Contains(ev.GetDataCategories(), h.GetDataCategory()) ||
			!earlier(t, id, h.ConsentWithdrawTime, h.GetConsentWithdrawEventId()) {
			return false
		}
		h.ConsentWithdrawTime, h.ConsentWithdrawEventId = timestamppb.New(t), id
		return true
	case recPurposeEnd:
		if ev.GetPurpose() != h.GetRetention().GetUntilPurposeEnds() ||
			!earlier(t, id, h.PurposeEndTime, h.GetPurposeEndEventId()) {
			return false
		}
		h.PurposeEndTime, h.PurposeEndEventId = timestamppb.New(t), id
		return true
	}
	return false
}

// purposeEnd is a processor's declared end of a purpose (a subjectless
// OPERATION_PURPOSE_ENDED event); zero when none was declared.
type purposeEnd struct {
	at      time.Time
	eventID string
}

// withPurposeEnd returns h with the processor-wide end of its until-purpose
// merged in when it is earlier than the subject's own. h is not modified.
func withPurposeEnd(h *piledgerv1.Holding, end purposeEnd) *piledgerv1.Holding {
	if end.at.IsZero() || h.GetRetention().GetUntilPurposeEnds() == "" ||
		!earlier(end.at, end.eventID, h.PurposeEndTime, h.GetPurposeEndEventId()) {
		return h
	}
	c := cloneHolding(h)
	c.PurposeEndTime, c.PurposeEndEventId = timestamppb.New(end.at), end.eventID
	return c
}

// deadline returns when h must be destroyed by and why; ok is false when no
// deadline is known.
func deadline(h *piledgerv1.Holding) (at time.Time, basis piledgerv1.DeadlineBasis, ok bool) {
	obtained := h.GetObtainTime().AsTime()
	consider := func(t time.Time, b piledgerv1.DeadlineBasis) {
		if t.Before(obtained) {
			t = obtained
		}
		if !ok || t.Before(at) {
			at, basis, ok = t, b, true
		}
	}
	r := h.GetRetention()
	if r.GetKeepFor() != nil {
		consider(obtained.Add(r.GetKeepFor().AsDuration()), piledgerv1.DeadlineBasis_DEADLINE_BASIS_KEEP_FOR)
	}
	if r.GetKeepUntil() != nil {
		consider(r.GetKeepUntil().AsTime(), piledgerv1.DeadlineBasis_DEADLINE_BASIS_KEEP_UNTIL)
	}
	if r.GetUntilPurposeEnds() != "" && h.PurposeEndTime != nil {
		consider(h.GetPurposeEndTime().AsTime(), piledgerv1.DeadlineBasis_DEADLINE_BASIS_PURPOSE_ENDED)
	}
	if h.ConsentWithdrawTime != nil {
		consider(h.GetConsentWithdrawTime().AsTime(), piledgerv1.DeadlineBasis_DEADLINE_BASIS_CONSENT_WITHDRAWN)
	}
	if earliest, has := earliestDestroy(h); ok && has && at.Before(earliest) {
		at, basis = earliest, piledgerv1.DeadlineBasis_DEADLINE_BASIS_MINIMUM_RETENTION
	}
	return at, basis, ok
}

// earliestDestroy returns the end of h's minimum retention.
func earliestDestroy(h *piledgerv1.Holding) (time.Time, bool) {
	m := h.GetRetention().GetMinimum()
	if m == nil {
		return time.Time{}, false
	}
	return h.GetObtainTime().AsTime().Add(m.AsDuration()), true
}

// evaluate fills the computed fields of h — sensitive, state, deadline,
// deadline basis and earliest destruction time — as of now, with grace the
// time between DUE and OVERDUE.
func evaluate(h *piledgerv1.Holding, now time.Time, grace time.Duration, vocab *ledger.Vocabulary) {
	h.Sensitive = vocab.IsSensitive(h.GetDataCategory())
	due, basis, hasDue := deadline(h)
	if hasDue {
		h.DestroyDueTime, h.DeadlineBasis = timestamppb.New(due), basis
	}
	earliest, hasEarliest := earliestDestroy(h)
	if hasEarliest {
		h.EarliestDestroyTime = timestamppb.New(earliest)
	}
	switch {
	case h.DestroyTime != nil:
		destroyed := h.GetDestroyTime().AsTime()
		switch {
		case hasEarliest && destroyed.Before(earliest):
			h.State = piledgerv1.HoldingState_HOLDING_STATE_DESTROYED_EARLY
		case hasDue && !destroyed.Before(due.Add(grace)):
			h.State = piledgerv1.HoldingState_HOLDING_STATE_DESTROYED_LATE
		default:
			h.State = piledgerv1.HoldingState_HOLDING_STATE_DESTROYED
		}
	case !hasDue || now.Before(due):
		h.State = piledgerv1.HoldingState_HOLDING_STATE_HELD
	case now.Before(due.Add(grace)):
		h.State = piledgerv1.HoldingState_HOLDING_STATE_DUE
	default:
		h.State = piledgerv1.HoldingState_HOLDING_STATE_OVERDUE
	}
}

func cloneHolding(h *piledgerv1.Holding) *piledgerv1.Holding {
	return proto.Clone(h).(*piledgerv1.Holding)
}
