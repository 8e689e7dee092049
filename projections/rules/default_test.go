package rules_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/projections/rules"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The seed situations of the default pack, as the projector would present
// them: each event with the holdings and consents it touches, and each
// holding as evaluated when it is destroyed or queried.

var day0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func day(d float64) time.Time { return day0.Add(time.Duration(d * float64(24*time.Hour))) }

func ts(d float64) *timestamppb.Timestamp { return timestamppb.New(day(d)) }

func days(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * 24 * time.Hour) }

// entry wraps an event as a log entry sealed under key generation gen.
func entry(ev *piledgerv1.Event, gen uint32) *piledgerv1.LogEntry {
	return &piledgerv1.LogEntry{
		Index: 42,
		Header: &piledgerv1.EnvelopeHeader{
			Version: 1, EventId: ev.GetEventId(), Pseudonym: "9f86d081", Operation: ev.GetOperation(),
			Processor: ev.GetProcessor(), RecordedAt: ev.GetOccurredAt(), KeyGeneration: gen,
		},
		Event: ev,
	}
}

// faceGate: a residential compound's face-recognition gate.
func faceGate(separate bool) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: "e-gate", Operation: piledgerv1.Operation_OPERATION_COLLECT, OccurredAt: ts(1),
		Processor: "compound-management", System: "face-gate", DataCategories: []string{"face"},
		Purpose: "access-control", LegalBasis: "consent",
		Consent: &piledgerv1.Consent{Separate: separate, Reference: "owners-notice"},
		Place:   &piledgerv1.Place{Kind: "residential-compound"},
	}
}

// camera: a camera captures video footage.
func camera(place, notice, purpose string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: "e-cam", Operation: piledgerv1.Operation_OPERATION_COLLECT, OccurredAt: ts(1),
		Processor: "city-police", System: "cam-3", DataCategories: []string{"video-footage"},
		Purpose: purpose, LegalBasis: "legal-duty", Retention: &piledgerv1.Retention{KeepFor: days(90)},
		Place: &piledgerv1.Place{Kind: place, NoticeSignRef: notice},
	}
}

// healthCheck: a health-code check kept until epidemic prevention ends.
func healthCheck() *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: "e-health", Operation: piledgerv1.Operation_OPERATION_COLLECT, OccurredAt: ts(1),
		Processor: "district-office", System: "health-code",
		DataCategories: []string{"health-code-status", "travel-history"}, Purpose: "epidemic-prevention",
		LegalBasis: "public-health-emergency", Retention: &piledgerv1.Retention{UntilPurposeEnds: "epidemic-prevention"},
	}
}

// op: an event of op on phone numbers at the shop.
func op(o piledgerv1.Operation, purpose, basis string, consent *piledgerv1.Consent, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: "e-op", Operation: o, OccurredAt: ts(d), Processor: "shop-9",
		DataCategories: []string{"phone"}, Purpose: purpose, LegalBasis: basis, Consent: consent,
	}
}

func withRecipient(e *piledgerv1.Event, country string) *piledgerv1.Event {
	e.Recipient = &piledgerv1.Recipient{Processor: "ad-network", Country: country}
	return e
}

// access: someone retrieves face footage, giving reason.
func access(reason string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: "e-access", Operation: piledgerv1.Operation_OPERATION_ACCESS, OccurredAt: ts(2),
		Processor: "city-police", DataCategories: []string{"face"},
		Access: &piledgerv1.Access{Actor: "officer-88", Reason: reason, Kind: piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE},
	}
}

// held is an open holding of category at the shop, obtained on day 1.
func held(id, category, purpose, basis string) *piledgerv1.Holding {
	h := &piledgerv1.Holding{
		Name: "subjects/9f86d081/holdings/" + id, Processor: "shop-9", DataCategory: category,
		ObtainTime: ts(1), Purpose: purpose, LegalBasis: basis,
		Provenance: piledgerv1.Provenance_PROVENANCE_COLLECTED, State: piledgerv1.HoldingState_HOLDING_STATE_HELD,
	}
	if basis == "consent" {
		h.Consent = &piledgerv1.Consent{Separate: true, Reference: "form-3"}
	}
	return h
}

func withdrawn(h *piledgerv1.Holding, d float64) *piledgerv1.Holding {
	h.ConsentWithdrawTime, h.ConsentWithdrawEventId = ts(d), "e-withdraw"
	h.DestroyDueTime, h.DeadlineBasis = ts(d), piledgerv1.DeadlineBasis_DEADLINE_BASIS_CONSENT_WITHDRAWN
	return h
}

