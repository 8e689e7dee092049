package projections

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/piledger/piledger/projections/rules"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Raising findings. The projector evaluates the policy (Config.Policy) as
// it applies the log, so findings are a function of the log and the policy
// alone, and a rebuild raises the same ones:
//
//   - event and event-holding rules on every event, against the subject's
//     holdings at the event's processor as they stood before the event;
//   - holding rules on every holding the moment it is stored destroyed
//     (a destroy event, or a collection reported after its destruction),
//     evaluated at its destruction time.
//
// Each finding is a row keyed by the log index of the event being applied
// and its position among that event's findings. The row is sealed under the
// ledger's own key (it names a pseudonym and a processor), and the holding
// it is about is sealed under the subject's key, so erasing the subject
// blinds the holding but keeps the finding: the processor's breach stands.

// findingValue is the stored form of a finding:
//
//	uvarint(len(a)) || a || b
//
// a: the Finding without its holding, sealed under the ledger's key;
// b: the Holding, sealed under the subject's key (empty when none), with
// the row key and a 'h' as associated data.

// raiseEvent evaluates the event rules on the entry being applied; sub is
// nil for a subjectless event. It must run before the event changes the
// holdings.
func (t *txn) raiseEvent(e *piledgerv1.LogEntry, sub *subject) error {
	in := rules.EventInput{Entry: e}
	if sub != nil {
		in.Holdings = func() ([]*piledgerv1.Holding, error) {
			return t.holdingsAt(*sub, e.GetEvent().GetProcessor(), e.GetEvent().GetOccurredAt().AsTime())
		}
		in.Consents = func() ([]*piledgerv1.Event, error) { return t.consents(*sub) }
	}
	matches, err := t.s.cfg.Policy.EvaluateEvent(in)
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := t.storeFinding(m.Rule, sub, m.Holding); err != nil {
			return err
		}
	}
	return nil
}

// raiseHolding evaluates the holding rules on a holding just stored
// destroyed, as of its destruction.
func (t *txn) raiseHolding(sub subject, id holdingID, h *piledgerv1.Holding) error {
	c, err := t.evaluated(sub, id, h, h.GetDestroyTime().AsTime())
	if err != nil {
		return err
	}
	for _, r := range t.s.cfg.Policy.EvaluateHolding(c, h.GetDestroyTime().AsTime()) {
		if err := t.storeFinding(r, &sub, c); err != nil {
			return err
		}
	}
	return nil
}

// evaluated returns a copy of a stored holding, named, with the
// processor-wide end of its purpose merged in, and evaluated at now.
func (t *txn) evaluated(sub subject, id holdingID, h *piledgerv1.Holding, now time.Time) (*piledgerv1.Holding, error) {
	var end purposeEnd
	if p := h.GetRetention().GetUntilPurposeEnds(); p != "" {
		var err error
		if end, err = readPurposeEnd(t.get, h.GetProcessor(), p); err != nil {
			return nil, err
		}
	}
	return t.s.evaluateAt(sub.pseudonym, id, cloneHolding(h), end, now), nil
}

// holdingsAt returns the subject's holdings at a processor, evaluated at
// now, in key order. Rows sealed under a destroyed key generation are
// skipped.
func (t *txn) holdingsAt(sub subject, processor string, now time.Time) ([]*piledgerv1.Holding, error) {
	prefix := holdingPrefix(sub.p, t.s.tags.tag(tagProcessor, processor))
	var out []*piledgerv1.Holding
	err := scanSealed(t, sub, prefix, newHolding, func(key []byte, h *piledgerv1.Holding) error {
		if len(key) != len(prefix)+holdingIDLen {
			return fmt.Errorf("%w: holding key", ErrCorrupt)
		}
		c, err := t.evaluated(sub, parseHoldingID(key[len(prefix):]), h, now)
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// consents returns the subject's consent-granted events under its current
// key generation (older rows no longer open), in time order.
func (t *txn) consents(sub subject) ([]*piledgerv1.Event, error) {
	var out []*piledgerv1.Event
	prefix := subjectSub(sub.p, subTimeline)
	err := scanSealed(t, sub, prefix, newSubjectEvent, func(_ []byte, se *piledgerv1.SubjectEvent) error {
		if se.GetEvent().GetOperation() == piledgerv1.Operation_OPERATION_CONSENT_GRANTED {
			out = append(out, se.GetEvent())
		}
		return nil
	})
	return out, err
}

// storeFinding stores a finding of rule r raised by the entry being
// applied, about h when the rule is about a holding.
func (t *txn) storeFinding(r *rules.Rule, sub *subject, h *piledgerv1.Holding) error {
	e := t.cur
	ev := e.GetEvent()
	key := findingKey(e.GetIndex(), t.nfind)
	t.nfind++
	f := &piledgerv1.Finding{
		Name:           findingName(e.GetIndex(), t.nfind-1),
		Rule:           r.Name,
		Severity:       r.Severity,
		LegalReference: r.Reference,
		Description:    r.Description,
		RuleVersion:    r.Version,
		Processor:      ev.GetProcessor(),
		Pseudonym:      e.GetHeader().GetPseudonym(),
		LogIndex:       e.GetIndex(),
		EventId:        ev.GetEventId(),
		Operation:      ev.GetOperation(),
		OccurTime:      ev.GetOccurredAt(),
	}
	if h != nil {
		f.Processor = h.GetProcessor() // a holding rule is about its holder
	}
	lk, err := t.s.keys.SealingKey(t.ctx, "")
	if err != nil {
		return fmt.Errorf("projections: ledger key: %w", err)
	}
	a, err := seal(lk, key, f)
	if err != nil {
		return err
	}
	v := binary.AppendUvarint(nil, uint64(len(a)))
	v = append(v, a...)
	if h != nil && sub != nil {
		b, err := seal(sub.key, append(key, 'h'), h)
		if err != nil {
			return err
		}
		v = append(v, b...)
	}
	t.counts.Findings++
	return t.set(key, v)
}

func findingName(index uint64, n uint16) string {
	return fmt.Sprintf("findings/%d-%d", index, n)
}
