package api_test

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/api"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The rule a face captured on consent that is not separate raises (PIPL
// Arts. 28, 29), in the default rule pack.
const sensitiveRule = "sensitive-without-separate-consent"

// compoundFaceGate is a residential compound's face gate enrolling a
// resident on the owners' notice: a face collected on consent, separate or
// not.
func compoundFaceGate(ref, processor string, at *timestamppb.Timestamp, separate bool) *piledgerv1.Event {
	return &piledgerv1.Event{
		EventId: uuid.Must(uuid.NewV7()).String(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_COLLECT,
		OccurredAt: at, Processor: processor, System: "face-gate",
		DataCategories: []string{"face"}, Purpose: "access-control", LegalBasis: "consent",
		Consent: &piledgerv1.Consent{Separate: separate, Reference: "owners-notice"},
		Place:   &piledgerv1.Place{Kind: "residential-compound", NoticeSignRef: "gate-sign"},
	}
}

// listFindings reads every page of GET /v1/findings?query with pageSize
// findings per page, and returns the findings and the first page.
func (s *readStack) listFindings(t *testing.T, query string, pageSize int) ([]*piledgerv1.Finding, *piledgerv1.ListFindingsResponse) {
	t.Helper()
	var (
		out   []*piledgerv1.Finding
		first *piledgerv1.ListFindingsResponse
		token string
	)
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("GET /v1/findings?%s: more than 100 pages", query)
		}
		page := &piledgerv1.ListFindingsResponse{}
		s.getJSON(t, fmt.Sprintf("/v1/findings?pageSize=%d&pageToken=%s&%s", pageSize, url.QueryEscape(token), query), page)
		if first == nil {
			first = page
		} else if !page.GetEvaluateTime().AsTime().Equal(first.GetEvaluateTime().AsTime()) {
			t.Errorf("page %d evaluated at %v, the first at %v", pages, page.GetEvaluateTime().AsTime(), first.GetEvaluateTime().AsTime())
		}
		if len(page.GetFindings()) > pageSize {
			t.Errorf("a page of %d findings for pageSize %d", len(page.GetFindings()), pageSize)
		}
		out = append(out, page.GetFindings()...)
		if token = page.GetNextPageToken(); token == "" {
			return out, first
		}
	}
}

func rulesOf(fs []*piledgerv1.Finding) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.GetRule())
	}
	return out
}