func destroyedAt(h *piledgerv1.Holding, d float64, state piledgerv1.HoldingState) *piledgerv1.Holding {
	h.DestroyTime, h.DestroyEventId, h.State = ts(d), "e-destroy", state
	return h
}

// footage is a camera holding obtained on day 1 in a public street, kept
// 90 days and, when minimum is set, at least 30.
func footage(category string, minimum bool) *piledgerv1.Holding {
	h := held("1-0", category, "public-safety", "legal-duty")
	h.Processor, h.PlaceKind = "city-police", "public-street"
	h.Retention = &piledgerv1.Retention{KeepFor: days(90)}
	h.DestroyDueTime, h.DeadlineBasis = ts(91), piledgerv1.DeadlineBasis_DEADLINE_BASIS_KEEP_FOR
	if minimum {
		h.Retention.Minimum = days(30)
		h.EarliestDestroyTime = ts(31)
	}
	return h
}

// epidemic is a holding of category kept until epidemic prevention ends,
// which it did on day 50.
func epidemic(category string, state piledgerv1.HoldingState) *piledgerv1.Holding {
	h := held("1-0", category, "epidemic-prevention", "public-health-emergency")
	h.Sensitive = true
	h.Retention = &piledgerv1.Retention{UntilPurposeEnds: "epidemic-prevention"}
	h.PurposeEndTime, h.PurposeEndEventId = ts(50), "e-ended"
	h.DestroyDueTime, h.DeadlineBasis, h.State = ts(50), piledgerv1.DeadlineBasis_DEADLINE_BASIS_PURPOSE_ENDED, state
	return h
}

func granted(processor string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: "e-consent", Operation: piledgerv1.Operation_OPERATION_CONSENT_GRANTED, OccurredAt: ts(4),
		Processor: processor, Purpose: "service-provision", Consent: &piledgerv1.Consent{Separate: true, Reference: "form-12"},
	}
}

type eventCase struct {
	name     string
	event    *piledgerv1.Event
	keyGen   uint32 // 0: 1
	holdings []*piledgerv1.Holding
	consents []*piledgerv1.Event
	// want lists the matches in order, "rule" for an event rule and
	// "rule@holding-name-suffix" for an event-holding rule.
	want []string
}

