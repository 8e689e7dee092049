package projections_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

const (
	held          = piledgerv1.HoldingState_HOLDING_STATE_HELD
	due           = piledgerv1.HoldingState_HOLDING_STATE_DUE
	overdue       = piledgerv1.HoldingState_HOLDING_STATE_OVERDUE
	destroyed     = piledgerv1.HoldingState_HOLDING_STATE_DESTROYED
	destroyedEarl = piledgerv1.HoldingState_HOLDING_STATE_DESTROYED_EARLY
	destroyedLate = piledgerv1.HoldingState_HOLDING_STATE_DESTROYED_LATE

	noBasis    = piledgerv1.DeadlineBasis_DEADLINE_BASIS_UNSPECIFIED
	keepFor    = piledgerv1.DeadlineBasis_DEADLINE_BASIS_KEEP_FOR
	ended      = piledgerv1.DeadlineBasis_DEADLINE_BASIS_PURPOSE_ENDED
	withdrawn  = piledgerv1.DeadlineBasis_DEADLINE_BASIS_CONSENT_WITHDRAWN
	minimumRet = piledgerv1.DeadlineBasis_DEADLINE_BASIS_MINIMUM_RETENTION

	never = -1.0
)

// wantHolding is what a scenario expects of one holding, found by holder
// and category.
type wantHolding struct {
	holder, category string
	state            piledgerv1.HoldingState
	due              float64 // day of destroy_due_time, never for none
	basis            piledgerv1.DeadlineBasis
	destroyed        float64 // day of destroy_time, never for none
	// Checked when set.
	provenance piledgerv1.Provenance
	source     string
	country    string
}

// procs names the processors of one scenario; each scenario has its own,
// so that a processor-wide purpose end stays inside its scenario.
type procs struct{ police, district, health, shop string }

