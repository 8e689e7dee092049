package projections_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/projections"
	"github.com/piledger/piledger/projections/rules"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The seed situations, each as an event sequence for one subject at one
// processor. Every rule of the default pack has a sequence that raises it
// and a near miss that does not.

func faceGate(ref, processor string, d float64, separate bool) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, System: "face-gate",
		DataCategories: []string{"face"}, Purpose: "access-control", LegalBasis: "consent",
		Consent: &piledgerv1.Consent{Separate: separate, Reference: "owners-notice"},
		Place:   &piledgerv1.Place{Kind: "residential-compound", NoticeSignRef: "gate-sign"},
	}
}

func camera(ref, processor string, d float64, place, notice, purpose string) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, System: "cam",
		DataCategories: []string{"video-footage"}, Purpose: purpose, LegalBasis: "legal-duty",
		Retention: &piledgerv1.Retention{KeepFor: days(90)},
		Place:     &piledgerv1.Place{Kind: place, NoticeSignRef: notice},
	}
}

func use(ref, processor, purpose string, d float64, op piledgerv1.Operation) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: op, OccurredAt: timestamppb.New(day(d)),
		Processor: processor, DataCategories: []string{"phone"}, Purpose: purpose,
	}
}

func imageAccess(ref, processor, reason string, d float64) *piledgerv1.Event {
	e := policeAccess(ref, processor, d)
	e.Access.Reason = reason
	return e
}

func withdraw(ref, processor string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, Purpose: "marketing",
	}
}

func provideOnConsent(ref, processor string, d float64, separate bool) *piledgerv1.Event {
	e := provide(ref, processor, "ad-network", d)
	e.DataCategories, e.Purpose, e.LegalBasis = []string{"phone"}, "marketing", "consent"
	e.Consent = &piledgerv1.Consent{Separate: separate, Reference: "form-9"}
	return e
}

func contractCollect(ref, processor string, d float64) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: newID(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt: timestamppb.New(day(d)), Processor: processor, DataCategories: []string{"phone"},
		Purpose: "service-provision", LegalBasis: "contract-or-hr",
	}
}

// scenario is an event sequence for one subject (its own processor) and
// the rules it must raise, stored or computed at the stack's clock (day
// 100, destruction grace 15 days).
type scenario struct {
	name   string
	events func(ref, p string) []*piledgerv1.Event
	erase  int // erase the subject after this many events (0: never)
	after  func(ref, p string) []*piledgerv1.Event
	want   []string
}

