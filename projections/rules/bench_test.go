package rules_test

import (
	"testing"

	"github.com/piledger/piledger/projections/rules"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// BenchmarkEvaluateEvent evaluates the default pack on a typical event of
// a subject with two holdings at the processor: a street camera's capture
// (event rules only: the holdings are never loaded) and a use of a phone
// number (the event-holding rules run on both holdings).
func BenchmarkEvaluateEvent(b *testing.B) {
	p := rules.Default()
	hs := []*piledgerv1.Holding{
		footage("face", true),
		withdrawn(held("2-0", "phone", "marketing", "consent"), 2),
	}
	collect := camera("public-street", "sign-4", "public-safety")
	collect.DataCategories = []string{"face", "video-footage"}
	collect.Attributes = map[string]string{"note": "north entrance"}
	cases := []struct {
		name  string
		entry *piledgerv1.LogEntry
	}{
		{"collect", entry(collect, 1)},
		{"use", entry(op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3), 1)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			in := rules.EventInput{
				Entry:    c.entry,
				Holdings: func() ([]*piledgerv1.Holding, error) { return hs, nil },
				Consents: func() ([]*piledgerv1.Event, error) { return nil, nil },
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.EvaluateEvent(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEvaluateHolding evaluates the default pack's holding rules on a
// destroyed camera holding.
func BenchmarkEvaluateHolding(b *testing.B) {
	p := rules.Default()
	h := destroyedAt(footage("video-footage", false), 11, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED)
	now := day(11)
	b.ReportAllocs()
	for b.Loop() {
		if len(p.EvaluateHolding(h, now)) != 1 {
			b.Fatal("want one match")
		}
	}
}