// TestFindingRoutes lists findings over REST and gRPC: stored findings (a
// compound's face gate without separate consent) and computed ones (a
// holding past its deadline), paged one by one, and every filter.
//
// It needs projections.Store.Findings.
func TestFindingRoutes(t *testing.T) {
	now := base.Add(100 * 24 * time.Hour)
	s := startReadStack(t, filepath.Join(t.TempDir(), "node"), func() time.Time { return now })
	ctx := t.Context()
	refs := []string{subjectRef(31), subjectRef(32), subjectRef(33), subjectRef(34)}
	events := []*piledgerv1.Event{
		compoundFaceGate(refs[0], "compound-mgmt", onDay(1), false),
		compoundFaceGate(refs[1], "compound-mgmt", onDay(2), false),
		compoundFaceGate(refs[2], "compound-mgmt", onDay(3), true), // near miss
	}
	// A camera capture, an access and a provision to the district office,
	// whose copy is kept 60 days from day 2: past its deadline and the
	// grace period at day 100.
	events = append(events, cameraEvents(refs[3])...)
	resp, err := s.client.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: events})
	if err != nil {
		t.Fatal(err)
	}
	receipts := resp.GetReceipts()
	last := receipts[len(receipts)-1].GetIndex()
	minIndex := fmt.Sprintf("minIndex=%d", last)

	// Every finding, one per page, and all of them in one page: the same.
	all, first := s.listFindings(t, minIndex, 1)
	one := &piledgerv1.ListFindingsResponse{}
	s.getJSON(t, "/v1/findings?pageSize=100&"+minIndex, one)
	if len(all) != len(one.GetFindings()) {
		t.Fatalf("paged one by one: %v; in one page: %v", rulesOf(all), rulesOf(one.GetFindings()))
	}
	for i := range all {
		if !proto.Equal(all[i], one.GetFindings()[i]) {
			t.Errorf("finding %d paged one by one:\n%v\nin one page:\n%v", i, all[i], one.GetFindings()[i])
		}
	}
	if first.GetPolicyVersion() == "" || first.GetLogSize() <= last || !first.GetEvaluateTime().AsTime().Equal(now) {
		t.Errorf("first page: policy %q, log size %d, evaluated at %v; want a policy, more than %d entries, %v",
			first.GetPolicyVersion(), first.GetLogSize(), first.GetEvaluateTime().AsTime(), last, now)
	}

	// The two gates without separate consent raise a finding each, stored
	// when their event was applied; the rule is about the event alone, so
	// the finding shows no holding.
	var sensitive []*piledgerv1.Finding
	computedSeen := false
	for _, f := range all {
		switch {
		case f.GetRule() == sensitiveRule:
			sensitive = append(sensitive, f)
		case f.GetComputed():
			computedSeen = true
			if f.GetRule() != "held-past-deadline" || f.GetProcessor() != "district-office" || f.GetHolding().GetDataCategory() != "face" ||
				f.GetPseudonym() != receipts[3].GetPseudonym() || !strings.HasPrefix(f.GetName(), "findings/computed/") {
				t.Errorf("computed finding: %v", f)
			}
		}
		if f.GetPseudonym() == receipts[2].GetPseudonym() {
			t.Errorf("the gate with separate consent raised %v", f)
		}
	}
	if !computedSeen {
		t.Errorf("no computed finding on the district office's copy past its deadline: %v", rulesOf(all))
	}
	if len(sensitive) != 2 {
		t.Fatalf("%d findings of %s, want 2: %v", len(sensitive), sensitiveRule, rulesOf(all))
	}
	for i, f := range sensitive {
		r := receipts[i]
		if f.GetSeverity() != piledgerv1.FindingSeverity_FINDING_SEVERITY_HIGH || f.GetProcessor() != "compound-mgmt" ||
			f.GetPseudonym() != r.GetPseudonym() || f.GetLogIndex() != r.GetIndex() || f.GetEventId() != r.GetEventId() ||
			f.GetOperation() != piledgerv1.Operation_OPERATION_COLLECT || !f.GetOccurTime().AsTime().Equal(onDay(i+1).AsTime()) ||
			f.GetComputed() || f.GetShredded() || f.GetLegalReference() == "" || f.GetRuleVersion() == "" ||
			f.GetHolding() != nil || f.GetName() != fmt.Sprintf("findings/%d-0", r.GetIndex()) {
			t.Errorf("finding %d of %s: %v", i, sensitiveRule, f)
		}
	}

	// Filters, over REST.
	for _, test := range []struct {
		name, query string
		want        func(*piledgerv1.Finding) bool
	}{
		{"rule", "rule=" + sensitiveRule, func(f *piledgerv1.Finding) bool { return f.GetRule() == sensitiveRule }},
		{"processor", "processor=compound-mgmt", func(f *piledgerv1.Finding) bool { return f.GetProcessor() == "compound-mgmt" }},
		{"processor without findings", "processor=nobody", func(*piledgerv1.Finding) bool { return false }},
		{"severity", "severity=FINDING_SEVERITY_HIGH", func(f *piledgerv1.Finding) bool {
			return f.GetSeverity() >= piledgerv1.FindingSeverity_FINDING_SEVERITY_HIGH
		}},
		{"severity by number", "severity=4", func(f *piledgerv1.Finding) bool {
			return f.GetSeverity() == piledgerv1.FindingSeverity_FINDING_SEVERITY_CRITICAL
		}},
		{"from day 2", "startTime=" + onDay(2).AsTime().Format(time.RFC3339), func(f *piledgerv1.Finding) bool {
			return !f.GetOccurTime().AsTime().Before(onDay(2).AsTime())
		}},
		{"before day 2", "endTime=" + onDay(2).AsTime().Format(time.RFC3339), func(f *piledgerv1.Finding) bool {
			return f.GetOccurTime().AsTime().Before(onDay(2).AsTime())
		}},
		{"rule and time", "rule=" + sensitiveRule + "&startTime=" + onDay(2).AsTime().Format(time.RFC3339) + "&endTime=" + onDay(3).AsTime().Format(time.RFC3339),
			func(f *piledgerv1.Finding) bool { return f.GetPseudonym() == receipts[1].GetPseudonym() }},
	} {
		t.Run(test.name, func(t *testing.T) {
			got, _ := s.listFindings(t, test.query, 1)
			var want []*piledgerv1.Finding
			for _, f := range all {
				if test.want(f) {
					want = append(want, f)
				}
			}
			if !slices.EqualFunc(got, want, func(a, b *piledgerv1.Finding) bool { return proto.Equal(a, b) }) {
				t.Errorf("?%s: %v, want %v", test.query, rulesOf(got), rulesOf(want))
			}
		})
	}
	if got, _ := s.listFindings(t, "rule="+sensitiveRule, 1); len(got) != 2 {
		t.Errorf("?rule=%s: %d findings, want 2", sensitiveRule, len(got))
	}

	for _, ref := range refs {
		if strings.Contains(s.logs.String(), ref) {
			t.Error("the server log holds a raw subject reference")
		}
	}
}