var scenarios = []scenario{
	{name: "compound face gate without separate consent",
		events: func(r, p string) []*piledgerv1.Event { return ev(faceGate(r, p, 1, false)) },
		want:   []string{"sensitive-without-separate-consent"}},
	{name: "near miss: compound face gate with separate consent",
		events: func(r, p string) []*piledgerv1.Event { return ev(faceGate(r, p, 1, true)) }},
	{name: "street camera without a notice sign",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(camera(r, p, 1, "public-street", "", "public-safety"))
		},
		want: []string{"public-camera-without-notice"}},
	{name: "near miss: street camera with its notice sign",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(camera(r, p, 1, "public-street", "sign-4", "public-safety"))
		}},
	{name: "shop camera for marketing without separate consent",
		events: func(r, p string) []*piledgerv1.Event { return ev(camera(r, p, 1, "shop", "sign-1", "marketing")) },
		want:   []string{"public-camera-purpose-not-public-safety"}},
	{name: "near miss: shop camera for public safety",
		events: func(r, p string) []*piledgerv1.Event { return ev(camera(r, p, 1, "shop", "sign-1", "public-safety")) }},
	{name: "camera in a hotel room",
		events: func(r, p string) []*piledgerv1.Event { return ev(camera(r, p, 1, "hotel-room", "", "public-safety")) },
		want:   []string{"camera-in-prohibited-place"}},
	{name: "use for a purpose the data was not collected for",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(marketingCollect(r, p, 1), use(r, p, "fraud-prevention", 2, piledgerv1.Operation_OPERATION_USE))
		},
		want: []string{"use-beyond-collection-purpose"}},
	{name: "near miss: use for the collection purpose",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(marketingCollect(r, p, 1), use(r, p, "marketing", 2, piledgerv1.Operation_OPERATION_USE))
		}},
	{name: "processing after consent was withdrawn",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(marketingCollect(r, p, 1), withdraw(r, p, 2), use(r, p, "marketing", 3, piledgerv1.Operation_OPERATION_PROCESS))
		},
		// and the number is still held long after the withdrawal made it due
		want: []string{"processing-after-consent-withdrawn", "held-past-deadline"}},
	{name: "near miss: processing before the withdrawal, destroyed after it",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(marketingCollect(r, p, 1), use(r, p, "marketing", 1.5, piledgerv1.Operation_OPERATION_PROCESS),
				withdraw(r, p, 2), destroy(r, p, 3, "phone"))
		}},
	{name: "provision on plain consent",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(marketingCollect(r, p, 1), provideOnConsent(r, p, 2, false))
		},
		want: []string{"transfer-without-separate-consent"}},
	{name: "near miss: provision on separate consent",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(marketingCollect(r, p, 1), provideOnConsent(r, p, 2, true))
		}},
	{name: "entrusting with neither consent nor a legal basis",
		events: func(r, p string) []*piledgerv1.Event {
			e := provideOnConsent(r, p, 2, false)
			e.Operation, e.LegalBasis, e.Consent = piledgerv1.Operation_OPERATION_ENTRUST, "", nil
			return ev(contractCollect(r, p, 1), e)
		},
		want: []string{"entrust-without-legal-basis"}},
	{name: "near miss: entrusting to a processor on the contract's basis",
		events: func(r, p string) []*piledgerv1.Event {
			e := provideOnConsent(r, p, 2, false)
			e.Operation, e.LegalBasis, e.Consent = piledgerv1.Operation_OPERATION_ENTRUST, "contract-or-hr", nil
			return ev(contractCollect(r, p, 1), e)
		}},
	{name: "footage deleted at day 10 against a stated 30-day minimum",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(cameraFace(r, p, 1), destroy(r, p, 11, "face"))
		},
		want: []string{"destroyed-before-minimum-retention"}},
	{name: "near miss: footage deleted at day 31",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(cameraFace(r, p, 1), destroy(r, p, 32, "face"))
		}},
	{name: "footage with no stated minimum deleted at day 10",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(camera(r, p, 1, "public-street", "sign-4", "public-safety"), destroy(r, p, 11, "video-footage"))
		},
		want: []string{"camera-footage-under-30-days"}},
	{name: "near miss: footage with no stated minimum deleted at day 31",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(camera(r, p, 1, "public-street", "sign-4", "public-safety"), destroy(r, p, 32, "video-footage"))
		}},
	{name: "epidemic data kept after the epidemic (open: computed at query time)",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(epidemicCollect(r, p, 1), purposeEnded(r, p, "epidemic-prevention", 50))
		},
		want: []string{"held-past-deadline", "held-past-deadline"}}, // two categories
	{name: "epidemic data destroyed late (stored)",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(epidemicCollect(r, p, 1), purposeEnded(r, p, "epidemic-prevention", 50),
				destroy(r, p, 80, "health-code-status", "travel-history"))
		},
		want: []string{"held-past-deadline", "held-past-deadline"}},
	{name: "near miss: epidemic data destroyed when the epidemic ended",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(epidemicCollect(r, p, 1), purposeEnded(r, p, "epidemic-prevention", 50),
				destroy(r, p, 55, "health-code-status", "travel-history"))
		}},
	{name: "access to footage without a stated reason",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(cameraFace(r, p, 1), imageAccess(r, p, "", 2))
		},
		want: []string{"image-access-without-reason"}},
	{name: "near miss: police access for a guardian's lost-child request, reason recorded",
		events: func(r, p string) []*piledgerv1.Event {
			return ev(cameraFace(r, p, 1), imageAccess(r, p, "guardian request: lost child, case 2026-114", 2))
		}},
	{name: "processing resumed after erasure without a new consent",
		events: func(r, p string) []*piledgerv1.Event { return ev(marketingCollect(r, p, 1)) },
		erase:  1,
		after:  func(r, p string) []*piledgerv1.Event { return ev(contractCollect(r, p, 5)) },
		want:   []string{"processing-after-erasure-without-consent"}},
	{name: "near miss: collection after erasure with a new consent",
		events: func(r, p string) []*piledgerv1.Event { return ev(marketingCollect(r, p, 1)) },
		erase:  1,
		after:  func(r, p string) []*piledgerv1.Event { return ev(marketingCollect(r, p, 5)) }},
}

