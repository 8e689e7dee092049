package rules_test

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/piledger/piledger/projections/rules"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// loaders counts the calls of an input's loaders.
type loaders struct {
	holdings, consents int
	holdingsErr        error
	consentsErr        error
	hs                 []*piledgerv1.Holding
	cs                 []*piledgerv1.Event
}

func (l *loaders) input(e *piledgerv1.LogEntry) rules.EventInput {
	return rules.EventInput{
		Entry: e,
		Holdings: func() ([]*piledgerv1.Holding, error) {
			l.holdings++
			return l.hs, l.holdingsErr
		},
		Consents: func() ([]*piledgerv1.Event, error) {
			l.consents++
			return l.cs, l.consentsErr
		},
	}
}

// TestEvaluateEventLoadsLazily: holdings and consents are read only when a
// rule evaluated on the event needs them, and at most once.
func TestEvaluateEventLoadsLazily(t *testing.T) {
	twoHoldings := []*piledgerv1.Holding{
		held("1-0", "phone", "service-provision", "contract-or-hr"),
		withdrawn(held("2-0", "phone", "marketing", "consent"), 2),
	}
	tests := []struct {
		name                   string
		entry                  *piledgerv1.LogEntry
		wantHoldings, wantCons int
		wantMatches            int
	}{
		{"collect: no rule reads either", entry(faceGate(false), 1), 0, 0, 1},
		{"consent granted: no rule applies", entry(granted("shop-9"), 1), 0, 0, 0},
		{"collect after erasure: consents only", entry(op(piledgerv1.Operation_OPERATION_COLLECT, "marketing", "", nil, 5), 2), 0, 1, 1},
		{"use: holdings once for two event-holding rules and two holdings",
			entry(op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3), 1), 1, 0, 1},
		{"use after erasure: both once", entry(op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3), 2), 1, 1, 2},
		{"shredded entry: nothing", &piledgerv1.LogEntry{Index: 3, Shredded: true,
			Header: &piledgerv1.EnvelopeHeader{Operation: piledgerv1.Operation_OPERATION_USE, KeyGeneration: 2}}, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &loaders{hs: twoHoldings}
			m, err := rules.Default().EvaluateEvent(l.input(tt.entry))
			if err != nil {
				t.Fatal(err)
			}
			if l.holdings != tt.wantHoldings || l.consents != tt.wantCons {
				t.Errorf("loader calls: holdings %d, consents %d; want %d, %d", l.holdings, l.consents, tt.wantHoldings, tt.wantCons)
			}
			if len(m) != tt.wantMatches {
				t.Errorf("%d matches, want %d: %v", len(m), tt.wantMatches, m)
			}
		})
	}
}

// TestEvaluateEventLoaderErrors: a loader error is returned, wrapped, with
// no matches, and is not counted as a rule error.
func TestEvaluateEventLoaderErrors(t *testing.T) {
	boom := errors.New("pebble: closed")
	p := rules.Default()
	l := &loaders{holdingsErr: boom}
	m, err := p.EvaluateEvent(l.input(entry(op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3), 1)))
	if !errors.Is(err, boom) || m != nil {
		t.Errorf("holdings error: %v, %v; want %v and no matches", m, err, boom)
	}
	l = &loaders{consentsErr: boom}
	m, err = p.EvaluateEvent(l.input(entry(op(piledgerv1.Operation_OPERATION_COLLECT, "marketing", "", nil, 5), 2)))
	if !errors.Is(err, boom) || m != nil {
		t.Errorf("consents error: %v, %v; want %v and no matches", m, err, boom)
	}
	if errs := nonZero(p.EvalErrors()); len(errs) > 0 {
		t.Errorf("loader errors counted as rule errors: %v", errs)
	}
	// Nil loaders mean none.
	m, err = p.EvaluateEvent(rules.EventInput{Entry: entry(op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3), 2)})
	if err != nil || len(m) != 1 || m[0].Rule.Name != "processing-after-erasure-without-consent" {
		t.Errorf("nil loaders: %v, %v", m, err)
	}
}

// TestEvalErrorsCounted: a condition that passes the load-time sample but
// fails on a real event counts as no match and is counted, safely under
// concurrent use.
func TestEvalErrorsCounted(t *testing.T) {
	p, err := rules.Parse("acme.yaml", []byte(`policy: acme
version: "1"
rules:
  - name: flagged-use
    severity: low
    reference: "Acme policy 1"
    description: "A use flagged by the emitter."
    operations: [use]
    condition: event.operation == "use" && event.attributes["flag"] == "yes"
`))
	if err != nil {
		t.Fatal(err)
	}
	flagged := op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3)
	flagged.Attributes = map[string]string{"flag": "yes"}
	unflagged := op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3)

	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if m, err := p.EvaluateEvent(rules.EventInput{Entry: entry(unflagged, 1)}); err != nil || len(m) != 0 {
				t.Errorf("unflagged: %v, %v; want no match", m, err)
			}
			m, err := p.EvaluateEvent(rules.EventInput{Entry: entry(flagged, 1)})
			if err != nil || len(m) != 1 || m[0].Rule.Name != "flagged-use" {
				t.Errorf("flagged: %v, %v; want flagged-use", m, err)
			}
		})
	}
	wg.Wait()
	errs := p.EvalErrors()
	if errs["flagged-use"] != n {
		t.Errorf("EvalErrors[flagged-use] = %d, want %d", errs["flagged-use"], n)
	}
	if _, ok := errs["held-past-deadline"]; !ok || len(errs) != len(p.Rules()) {
		t.Errorf("EvalErrors lists %d rules, want every active rule (%d)", len(errs), len(p.Rules()))
	}
	if e := rules.Default().EvalErrors()["flagged-use"]; e != 0 {
		t.Error("a policy's counters leak into the default pack")
	}
}

// TestEventHoldingMatchOrder: matches come in rule order, and an
// event-holding rule matches once per holding, in the order given.
func TestEventHoldingMatchOrder(t *testing.T) {
	p, err := rules.Parse("acme.yaml", []byte(`policy: acme
version: "1"
rules:
  - name: any-phone-holding
    severity: low
    reference: "Acme policy 2"
    description: "A phone number held when it was used."
    scope: event-holding
    operations: [use]
    condition: holding.category == "phone" && now == event.occurred && size(holdings) >= 1
  - name: every-use
    severity: low
    reference: "Acme policy 3"
    description: "Any use."
    condition: event.operation == "use" && event.index == 42 && !subject.erased
`))
	if err != nil {
		t.Fatal(err)
	}
	l := &loaders{hs: []*piledgerv1.Holding{
		held("3-0", "phone", "marketing", "consent"),
		held("1-0", "email", "marketing", "consent"),
		held("2-0", "phone", "marketing", "consent"),
	}}
	m, err := p.EvaluateEvent(l.input(entry(op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3), 1)))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range m {
		s := x.Rule.Name
		if x.Holding != nil {
			s += "@" + x.Holding.GetName()[len("subjects/9f86d081/holdings/"):]
		}
		got = append(got, s)
	}
	want := []string{"any-phone-holding@3-0", "any-phone-holding@2-0", "every-use"}
	if !slices.Equal(got, want) {
		t.Errorf("matches = %q, want %q", got, want)
	}
	if l.holdings != 1 {
		t.Errorf("Holdings called %d times, want 1", l.holdings)
	}
}

// TestEvaluateHoldingNil: a nil holding matches nothing.
func TestEvaluateHoldingNil(t *testing.T) {
	if got := rules.Default().EvaluateHolding(nil, day(1)); got != nil {
		t.Errorf("EvaluateHolding(nil) = %v", got)
	}
}
