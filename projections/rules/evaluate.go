package rules

import (
	"time"

	"cel.dev/cel-go/common/types"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// EventInput is what event rules see: one log entry and, on demand, the
// state it touches.
type EventInput struct {
	// Entry is the event being applied. An entry without an Event (the
	// subject's key was destroyed) matches no rule.
	Entry *piledgerv1.LogEntry
	// Holdings returns the subject's holdings at the event's processor as
	// they stood before the event, evaluated as of the event's occurred
	// time (state, deadline, sensitivity filled). It is called at most
	// once per EvaluateEvent, and only when a rule evaluated on the event
	// reads holdings or is an event-holding rule. Nil means none.
	Holdings func() ([]*piledgerv1.Holding, error)
	// Consents returns the subject's consent-granted events under its
	// current key generation, applied before the event. It is called at
	// most once per EvaluateEvent, and only when a rule evaluated on the
	// event reads consents. Nil means none.
	Consents func() ([]*piledgerv1.Event, error)
}

// Match is one rule that matched.
type Match struct {
	Rule *Rule
	// Holding is the holding an event-holding rule matched on; nil for an
	// event rule.
	Holding *piledgerv1.Holding
}

// EvaluateEvent evaluates the event and event-holding rules that apply to
// the entry's operation and returns those that match, in rule order; an
// event-holding rule matches once per holding it is true on, in the order
// Holdings returned them. A rule whose evaluation fails at run time does
// not match; the failure is counted (EvalErrors). The error is only ever a
// Holdings or Consents error, wrapped; there are no matches then.
func (p *Policy) EvaluateEvent(in EventInput) ([]Match, error) {
	e := in.Entry
	if e.GetEvent() == nil {
		return nil, nil
	}
	idx := p.forOperation(operationOf(e))
	if len(idx) == 0 {
		return nil, nil
	}
	a := eventActivation(e, in)
	var out []Match
	for _, i := range idx {
		r := p.rules[i]
		if r.Scope == ScopeEvent {
			a.holding = nil
			if p.match(i, a) {
				out = append(out, Match{Rule: r.Rule})
			}
		} else {
			a.resolveHoldings()
			for j, h := range a.holdings {
				if a.err != nil {
					break
				}
				a.holding = a.holdingVals[j]
				if p.match(i, a) {
					out = append(out, Match{Rule: r.Rule, Holding: h})
				}
			}
		}
		if a.err != nil {
			return nil, a.err
		}
	}
	return out, nil
}

// EvaluateHolding evaluates the holding rules on h, a holding evaluated as
// of now (state, deadline, sensitivity filled), and returns those that
// match, in rule order. A rule whose evaluation fails at run time does not
// match; the failure is counted (EvalErrors).
func (p *Policy) EvaluateHolding(h *piledgerv1.Holding, now time.Time) []*Rule {
	if h == nil || len(p.onHolding) == 0 {
		return nil
	}
	a := holdingActivation(h, now)
	var out []*Rule
	for _, i := range p.onHolding {
		if p.match(i, a) {
			out = append(out, p.rules[i].Rule)
		}
	}
	return out
}

// match evaluates rule i. An evaluation error, or a result that is not a
// bool, is counted and is no match; a loader error is left in a.err for
// the caller and is not counted.
func (p *Policy) match(i int, a *activation) bool {
	out, _, err := p.rules[i].prg.Eval(a)
	if a.err != nil {
		return false
	}
	b, ok := out.(types.Bool)
	if err != nil || !ok {
		p.errs[i].Add(1)
		return false
	}
	return bool(b)
}