func ev(e ...*piledgerv1.Event) []*piledgerv1.Event { return e }

// runScenarios appends every scenario (each its own subject and processor)
// and returns the subject ref and processor of each.
func runScenarios(t *testing.T, s *stack) (refs, processors []string) {
	t.Helper()
	ctx := context.Background()
	for i, sc := range scenarios {
		r, p := ref("finding-subject", i), ref("processor", i)
		refs, processors = append(refs, r), append(processors, p)
		s.append(sc.events(r, p)...)
		if sc.erase > 0 {
			s.sync()
			if _, err := s.keys.Destroy(ctx, s.pseudonym(r)); err != nil {
				t.Fatal(err)
			}
		}
		if sc.after != nil {
			s.append(sc.after(r, p)...)
		}
	}
	s.sync()
	return refs, processors
}

// allFindings lists every finding, page by page.
func allFindings(t testing.TB, store *projections.Store, q projections.FindingQuery) []*piledgerv1.Finding {
	t.Helper()
	var out []*piledgerv1.Finding
	for {
		resp, err := store.Findings(context.Background(), q)
		if err != nil {
			t.Fatalf("Findings: %v", err)
		}
		out = append(out, resp.GetFindings()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		q.PageToken = resp.GetNextPageToken()
	}
}

func rulesOf(fs []*piledgerv1.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.GetRule())
	}
	slices.Sort(out)
	return out
}

// TestDefaultRulesOnSeedScenarios: every default rule is raised by its seed
// scenario and not by its near miss, through the real log and projector,
// each finding names its rule, legal reference, event and (for rules about
// a holding) the holding, and findings are listed identically page by page.
func TestDefaultRulesOnSeedScenarios(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	refs, processors := runScenarios(t, s)
	all := allFindings(t, s.store, projections.FindingQuery{PageSize: projections.MaxPageSize})
	raised := map[string]bool{}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			got := allFindings(t, s.store, projections.FindingQuery{Processor: processors[i]})
			want := slices.Clone(sc.want)
			slices.Sort(want)
			if g := rulesOf(got); !slices.Equal(g, want) {
				t.Fatalf("rules raised = %v, want %v", g, want)
			}
			for _, f := range got {
				raised[f.GetRule()] = true
				if f.GetLegalReference() == "" || f.GetRuleVersion() == "" || f.GetEventId() == "" ||
					f.GetPseudonym() != s.pseudonym(refs[i]) || f.GetSeverity() == piledgerv1.FindingSeverity_FINDING_SEVERITY_UNSPECIFIED {
					t.Errorf("finding lacks its rule, reference, version, event or subject: %v", f)
				}
				if f.GetRule() == "held-past-deadline" || f.GetRule() == "destroyed-before-minimum-retention" ||
					f.GetRule() == "camera-footage-under-30-days" {
					if f.GetHolding().GetName() == "" || f.GetHolding().GetDataCategory() == "" {
						t.Errorf("a holding finding does not name its holding: %v", f)
					}
				}
			}
		})
	}
	for _, r := range rules.Default().Rules() {
		if !raised[r.Name] {
			t.Errorf("default rule %s raised by no scenario", r.Name)
		}
	}
	// Computed findings come after the stored ones, and paging by one
	// returns the same list.
	paged := allFindings(t, s.store, projections.FindingQuery{PageSize: 1})
	if len(paged) != len(all) {
		t.Fatalf("paging by one: %d findings, one page: %d", len(paged), len(all))
	}
	seenComputed := false
	for i := range all {
		if all[i].GetName() != paged[i].GetName() || all[i].GetRule() != paged[i].GetRule() {
			t.Fatalf("finding %d: paged %s/%s, one page %s/%s", i, paged[i].GetName(), paged[i].GetRule(), all[i].GetName(), all[i].GetRule())
		}
		if all[i].GetComputed() {
			seenComputed = true
		} else if seenComputed {
			t.Fatalf("stored finding %s after a computed one", all[i].GetName())
		}
	}
	if !seenComputed {
		t.Error("no computed finding: the open epidemic holdings past their deadline should be")
	}
}