// TestHoldingStateMachine drives the holding state machine through the
// sequences the seed texts describe — public-security camera footage kept
// at least 30 days, retrieved by the police with a case number, provided to
// another department, destroyed early, on time, late or never; data
// collected for epidemic prevention until the purpose ends; consent granted
// and withdrawn; a transfer abroad — through a real ledger and projector,
// and reads the data map at the given day.
func TestHoldingStateMachine(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	ev := func(events ...*piledgerv1.Event) [][]*piledgerv1.Event {
		var out [][]*piledgerv1.Event
		for _, e := range events {
			out = append(out, []*piledgerv1.Event{e})
		}
		return out
	}
	for i, sc := range []struct {
		name   string
		events func(ref string, p procs) [][]*piledgerv1.Event
		at     float64
		want   []wantHolding
	}{
		{
			name: "camera footage destroyed at day 10 is destroyed early",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(cameraFace(r, p.police, 0), destroy(r, p.police, 10, "face"))
			},
			at:   100,
			want: []wantHolding{{holder: "police", category: "face", state: destroyedEarl, due: 90, basis: keepFor, destroyed: 10, provenance: piledgerv1.Provenance_PROVENANCE_COLLECTED}},
		},
		{
			name: "camera footage destroyed at day 45 is destroyed on time",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(cameraFace(r, p.police, 0), destroy(r, p.police, 45, "face"))
			},
			at:   100,
			want: []wantHolding{{holder: "police", category: "face", state: destroyed, due: 90, basis: keepFor, destroyed: 45}},
		},
		{
			name:   "camera footage never destroyed is held before its deadline",
			events: func(r string, p procs) [][]*piledgerv1.Event { return ev(cameraFace(r, p.police, 0)) },
			at:     60,
			want:   []wantHolding{{holder: "police", category: "face", state: held, due: 90, basis: keepFor, destroyed: never}},
		},
		{
			name:   "camera footage never destroyed is due after its deadline",
			events: func(r string, p procs) [][]*piledgerv1.Event { return ev(cameraFace(r, p.police, 0)) },
			at:     95,
			want:   []wantHolding{{holder: "police", category: "face", state: due, due: 90, basis: keepFor, destroyed: never}},
		},
		{
			name:   "camera footage never destroyed is overdue after the grace period",
			events: func(r string, p procs) [][]*piledgerv1.Event { return ev(cameraFace(r, p.police, 0)) },
			at:     120,
			want:   []wantHolding{{holder: "police", category: "face", state: overdue, due: 90, basis: keepFor, destroyed: never}},
		},
		{
			name: "camera footage destroyed after it became overdue is destroyed late",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(cameraFace(r, p.police, 0), destroy(r, p.police, 110, "face"))
			},
			at:   120,
			want: []wantHolding{{holder: "police", category: "face", state: destroyedLate, due: 90, basis: keepFor, destroyed: 110}},
		},
		{
			name: "footage accessed by the police and provided to another department",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(cameraFace(r, p.police, 0), policeAccess(r, p.police, 1), provide(r, p.police, p.district, 2), destroy(r, p.police, 45, "face"))
			},
			at: 50,
			want: []wantHolding{
				{holder: "police", category: "face", state: destroyed, due: 90, basis: keepFor, destroyed: 45},
				{holder: "district", category: "face", state: held, due: 62, basis: keepFor, destroyed: never, provenance: piledgerv1.Provenance_PROVENANCE_PROVIDED, source: "police"},
			},
		},
		{
			name: "a destroy reported before the collection it destroys (out-of-order occurredAt)",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(destroy(r, p.police, 45, "face"), cameraFace(r, p.police, 0))
			},
			at:   100,
			want: []wantHolding{{holder: "police", category: "face", state: destroyed, due: 90, basis: keepFor, destroyed: 45}},
		},
		{
			name: "two destroys reported out of order: the earlier one counts",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(cameraFace(r, p.police, 0), destroy(r, p.police, 60, "face"), destroy(r, p.police, 40, "face"))
			},
			at:   100,
			want: []wantHolding{{holder: "police", category: "face", state: destroyed, due: 90, basis: keepFor, destroyed: 40}},
		},
		{
			name: "a destroy does not reach data obtained after it",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(destroy(r, p.police, 45, "face"), cameraFace(r, p.police, 50))
			},
			at:   100,
			want: []wantHolding{{holder: "police", category: "face", state: held, due: 140, basis: keepFor, destroyed: never}},
		},
		{
			name: "a destroy limited to another system leaves the footage",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				d := destroy(r, p.police, 40, "face")
				d.System = "other-cam"
				return ev(cameraFace(r, p.police, 0), d)
			},
			at:   60,
			want: []wantHolding{{holder: "police", category: "face", state: held, due: 90, basis: keepFor, destroyed: never}},
		},
		{
			name:   "epidemic data kept until the purpose ends has no deadline while it lasts",
			events: func(r string, p procs) [][]*piledgerv1.Event { return ev(epidemicCollect(r, p.health, 1)) },
			at:     100,
			want: []wantHolding{
				{holder: "health", category: "health-code-status", state: held, due: never, basis: noBasis, destroyed: never},
				{holder: "health", category: "travel-history", state: held, due: never, basis: noBasis, destroyed: never},
			},
		},
		{
			name: "the epidemic ends for every subject of the processor: due at once",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(epidemicCollect(r, p.health, 1), purposeEnded("", p.health, "epidemic-prevention", 40))
			},
			at: 50,
			want: []wantHolding{
				{holder: "health", category: "health-code-status", state: due, due: 40, basis: ended, destroyed: never},
				{holder: "health", category: "travel-history", state: due, due: 40, basis: ended, destroyed: never},
			},
		},
		{
			name: "the epidemic ended long ago: overdue, and one category destroyed",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(epidemicCollect(r, p.health, 1), purposeEnded("", p.health, "epidemic-prevention", 40), destroy(r, p.health, 42, "travel-history"))
			},
			at: 60,
			want: []wantHolding{
				{holder: "health", category: "health-code-status", state: overdue, due: 40, basis: ended, destroyed: never},
				{holder: "health", category: "travel-history", state: destroyed, due: 40, basis: ended, destroyed: 42},
			},
		},
		{
			name: "the purpose ends for this subject only",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(epidemicCollect(r, p.health, 1), purposeEnded(r, p.health, "epidemic-prevention", 30))
			},
			at: 35,
			want: []wantHolding{
				{holder: "health", category: "health-code-status", state: due, due: 30, basis: ended, destroyed: never},
				{holder: "health", category: "travel-history", state: due, due: 30, basis: ended, destroyed: never},
			},
		},
		{
			name: "data collected after the purpose ended is due when collected",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(purposeEnded("", p.health, "epidemic-prevention", 40), epidemicCollect(r, p.health, 45))
			},
			at: 50,
			want: []wantHolding{
				{holder: "health", category: "health-code-status", state: due, due: 45, basis: ended, destroyed: never},
				{holder: "health", category: "travel-history", state: due, due: 45, basis: ended, destroyed: never},
			},
		},
		{
			name: "consent granted then withdrawn: data relying on it is due",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(consent(r, p.shop, piledgerv1.Operation_OPERATION_CONSENT_GRANTED, 0), marketingCollect(r, p.shop, 1),
					consent(r, p.shop, piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, 20))
			},
			at:   30,
			want: []wantHolding{{holder: "shop", category: "phone", state: due, due: 20, basis: withdrawn, destroyed: never}},
		},
		{
			name: "consent withdrawn, data destroyed after the grace period: destroyed late",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(consent(r, p.shop, piledgerv1.Operation_OPERATION_CONSENT_GRANTED, 0), marketingCollect(r, p.shop, 1),
					consent(r, p.shop, piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, 20), destroy(r, p.shop, 41, "phone"))
			},
			at:   50,
			want: []wantHolding{{holder: "shop", category: "phone", state: destroyedLate, due: 20, basis: withdrawn, destroyed: 41}},
		},
		{
			name: "data collected after consent was given again outlives the earlier withdrawal",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				return ev(consent(r, p.shop, piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, 20),
					consent(r, p.shop, piledgerv1.Operation_OPERATION_CONSENT_GRANTED, 25), marketingCollect(r, p.shop, 30))
			},
			at:   60,
			want: []wantHolding{{holder: "shop", category: "phone", state: held, due: never, basis: noBasis, destroyed: never}},
		},
		{
			name: "a minimum retention postpones the deadline a withdrawal sets",
			events: func(r string, p procs) [][]*piledgerv1.Event {
				c := marketingCollect(r, p.shop, 0)
				c.Retention = &piledgerv1.Retention{Minimum: days(30)}
				return ev(c, consent(r, p.shop, piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, 5))
			},
			at:   20,
			want: []wantHolding{{holder: "shop", category: "phone", state: held, due: 30, basis: minimumRet, destroyed: never}},
		},
		{
			name:   "a transfer abroad creates a holding abroad",
			events: func(r string, p procs) [][]*piledgerv1.Event { return ev(transferAbroad(r, p.shop, 5)) },
			at:     100,
			want: []wantHolding{
				{holder: "logistics-hk", category: "address", state: held, due: 185, basis: keepFor, destroyed: never, provenance: piledgerv1.Provenance_PROVENANCE_TRANSFERRED_ABROAD, source: "shop", country: "HK"},
				{holder: "logistics-hk", category: "name", state: held, due: 185, basis: keepFor, destroyed: never, provenance: piledgerv1.Provenance_PROVENANCE_TRANSFERRED_ABROAD, source: "shop", country: "HK"},
			},
		},
	} {
		t.Run(sc.name, func(t *testing.T) {
			p := procs{
				police:   fmt.Sprintf("city-police-%d", i),
				district: fmt.Sprintf("district-office-%d", i),
				health:   fmt.Sprintf("health-commission-%d", i),
				shop:     fmt.Sprintf("shop-%d", i),
			}
			names := map[string]string{"police": p.police, "district": p.district, "health": p.health, "shop": p.shop, "logistics-hk": "logistics-hk"}
			r := ref("scenario", i)
			for _, batch := range sc.events(r, p) {
				s.append(batch...)
			}
			s.sync()
			s.clock.set(day(sc.at))
			dm := s.dataMap(r)
			if len(dm.GetHoldings()) != len(sc.want) {
				t.Fatalf("%d holdings, want %d:\n%v", len(dm.GetHoldings()), len(sc.want), dm)
			}
			for _, w := range sc.want {
				h := findHolding(dm, names[w.holder], w.category)
				if h == nil {
					t.Errorf("no holding of %s at %s:\n%v", w.category, names[w.holder], dm)
					continue
				}
				checkHolding(t, h, w, names)
			}
		})
	}
}