var eventCases = []eventCase{
	// PIPL Arts. 28-29: face gates in residential compounds.
	{name: "compound face gate without separate consent", event: faceGate(false),
		want: []string{"sensitive-without-separate-consent"}},
	{name: "near miss: compound face gate with separate consent", event: faceGate(true)},
	{name: "near miss: health codes collected for an epidemic under another legal basis", event: healthCheck()},
	{name: "storing face images on plain consent", event: func() *piledgerv1.Event {
		e := faceGate(false)
		e.Operation = piledgerv1.Operation_OPERATION_STORE
		return e
	}(), want: []string{"sensitive-without-separate-consent"}},

	// PIPL Art. 26 and the Zhuzhou regulations: notice signs and purposes
	// of cameras in public places. A residential compound is not a public
	// place (Tan Huizhu), so its gate raises neither.
	{name: "street camera without a notice sign", event: camera("public-street", "", "public-safety"),
		want: []string{"public-camera-without-notice"}},
	{name: "near miss: street camera with its notice sign", event: camera("public-street", "sign-4", "public-safety")},
	{name: "near miss: compound camera without a notice sign", event: camera("residential-compound", "", "access-control")},
	{name: "shop camera for marketing", event: camera("shop", "sign-1", "marketing"),
		want: []string{"public-camera-purpose-not-public-safety"}},
	{name: "transport-hub camera for marketing without a sign", event: camera("transport-hub", "", "marketing"),
		want: []string{"public-camera-without-notice", "public-camera-purpose-not-public-safety"}},
	{name: "near miss: shop camera with a notice sign, for public safety", event: camera("shop", "sign-1", "public-safety")},
	{name: "near miss: shop camera for marketing on separate consent", event: func() *piledgerv1.Event {
		e := camera("shop", "sign-1", "marketing")
		e.Consent = &piledgerv1.Consent{Separate: true, Reference: "loyalty-form"}
		return e
	}()},

	// Zhuzhou regulations: no cameras in hotel rooms, dormitories, baths,
	// fitting rooms.
	{name: "camera in a hotel room", event: camera("hotel-room", "", "public-safety"),
		want: []string{"camera-in-prohibited-place"}},
	{name: "face camera in a fitting room on plain consent", event: func() *piledgerv1.Event {
		e := camera("fitting-room", "", "fraud-prevention")
		e.DataCategories, e.LegalBasis = []string{"face"}, "consent"
		return e
	}(), want: []string{"sensitive-without-separate-consent", "camera-in-prohibited-place"}},

	// PIPL Arts. 6, 14: epidemic data used for something else.
	{name: "health codes used for marketing",
		event: func() *piledgerv1.Event {
			e := op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 60)
			e.DataCategories = []string{"health-code-status"}
			return e
		}(),
		holdings: []*piledgerv1.Holding{epidemic("health-code-status", piledgerv1.HoldingState_HOLDING_STATE_HELD), held("2-0", "phone", "marketing", "consent")},
		want:     []string{"use-beyond-collection-purpose@1-0"}},
	{name: "near miss: health codes used for epidemic prevention",
		event: func() *piledgerv1.Event {
			e := op(piledgerv1.Operation_OPERATION_PROCESS, "epidemic-prevention", "", nil, 20)
			e.DataCategories = []string{"health-code-status"}
			return e
		}(),
		holdings: []*piledgerv1.Holding{epidemic("health-code-status", piledgerv1.HoldingState_HOLDING_STATE_HELD)}},
	{name: "near miss: another holding of the category is held for the purpose",
		event:    op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3),
		holdings: []*piledgerv1.Holding{held("1-0", "phone", "service-provision", "contract-or-hr"), held("2-0", "phone", "marketing", "consent")}},
	{name: "near miss: the holding of another purpose was destroyed",
		event: op(piledgerv1.Operation_OPERATION_USE, "marketing", "", nil, 3),
		holdings: []*piledgerv1.Holding{
			destroyedAt(held("1-0", "phone", "service-provision", "contract-or-hr"), 2, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED),
		}},

	// PIPL Arts. 15, 47: processing after consent was withdrawn.
	{name: "processing after consent was withdrawn",
		event:    op(piledgerv1.Operation_OPERATION_PROCESS, "marketing", "", nil, 3),
		holdings: []*piledgerv1.Holding{withdrawn(held("1-0", "phone", "marketing", "consent"), 2)},
		want:     []string{"processing-after-consent-withdrawn@1-0"}},
	{name: "provision after consent was withdrawn, on plain consent",
		event: withRecipient(op(piledgerv1.Operation_OPERATION_PROVIDE, "", "consent",
			&piledgerv1.Consent{Reference: "form-3"}, 3), ""),
		holdings: []*piledgerv1.Holding{withdrawn(held("1-0", "phone", "marketing", "consent"), 2)},
		want:     []string{"processing-after-consent-withdrawn@1-0", "transfer-without-separate-consent"}},
	{name: "near miss: processing before the withdrawal",
		event:    op(piledgerv1.Operation_OPERATION_PROCESS, "marketing", "", nil, 1.5),
		holdings: []*piledgerv1.Holding{withdrawn(held("1-0", "phone", "marketing", "consent"), 2)}},
	{name: "near miss: the withdrawn holding did not rest on consent",
		event:    op(piledgerv1.Operation_OPERATION_PROCESS, "service-provision", "", nil, 3),
		holdings: []*piledgerv1.Holding{withdrawn(held("1-0", "phone", "service-provision", "contract-or-hr"), 2)}},

	// PIPL Arts. 23, 25, 39: provision, disclosure, transfer abroad.
	{name: "provision on plain consent",
		event: withRecipient(op(piledgerv1.Operation_OPERATION_PROVIDE, "marketing", "consent",
			&piledgerv1.Consent{Reference: "form-9"}, 2), ""),
		want: []string{"transfer-without-separate-consent"}},
	{name: "transfer abroad with no legal basis", event: withRecipient(op(piledgerv1.Operation_OPERATION_TRANSFER_ABROAD, "marketing", "", nil, 2), "HK"),
		want: []string{"transfer-without-separate-consent"}},
	{name: "near miss: provision on separate consent",
		event: withRecipient(op(piledgerv1.Operation_OPERATION_PROVIDE, "marketing", "consent",
			&piledgerv1.Consent{Separate: true, Reference: "form-9"}, 2), "")},
	{name: "near miss: transfer abroad to perform a contract",
		event: withRecipient(op(piledgerv1.Operation_OPERATION_TRANSFER_ABROAD, "contract-performance", "contract-or-hr", nil, 2), "HK")},
	{name: "near miss: entrusting needs no separate consent",
		event: withRecipient(op(piledgerv1.Operation_OPERATION_ENTRUST, "marketing", "consent", &piledgerv1.Consent{Reference: "form-9"}, 2), "")},
	// PIPL Arts. 13, 21: entrusting still rests on consent or a legal basis.
	{name: "entrusting with neither consent nor a legal basis",
		event: withRecipient(op(piledgerv1.Operation_OPERATION_ENTRUST, "marketing", "", nil, 2), ""),
		want:  []string{"entrust-without-legal-basis"}},

	// Zhuzhou regulations: access to image information leaves a trace. A
	// guardian asks the police to search footage for a lost child.
	{name: "access to footage without a recorded reason", event: access(""),
		want: []string{"image-access-without-reason"}},
	{name: "near miss: police search for a guardian's lost child, reason recorded",
		event: access("guardian request: lost child, case 2026-114")},
	{name: "near miss: access to a phone number without a reason", event: func() *piledgerv1.Event {
		e := access("")
		e.DataCategories = []string{"phone"}
		return e
	}()},

	// PIPL Arts. 14, 47: an erased person's data processed again.
	{name: "collection after erasure without a new consent", keyGen: 2,
		event: op(piledgerv1.Operation_OPERATION_COLLECT, "service-provision", "contract-or-hr", nil, 5),
		want:  []string{"processing-after-erasure-without-consent"}},
	{name: "collection after erasure with a consent of another processor", keyGen: 2,
		event:    op(piledgerv1.Operation_OPERATION_COLLECT, "service-provision", "contract-or-hr", nil, 5),
		consents: []*piledgerv1.Event{granted("another-shop")},
		want:     []string{"processing-after-erasure-without-consent"}},
	{name: "near miss: collection after erasure carrying a consent", keyGen: 2,
		event: op(piledgerv1.Operation_OPERATION_COLLECT, "marketing", "consent", &piledgerv1.Consent{Separate: true, Reference: "form-3"}, 5)},
	{name: "near miss: collection after erasure and a new consent", keyGen: 2,
		event:    op(piledgerv1.Operation_OPERATION_COLLECT, "service-provision", "contract-or-hr", nil, 5),
		consents: []*piledgerv1.Event{granted("shop-9")}},
	{name: "near miss: collection before any erasure",
		event: op(piledgerv1.Operation_OPERATION_COLLECT, "service-provision", "contract-or-hr", nil, 5)},
}