// TestFindingRouteErrors: every bad filter is INVALID_ARGUMENT (HTTP 400)
// with a BadRequest naming the field, over REST and gRPC, and never echoes
// the value.
func TestFindingRouteErrors(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	ref := s.ref(35)
	at := func(d time.Duration) *timestamppb.Timestamp {
		return timestamppb.New(time.Now().Add(-d).Truncate(time.Millisecond))
	}
	r := s.appendAs(t, s.key("city-police"),
		compoundFaceGate(ref, "city-police", at(2*time.Hour), false),
		compoundFaceGate(s.ref(36), "city-police", at(time.Hour), false))
	minIndex := r[1].GetIndex()
	admin := []string{"Authorization", s.bearer(t, api.RoleAdmin, "ops-1"), "X-Piledger-Reason", "route errors test"}
	c := piledgerv1.NewFindingServiceClient(s.conn(t, nil))
	adminCtx := ctxMD(t, "authorization", admin[1], "x-piledger-reason", admin[3])
	page, err := c.ListFindings(adminCtx, &piledgerv1.ListFindingsRequest{PageSize: 1, Rule: sensitiveRule, MinIndex: &minIndex})
	if err != nil {
		t.Fatal(err)
	}
	token := url.QueryEscape(page.GetNextPageToken())
	// The token cases need the read models to hold both findings.
	hasToken := token != ""
	if !hasToken {
		t.Errorf("two findings of %s with pageSize 1 gave no next page token: %v", sensitiveRule, page)
	}

	long := strings.Repeat("a", 64)
	for _, test := range []struct {
		name, query string
		field       string
		needsToken  bool
	}{
		{"negative page size", "pageSize=-1", "pageSize", false},
		{"page size not a number", "pageSize=many", "pageSize", false},
		{"unknown severity name", "severity=FINDING_SEVERITY_SEVERE", "severity", false},
		{"unknown severity number", "severity=9", "severity", false},
		{"start time not a timestamp", "startTime=yesterday", "startTime", false},
		{"end time not a timestamp", "endTime=" + ref, "endTime", false},
		{"start after end", "startTime=2026-02-01T00:00:00Z&endTime=2026-01-01T00:00:00Z", "endTime", false},
		{"rule in capitals", "rule=Sensitive", "rule", false},
		{"rule with a space", "rule=" + url.QueryEscape("no consent"), "rule", false},
		{"rule too long", "rule=" + long, "rule", false},
		{"rule starting with a dash", "rule=-x", "rule", false},
		{"bad processor", "processor=City%20Police", "processor", false},
		{"altered page token", "pageToken=AAAA" + token, "pageToken", false},
		{"page token of other filters", "rule=held-past-deadline&pageToken=" + token, "pageToken", true},
		{"page token without its filters", "pageToken=" + token, "pageToken", true},
		{"a well-formed rule no finding has", "rule=no-such-rule", "", false},
		{"start equal to end", "startTime=2026-01-01T00:00:00Z&endTime=2026-01-01T00:00:00Z", "", false},
	} {
		t.Run(test.name, func(t *testing.T) {
			if test.needsToken && !hasToken {
				t.Skip("no page token")
			}
			code, b := s.do(t, "GET", "/v1/findings?"+test.query, nil, admin...)
			if test.field == "" {
				if code != http.StatusOK {
					t.Errorf("GET /v1/findings?%s: %d %s, want 200", test.query, code, b)
				}
				return
			}
			if code != http.StatusBadRequest {
				t.Fatalf("GET /v1/findings?%s: %d %s, want 400", test.query, code, b)
			}
			checkInvalid(t, decodeStatus(t, b), codes.InvalidArgument, api.ReasonInvalidRequest, test.field, "")
		})
	}

	// Over gRPC: every violation of a request at once.
	_, err = c.ListFindings(adminCtx, &piledgerv1.ListFindingsRequest{
		Rule: "No Such Rule", Processor: "City Police", Severity: piledgerv1.FindingSeverity(9), PageSize: -1,
		StartTime: timestamppb.New(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)),
		EndTime:   timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
	})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("gRPC bad request: %v", err)
	}
	for _, f := range []string{"rule", "processor", "severity", "pageSize", "endTime"} {
		checkInvalid(t, st.Proto(), codes.InvalidArgument, api.ReasonInvalidRequest, f, "")
	}
	_, err = c.ListFindings(adminCtx, &piledgerv1.ListFindingsRequest{StartTime: &timestamppb.Timestamp{Seconds: 1, Nanos: -1}})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !hasViolation(st, "startTime") {
		t.Errorf("gRPC invalid start time: %v", err)
	}
	_, err = c.ListFindings(adminCtx, &piledgerv1.ListFindingsRequest{PageToken: "AAAA"})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !hasViolation(st, "pageToken") {
		t.Errorf("gRPC altered page token: %v", err)
	}
	// An emitter's bad filter is checked as well (after its processor).
	_, err = c.ListFindings(ctxMD(t, "authorization", s.key("city-police")), &piledgerv1.ListFindingsRequest{Rule: "Bad"})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !hasViolation(st, "rule") {
		t.Errorf("an emitter's bad rule over gRPC: %v", err)
	}
}

