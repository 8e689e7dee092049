package rules

import (
	"fmt"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// activation resolves the variables of one EvaluateEvent or EvaluateHolding
// call for every rule evaluated in it. The variables are records, whose
// values are computed on first read and shared by the rules; holdings and
// consents are loaded when a rule first reads them, at most once per call,
// so an event whose rules never look at them costs no read. It is used by
// one goroutine.
type activation struct {
	event   ref.Val
	subject ref.Val
	now     ref.Val
	// holding is the holding bound for the rule being evaluated, nil when
	// none is.
	holding ref.Val

	loadHoldings func() ([]*piledgerv1.Holding, error)
	loadConsents func() ([]*piledgerv1.Event, error)
	holdingsDone bool
	holdings     []*piledgerv1.Holding
	holdingVals  []ref.Val // the records of holdings
	holdingList  ref.Val
	consentsDone bool
	consentList  ref.Val
	// err is the first loader error; once set, evaluation stops and
	// EvaluateEvent returns it.
	err error
}

// eventActivation returns the activation of an event: now is the event's
// occurred time.
func eventActivation(e *piledgerv1.LogEntry, in EventInput) *activation {
	return &activation{
		event:        eventKind.of(e),
		subject:      subjectKind.of(e),
		now:          types.Timestamp{Time: e.GetEvent().GetOccurredAt().AsTime()},
		loadHoldings: in.Holdings,
		loadConsents: in.Consents,
	}
}

// holdingActivation returns the activation of a holding rule.
func holdingActivation(h *piledgerv1.Holding, now time.Time) *activation {
	return &activation{holding: holdingKind.of(h), now: types.Timestamp{Time: now}}
}

var _ interpreter.Activation = (*activation)(nil)

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	var v ref.Val
	switch name {
	case "event":
		v = a.event
	case "subject":
		v = a.subject
	case "now":
		v = a.now
	case "holding":
		v = a.holding
	case "holdings":
		a.resolveHoldings()
		v = a.holdingList
	case "consents":
		a.resolveConsents()
		v = a.consentList
	}
	return v, v != nil
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

// resolveHoldings loads the holdings on first use. On a loader error the
// list is empty and a.err is set.
func (a *activation) resolveHoldings() {
	if a.holdingsDone {
		return
	}
	a.holdingsDone = true
	if a.loadHoldings != nil {
		hs, err := a.loadHoldings()
		if err != nil {
			a.fail(fmt.Errorf("rules: loading holdings: %w", err))
			hs = nil
		}
		a.holdings = hs
		a.holdingVals = make([]ref.Val, len(hs))
		for i, h := range hs {
			a.holdingVals[i] = holdingKind.of(h)
		}
	}
	a.holdingList = types.NewRefValList(types.DefaultTypeAdapter, a.holdingVals)
}

// resolveConsents loads the consents on first use. On a loader error the
// list is empty and a.err is set.
func (a *activation) resolveConsents() {
	if a.consentsDone {
		return
	}
	a.consentsDone = true
	var vals []ref.Val
	if a.loadConsents != nil {
		cs, err := a.loadConsents()
		if err != nil {
			a.fail(fmt.Errorf("rules: loading consents: %w", err))
			cs = nil
		}
		vals = make([]ref.Val, len(cs))
		for i, c := range cs {
			vals[i] = consentKind.of(c)
		}
	}
	a.consentList = types.NewRefValList(types.DefaultTypeAdapter, vals)
}

func (a *activation) fail(err error) {
	if a.err == nil {
		a.err = err
	}
}