type holdingCase struct {
	name    string
	holding *piledgerv1.Holding
	now     time.Time
	want    []string
}

var holdingCases = []holdingCase{
	// Footage deleted at day 10 against a stated 30-day minimum, or at
	// day 31.
	{name: "face footage destroyed at day 10 against its 30-day minimum",
		holding: destroyedAt(footage("face", true), 11, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED_EARLY), now: day(11),
		want: []string{"destroyed-before-minimum-retention"}},
	{name: "near miss: face footage destroyed at day 31",
		holding: destroyedAt(footage("face", true), 32, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED), now: day(32)},
	// Footage with no stated minimum: the regulations' 30 days apply.
	{name: "footage with no stated minimum destroyed at day 10",
		holding: destroyedAt(footage("video-footage", false), 11, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED), now: day(11),
		want: []string{"camera-footage-under-30-days"}},
	{name: "near miss: footage with no stated minimum destroyed at day 31",
		holding: destroyedAt(footage("video-footage", false), 32, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED), now: day(32)},
	{name: "near miss: a phone number destroyed at day 10",
		holding: destroyedAt(held("1-0", "phone", "marketing", "consent"), 11, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED), now: day(11)},
	// Epidemic data kept after the epidemic ended (day 50; grace 15 days).
	{name: "health codes still held at day 100", now: day(100),
		holding: epidemic("health-code-status", piledgerv1.HoldingState_HOLDING_STATE_OVERDUE),
		want:    []string{"held-past-deadline"}},
	{name: "travel history destroyed at day 80", now: day(80),
		holding: destroyedAt(epidemic("travel-history", piledgerv1.HoldingState_HOLDING_STATE_DESTROYED_LATE), 80, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED_LATE),
		want:    []string{"held-past-deadline"}},
	{name: "near miss: health codes due, within the grace period", now: day(55),
		holding: epidemic("health-code-status", piledgerv1.HoldingState_HOLDING_STATE_DUE)},
	{name: "near miss: health codes destroyed when the epidemic ended", now: day(55),
		holding: destroyedAt(epidemic("health-code-status", piledgerv1.HoldingState_HOLDING_STATE_DESTROYED), 55, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED)},
}

