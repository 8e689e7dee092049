package client_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/api/client"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// startFindingsStack starts a real server with read models and API keys for
// the given processors, stopped at the end of the test, and returns its
// gRPC address and each processor's API key.
func startFindingsStack(t *testing.T, processors ...string) (string, map[string]string) {
	t.Helper()
	s := newReadStack(t, processors...)
	return s.addr, s.apiKeys
}

// faceGate is a residential compound's face gate enrolling a resident on
// consent, separate or not: without, it breaks the default rule
// "sensitive-without-separate-consent".
func faceGate(subject string, at time.Time, separate bool) client.Collect {
	return client.Collect{
		Subject: subject, OccurredAt: at, System: "face-gate", Categories: []string{"face"},
		Purpose: "access-control", LegalBasis: "consent",
		Consent: &client.Consent{Separate: separate, Reference: "owners-notice"},
		Place:   &client.Place{Kind: "residential-compound", NoticeSignRef: "gate-sign"},
	}
}

// TestFindings lists an emitter's findings with the SDK: every page through
// the iterator, one page, the filters, and the errors.
func TestFindings(t *testing.T) {
	addr, keys := startFindingsStack(t, "compound-mgmt", "shop-42")
	ctx := t.Context()
	newClient := func(processor string) *client.Client {
		c, err := client.New(addr, client.WithInsecure(), client.WithAPIKey(keys[processor]), client.WithProcessor(processor))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	compound, shop := newClient("compound-mgmt"), newClient("shop-42")
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	receipts, err := compound.Append(ctx,
		faceGate("resident-1", t0, false),
		faceGate("resident-2", t0.Add(time.Minute), false),
		faceGate("resident-3", t0.Add(2*time.Minute), true), // separate consent: no finding
		faceGate("resident-4", t0.Add(3*time.Minute), false),
	)
	if err != nil {
		t.Fatal(err)
	}
	shopReceipts, err := shop.Append(ctx, faceGate("customer-1", t0, false))
	if err != nil {
		t.Fatal(err)
	}
	minIndex := max(receipts[3].Index, shopReceipts[0].Index)

	// Every finding, one per page: the compound's own three, in log order.
	var got []*piledgerv1.Finding
	for f, err := range compound.Findings(ctx, client.FindingQuery{PageSize: 1, MinIndex: &minIndex}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f)
	}
	want := []*client.Receipt{receipts[0], receipts[1], receipts[3]}
	if len(got) != len(want) {
		t.Fatalf("%d findings, want %d: %v", len(got), len(want), got)
	}
	for i, f := range got {
		if f.GetRule() != "sensitive-without-separate-consent" || f.GetProcessor() != "compound-mgmt" ||
			f.GetEventId() != want[i].EventID || f.GetPseudonym() != want[i].Pseudonym || f.GetLogIndex() != want[i].Index ||
			f.GetSeverity() != piledgerv1.FindingSeverity_FINDING_SEVERITY_HIGH {
			t.Errorf("finding %d: %v, want one about event %s", i, f, want[i].EventID)
		}
	}

	// Breaking out of the loop stops it.
	n := 0
	for _, err := range compound.Findings(ctx, client.FindingQuery{PageSize: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		break
	}
	if n != 1 {
		t.Errorf("the loop ran %d times after break", n)
	}

	// One page, with the policy and the evaluation time.
	page, err := compound.ListFindings(ctx, client.FindingQuery{PageSize: 2}, "")
	if err != nil || len(page.GetFindings()) != 2 || page.GetNextPageToken() == "" || page.GetPolicyVersion() == "" || page.GetEvaluateTime() == nil {
		t.Fatalf("first page of 2: %v, %v", page, err)
	}
	page, err = compound.ListFindings(ctx, client.FindingQuery{PageSize: 2}, page.GetNextPageToken())
	if err != nil || len(page.GetFindings()) != 1 || page.GetNextPageToken() != "" {
		t.Errorf("second page of 2: %v, %v", page, err)
	}

	// Filters.
	count := func(q client.FindingQuery) int {
		t.Helper()
		n := 0
		for _, err := range compound.Findings(ctx, q) {
			if err != nil {
				t.Fatalf("%+v: %v", q, err)
			}
			n++
		}
		return n
	}
	for _, test := range []struct {
		name string
		q    client.FindingQuery
		want int
	}{
		{"own processor named", client.FindingQuery{Processor: "compound-mgmt"}, 3},
		{"rule", client.FindingQuery{Rule: "sensitive-without-separate-consent"}, 3},
		{"another rule", client.FindingQuery{Rule: "camera-in-prohibited-place"}, 0},
		{"high or above", client.FindingQuery{Severity: piledgerv1.FindingSeverity_FINDING_SEVERITY_HIGH}, 3},
		{"critical", client.FindingQuery{Severity: piledgerv1.FindingSeverity_FINDING_SEVERITY_CRITICAL}, 0},
		{"since the second", client.FindingQuery{Since: t0.Add(time.Minute)}, 2},
		{"until the second", client.FindingQuery{Until: t0.Add(time.Minute)}, 1},
		{"between", client.FindingQuery{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, 1},
	} {
		if got := count(test.q); got != test.want {
			t.Errorf("%s: %d findings, want %d", test.name, got, test.want)
		}
	}

	// Errors: another processor's findings, bad filters.
	_, err = compound.ListFindings(ctx, client.FindingQuery{Processor: "shop-42"}, "")
	if !errors.Is(err, client.ErrPermissionDenied) || status.Code(err) != codes.PermissionDenied {
		t.Errorf("another processor's findings: %v, want ErrPermissionDenied with PERMISSION_DENIED", err)
	}
	for _, test := range []struct {
		q     client.FindingQuery
		token string
		field string
	}{
		{client.FindingQuery{Rule: "Not A Rule"}, "", "rule"},
		{client.FindingQuery{PageSize: -1}, "", "pageSize"},
		{client.FindingQuery{Severity: 42}, "", "severity"},
		{client.FindingQuery{Since: t0, Until: t0.Add(-time.Second)}, "", "endTime"},
		{client.FindingQuery{}, "not-a-token", "pageToken"},
	} {
		_, err := compound.ListFindings(ctx, test.q, test.token)
		vs := client.FieldViolations(err)
		if status.Code(err) != codes.InvalidArgument || client.Reason(err) != api.ReasonInvalidRequest ||
			!slices.ContainsFunc(vs, func(v client.FieldViolation) bool { return v.Field == test.field }) {
			t.Errorf("%+v: %v (violations %v), want INVALID_ARGUMENT on %s", test.q, err, vs, test.field)
		}
	}
	var iterErr error
	for _, err := range compound.Findings(ctx, client.FindingQuery{Rule: "Not A Rule"}) {
		iterErr = err
	}
	if status.Code(iterErr) != codes.InvalidArgument {
		t.Errorf("the iterator's error: %v", iterErr)
	}

	// After Close.
	if err := shop.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := shop.ListFindings(ctx, client.FindingQuery{}, ""); !errors.Is(err, client.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}