func findHolding(dm *piledgerv1.DataMap, processor, category string) *piledgerv1.Holding {
	for _, h := range dm.GetHoldings() {
		if h.GetProcessor() == processor && h.GetDataCategory() == category {
			return h
		}
	}
	return nil
}

func checkHolding(t *testing.T, h *piledgerv1.Holding, w wantHolding, names map[string]string) {
	t.Helper()
	onDay := func(ts *timestamppb.Timestamp, d float64) bool {
		if d == never {
			return ts == nil
		}
		return ts != nil && ts.AsTime().Equal(day(d))
	}
	if h.GetState() != w.state {
		t.Errorf("%s at %s: state %s, want %s", w.category, h.GetProcessor(), h.GetState(), w.state)
	}
	if !onDay(h.GetDestroyDueTime(), w.due) || h.GetDeadlineBasis() != w.basis {
		t.Errorf("%s at %s: deadline %v (%s), want day %v (%s)", w.category, h.GetProcessor(), h.GetDestroyDueTime().AsTime(), h.GetDeadlineBasis(), w.due, w.basis)
	}
	if !onDay(h.GetDestroyTime(), w.destroyed) || (w.destroyed != never) != (h.GetDestroyEventId() != "") {
		t.Errorf("%s at %s: destroyed %v by %q, want day %v", w.category, h.GetProcessor(), h.GetDestroyTime(), h.GetDestroyEventId(), w.destroyed)
	}
	if w.provenance != 0 && h.GetProvenance() != w.provenance {
		t.Errorf("%s at %s: provenance %s, want %s", w.category, h.GetProcessor(), h.GetProvenance(), w.provenance)
	}
	if w.source != "" && h.GetSourceProcessor() != names[w.source] {
		t.Errorf("%s at %s: source %q, want %q", w.category, h.GetProcessor(), h.GetSourceProcessor(), names[w.source])
	}
	if h.GetCountry() != w.country {
		t.Errorf("%s at %s: country %q, want %q", w.category, h.GetProcessor(), h.GetCountry(), w.country)
	}
	if h.GetSensitive() != (w.category == "face" || w.category == "health-code-status" || w.category == "travel-history") {
		t.Errorf("%s: sensitive = %t", w.category, h.GetSensitive())
	}
	if h.GetName() == "" || h.GetSourceEventId() == "" || h.GetObtainTime() == nil {
		t.Errorf("%s at %s: name, source event or obtain time missing: %v", w.category, h.GetProcessor(), h)
	}
}