// TestFindingFilters: rule, processor, severity and time filters, and a
// page token bound to its filters.
func TestFindingFilters(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	_, processors := runScenarios(t, s)
	ctx := context.Background()
	all := allFindings(t, s.store, projections.FindingQuery{})
	count := func(keep func(f *piledgerv1.Finding) bool) int {
		n := 0
		for _, f := range all {
			if keep(f) {
				n++
			}
		}
		return n
	}
	cases := []struct {
		name string
		q    projections.FindingQuery
		keep func(f *piledgerv1.Finding) bool
	}{
		{"rule", projections.FindingQuery{Rule: "held-past-deadline"}, func(f *piledgerv1.Finding) bool { return f.GetRule() == "held-past-deadline" }},
		{"processor", projections.FindingQuery{Processor: processors[0]}, func(f *piledgerv1.Finding) bool { return f.GetProcessor() == processors[0] }},
		{"severity", projections.FindingQuery{Severity: piledgerv1.FindingSeverity_FINDING_SEVERITY_HIGH},
			func(f *piledgerv1.Finding) bool {
				return f.GetSeverity() >= piledgerv1.FindingSeverity_FINDING_SEVERITY_HIGH
			}},
		{"time", projections.FindingQuery{Start: day(2), End: day(60)}, func(f *piledgerv1.Finding) bool {
			at := f.GetOccurTime().AsTime()
			return !at.Before(day(2)) && at.Before(day(60))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := count(c.keep)
			if want == 0 || want == len(all) {
				t.Fatalf("the filter keeps %d of %d findings: not a test of it", want, len(all))
			}
			c.q.PageSize = 2
			got := allFindings(t, s.store, c.q)
			if len(got) != want {
				t.Fatalf("%d findings, want %d", len(got), want)
			}
			for _, f := range got {
				if !c.keep(f) {
					t.Errorf("finding %s/%s does not pass the filter", f.GetName(), f.GetRule())
				}
			}
		})
	}
	first, err := s.store.Findings(ctx, projections.FindingQuery{PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, token %q", err, first.GetNextPageToken())
	}
	if _, err := s.store.Findings(ctx, projections.FindingQuery{PageSize: 1, Rule: "held-past-deadline", PageToken: first.GetNextPageToken()}); err == nil {
		t.Error("a page token was accepted with another filter")
	}
}

// TestFindingsRebuiltIdentically: deleting the read models and rebuilding
// them from the log raises the same findings; an erased subject's findings
// stand, without their holding.
func TestFindingsRebuiltIdentically(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	s := startStack(t, dir)
	refs, processors := runScenarios(t, s)
	before := allFindings(t, s.store, projections.FindingQuery{})

	s.stopProjector()
	if err := os.RemoveAll(filepath.Join(dir, "projections")); err != nil {
		t.Fatal(err)
	}
	s.startProjector(projections.Config{Dir: filepath.Join(dir, "projections")})
	s.sync()
	after := allFindings(t, s.store, projections.FindingQuery{})
	if len(after) != len(before) {
		t.Fatalf("rebuild: %d findings, before %d", len(after), len(before))
	}
	for i := range before {
		if string(marshal(t, before[i])) != string(marshal(t, after[i])) {
			t.Fatalf("finding %d differs after rebuild:\n%v\n%v", i, before[i], after[i])
		}
	}

	// Erase the subject of the early footage destruction: the finding
	// stays, its holding goes with the key.
	i := slices.IndexFunc(scenarios, func(sc scenario) bool { return sc.name == "footage deleted at day 10 against a stated 30-day minimum" })
	if _, err := s.keys.Destroy(context.Background(), s.pseudonym(refs[i])); err != nil {
		t.Fatal(err)
	}
	got := allFindings(t, s.store, projections.FindingQuery{Processor: processors[i]})
	if len(got) != 1 || !got[0].GetShredded() || got[0].GetHolding() != nil || got[0].GetRule() != "destroyed-before-minimum-retention" {
		t.Fatalf("after erasure: %v; want the finding, shredded, without its holding", got)
	}
}

// TestCustomRuleRaisesFindings: an operator's rule raises findings, and
// opening the read models under another policy rebuilds them so findings
// follow the policy in force.
func TestCustomRuleRaisesFindings(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	s := startStack(t, dir)
	s.append(marketingCollect("custom-1", "shop-9", 1), cameraFace("custom-2", "city-police", 1))
	s.sync()
	if n := len(allFindings(t, s.store, projections.FindingQuery{Rule: "marketing-phone"})); n != 0 {
		t.Fatalf("%d findings of a rule not in force", n)
	}
	s.stopProjector()

	policy, err := rules.Parse("acme.yaml", []byte(`policy: acme
version: "7"
rules:
  - name: marketing-phone
    severity: low
    reference: "Acme policy 4.2"
    description: "Phone numbers are not collected for marketing."
    scope: event
    operations: [collect]
    condition: event.purpose == "marketing" && "phone" in event.categories
`))
	if err != nil {
		t.Fatal(err)
	}
	store := s.startProjector(projections.Config{Dir: filepath.Join(dir, "projections"), Policy: policy})
	s.sync()
	got := allFindings(t, store, projections.FindingQuery{})
	if g := rulesOf(got); !slices.Equal(g, []string{"marketing-phone"}) {
		t.Fatalf("findings under the custom policy: %v, want [marketing-phone]", g)
	}
	f := got[0]
	if f.GetPseudonym() != s.pseudonym("custom-1") || f.GetRuleVersion()[:7] != "acme/7@" ||
		f.GetSeverity() != piledgerv1.FindingSeverity_FINDING_SEVERITY_LOW {
		t.Errorf("finding %v: want subject custom-1, version acme/7@…, severity low", f)
	}
	resp, err := store.Findings(context.Background(), projections.FindingQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPolicyVersion() != policy.Version() {
		t.Errorf("policy version %q, want %q", resp.GetPolicyVersion(), policy.Version())
	}
}

// TestSweepCountsComputedFindings: the sweep counts the open holdings past
// their deadline by rule, at the clock's time.
func TestSweepCountsComputedFindings(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	s.append(epidemicCollect("sweep-1", "health-office", 1), purposeEnded("", "health-office", "epidemic-prevention", 50))
	s.sync()
	ctx := context.Background()
	s.clock.set(day(60)) // due, within the grace period
	got, err := s.store.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("sweep within the grace period: %v, want none", got)
	}
	s.clock.set(day(70))
	if got, err = s.store.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"held-past-deadline": 2}; !maps.Equal(got, want) {
		t.Fatalf("sweep: %v, want %v", got, want)
	}
	if c := s.store.ComputedFindings(); !maps.Equal(c, got) {
		t.Errorf("ComputedFindings = %v, want the last sweep's %v", c, got)
	}
}