// TestFindingsAuthorization: an emitter sees the findings about its own
// processor only (an empty filter becomes its own; another processor is
// PERMISSION_DENIED), a subject none, regulators and admins all of them
// with a reason; every read by anyone but the subject is recorded in the
// timeline of each subject listed.
//
// It needs projections.Store.Findings.
func TestFindingsAuthorization(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	at := timestamppb.New(time.Now().Add(-time.Hour).Truncate(time.Millisecond))
	police, shop := s.ref(501), s.ref(502)
	r1 := s.appendAs(t, s.key("city-police"), compoundFaceGate(police, "city-police", at, false))
	r2 := s.appendAs(t, s.key("shop-42"), compoundFaceGate(shop, "shop-42", at, false))
	// Camera footage kept 90 days from 200 days ago, and a copy provided
	// without consent: findings computed on holdings past their deadline,
	// which show the holding, and a stored one about the provision.
	r3 := s.appendAs(t, s.key("city-police"), cameraEvents(s.ref(503))...)
	minIndex := max(r1[0].GetIndex(), r2[0].GetIndex(), r3[2].GetIndex())
	query := fmt.Sprintf("/v1/findings?minIndex=%d", minIndex)
	regulator := s.bearer(t, api.RoleRegulator, "officer-7")
	conn := s.conn(t, nil)
	findings := piledgerv1.NewFindingServiceClient(conn)

	list := func(t *testing.T, path string, header ...string) []*piledgerv1.Finding {
		t.Helper()
		code, b := s.do(t, "GET", path, nil, header...)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, b)
		}
		var resp piledgerv1.ListFindingsResponse
		if err := protojson.Unmarshal(b, &resp); err != nil {
			t.Fatal(err)
		}
		return resp.GetFindings()
	}
	processors := func(fs []*piledgerv1.Finding) map[string]int {
		out := map[string]int{}
		for _, f := range fs {
			out[f.GetProcessor()]++
		}
		return out
	}

	// An emitter: its own findings only, with or without naming itself.
	for _, q := range []string{query, query + "&processor=city-police"} {
		fs := list(t, q, "Authorization", s.key("city-police"))
		if p := processors(fs); len(p) != 1 || p["city-police"] == 0 {
			t.Errorf("city-police's emitter, GET %s: findings by processor %v, want city-police's only", q, p)
		}
	}
	g, err := findings.ListFindings(ctxMD(t, "authorization", s.key("shop-42")), &piledgerv1.ListFindingsRequest{MinIndex: &minIndex})
	if p := processors(g.GetFindings()); err != nil || len(p) != 1 || p["shop-42"] == 0 {
		t.Errorf("shop-42's emitter over gRPC: %v, %v", p, err)
	}
	// ... and nobody else's.
	code, b := s.do(t, "GET", query+"&processor=shop-42", nil, "Authorization", s.key("city-police"))
	if code != http.StatusForbidden {
		t.Fatalf("an emitter reading another processor's findings: %d %s, want 403", code, b)
	}
	if st := decodeStatus(t, b); errorInfo(t, st).GetMetadata()["field"] != "processor" {
		t.Errorf("403 body %s does not name the processor field", b)
	}
	_, err = findings.ListFindings(ctxMD(t, "authorization", s.key("city-police")), &piledgerv1.ListFindingsRequest{Processor: "shop-42"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("an emitter reading another processor's findings over gRPC: %v", err)
	}

	// A data subject: no findings, not even about themself.
	subject := s.bearer(t, api.RoleSubject, police)
	if code, b := s.do(t, "GET", query, nil, "Authorization", subject); code != http.StatusForbidden {
		t.Errorf("a subject listing findings: %d %s, want 403", code, b)
	}
	if _, err := findings.ListFindings(ctxMD(t, "authorization", subject), &piledgerv1.ListFindingsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a subject listing findings over gRPC: %v", err)
	}

	// A regulator: a reason is required; then every processor's findings.
	code, b = s.do(t, "GET", query, nil, "Authorization", regulator)
	if code != http.StatusBadRequest {
		t.Fatalf("a regulator without a reason: %d %s, want 400", code, b)
	}
	checkInvalid(t, decodeStatus(t, b), codes.InvalidArgument, api.ReasonInvalidRequest, "x-piledger-reason", "")
	before := s.logSize()
	fs := list(t, query, "Authorization", regulator, "X-Piledger-Reason", "findings review 2026-3")
	if p := processors(fs); p["city-police"] == 0 || p["shop-42"] == 0 {
		t.Errorf("the regulator's findings by processor: %v, want both processors'", p)
	}
	// The read is in the timeline of every subject listed, as a view of
	// the data categories of the holdings shown (the ledger's records when
	// a finding shows none), with the reason given.
	want := map[string][]string{}
	for _, f := range fs {
		if c := f.GetHolding().GetDataCategory(); c != "" && !slices.Contains(want[f.GetPseudonym()], c) {
			want[f.GetPseudonym()] = append(want[f.GetPseudonym()], c)
		} else if _, ok := want[f.GetPseudonym()]; !ok {
			want[f.GetPseudonym()] = nil
		}
	}
	if len(want) != 3 {
		t.Errorf("the regulator's findings are about %d subjects, want 3", len(want))
	}
	admin := s.bearer(t, api.RoleAdmin, "ops-1")
	recorded := map[string][]string{}
	for _, e := range s.entriesAs(t, admin, "check", before) {
		ev := e.GetEvent()
		if ev.GetAttributes()["method"] != piledgerv1.FindingService_ListFindings_FullMethodName {
			continue
		}
		if ev.GetAccess().GetActor() != "regulator:officer-7" || ev.GetAccess().GetReason() != "findings review 2026-3" ||
			ev.GetAccess().GetKind() != piledgerv1.AccessKind_ACCESS_KIND_VIEW || ev.GetProcessor() != api.LedgerProcessor {
			t.Errorf("access event %v", ev)
		}
		recorded[e.GetHeader().GetPseudonym()] = append(recorded[e.GetHeader().GetPseudonym()], ev.GetDataCategories()...)
	}
	for p, cats := range want {
		if len(cats) == 0 {
			cats = []string{"x-piledger.ledger-records"}
		}
		slices.Sort(cats)
		got := slices.Sorted(slices.Values(recorded[p]))
		if !slices.Equal(got, cats) {
			t.Errorf("the regulator's read of the findings about subject %.8s… is recorded with categories %v, want %v", p, got, cats)
		}
	}
	if len(recorded) != len(want) {
		t.Errorf("the regulator's read is recorded for %d subjects, want %d", len(recorded), len(want))
	}
	var holdingShown bool
	for _, cats := range want {
		holdingShown = holdingShown || len(cats) > 0
	}
	if !holdingShown {
		t.Errorf("no finding shows a holding: %v", rulesOf(fs))
	}

	if fs := list(t, query+"&processor=shop-42", "Authorization", regulator, "X-Piledger-Reason", "findings review 2026-3"); len(processors(fs)) != 1 {
		t.Errorf("the regulator's filter on shop-42: %v", processors(fs))
	}
	// Paged one by one over gRPC: the same findings.
	var paged []*piledgerv1.Finding
	req := &piledgerv1.ListFindingsRequest{PageSize: 1, MinIndex: &minIndex}
	for range len(fs) + 1 {
		page, err := findings.ListFindings(ctxMD(t, "authorization", regulator, "x-piledger-reason", "findings review 2026-3"), req)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, page.GetFindings()...)
		if req.PageToken = page.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if !slices.EqualFunc(paged, fs, func(a, b *piledgerv1.Finding) bool { return proto.Equal(a, b) }) {
		t.Errorf("paged over gRPC: %v; in one page over REST: %v", rulesOf(paged), rulesOf(fs))
	}
	g, err = findings.ListFindings(ctxMD(t, "authorization", admin, "x-piledger-reason", "ops check"), &piledgerv1.ListFindingsRequest{MinIndex: &minIndex})
	if p := processors(g.GetFindings()); err != nil || p["city-police"] == 0 || p["shop-42"] == 0 {
		t.Errorf("the admin over gRPC: %v, %v", p, err)
	}

	// An emitter's read is recorded too, with a fixed reason, for its own
	// subjects only.
	before = s.logSize()
	own := map[string]bool{}
	for _, f := range list(t, query, "Authorization", s.key("city-police")) {
		own[f.GetPseudonym()] = true
	}
	if own[r2[0].GetPseudonym()] || !own[r1[0].GetPseudonym()] || !own[r3[0].GetPseudonym()] {
		t.Errorf("city-police's emitter sees findings about the wrong subjects")
	}
	emitterReads := map[string]bool{}
	for _, e := range s.entriesAs(t, admin, "check", before) {
		ev := e.GetEvent()
		if ev.GetAttributes()["method"] != piledgerv1.FindingService_ListFindings_FullMethodName {
			continue
		}
		emitterReads[e.GetHeader().GetPseudonym()] = true
		if ev.GetAccess().GetReason() == "" || ev.GetAttributes()["role"] != "emitter" {
			t.Errorf("the emitter's read is recorded as %v", ev)
		}
	}
	if !maps.Equal(emitterReads, own) {
		t.Errorf("the emitter's read is recorded for %d subject(s), want the %d of its findings", len(emitterReads), len(own))
	}
}