func evaluate(t *testing.T, p *rules.Policy, c eventCase) []string {
	t.Helper()
	gen := c.keyGen
	if gen == 0 {
		gen = 1
	}
	matches, err := p.EvaluateEvent(rules.EventInput{
		Entry:    entry(c.event, gen),
		Holdings: func() ([]*piledgerv1.Holding, error) { return c.holdings, nil },
		Consents: func() ([]*piledgerv1.Event, error) { return c.consents, nil },
	})
	if err != nil {
		t.Fatalf("EvaluateEvent: %v", err)
	}
	var got []string
	for _, m := range matches {
		if m.Holding == nil {
			if m.Rule.Scope != rules.ScopeEvent {
				t.Errorf("%s: a %s rule matched without a holding", m.Rule.Name, m.Rule.Scope)
			}
			got = append(got, m.Rule.Name)
			continue
		}
		id := m.Holding.GetName()
		got = append(got, m.Rule.Name+"@"+id[len("subjects/9f86d081/holdings/"):])
	}
	return got
}

// TestDefaultPackOnSeeds: every default rule is raised by a seed situation
// and not by its near miss; the full set of matches is asserted, in order.
func TestDefaultPackOnSeeds(t *testing.T) {
	p := rules.Default()
	raised := map[string]bool{}
	for _, c := range eventCases {
		t.Run(c.name, func(t *testing.T) {
			got := evaluate(t, p, c)
			if !slices.Equal(got, c.want) {
				t.Fatalf("matches = %q, want %q", got, c.want)
			}
		})
		for _, w := range c.want {
			name, _, _ := strings.Cut(w, "@")
			raised[name] = true
		}
	}
	for _, c := range holdingCases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, r := range p.EvaluateHolding(c.holding, c.now) {
				if r.Scope != rules.ScopeHolding {
					t.Errorf("EvaluateHolding returned %s rule %s", r.Scope, r.Name)
				}
				got = append(got, r.Name)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("matches = %q, want %q", got, c.want)
			}
		})
		for _, w := range c.want {
			raised[w] = true
		}
	}
	for _, r := range p.Rules() {
		if !raised[r.Name] {
			t.Errorf("default rule %s is raised by no seed situation", r.Name)
		}
	}
	if errs := nonZero(p.EvalErrors()); len(errs) > 0 {
		t.Errorf("runtime errors in the default pack: %v", errs)
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// TestDefaultPack: the embedded pack loads, is shared, and its rules are
// complete.
func TestDefaultPack(t *testing.T) {
	p := rules.Default()
	if p != rules.Default() {
		t.Error("Default returns a new policy each time")
	}
	if got := p.Version(); got != "piledger-default/2026.1" {
		t.Errorf("Version = %q", got)
	}
	if len(p.Digest()) != 64 {
		t.Errorf("Digest = %q, want 64 hex digits", p.Digest())
	}
	want := []string{
		"sensitive-without-separate-consent", "public-camera-without-notice",
		"public-camera-purpose-not-public-safety", "camera-in-prohibited-place",
		"use-beyond-collection-purpose", "processing-after-consent-withdrawn",
		"transfer-without-separate-consent", "entrust-without-legal-basis", "destroyed-before-minimum-retention",
		"camera-footage-under-30-days", "held-past-deadline", "image-access-without-reason",
		"processing-after-erasure-without-consent",
	}
	var got []string
	for _, r := range p.Rules() {
		got = append(got, r.Name)
		if r.Severity == piledgerv1.FindingSeverity_FINDING_SEVERITY_UNSPECIFIED || r.Reference == "" ||
			r.Description == "" || r.Condition == "" || len(r.Version) != len("piledger-default/2026.1@")+8 {
			t.Errorf("rule %s incomplete: %+v", r.Name, r)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules = %q, want %q", got, want)
	}
}
