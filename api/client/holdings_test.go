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

// phones records that the processor collected a person's phone number at
// at, to be kept for keep.
func phones(subject string, at time.Time, keep time.Duration) client.Collect {
	return client.Collect{
		Subject: subject, OccurredAt: at, System: "front-desk", Categories: []string{"phone"},
		Purpose: "contract-performance", LegalBasis: "contract-or-hr",
		Retention: &client.Retention{KeepFor: keep},
	}
}

// TestDueHoldings lists due holdings with the SDK: an emitter its own,
// through the iterator and one page, with the filters; a regulator every
// processor's, with a token and a reason; and the errors.
func TestDueHoldings(t *testing.T) {
	s := newReadStack(t, "city-clinic", "shop-42")
	ctx := t.Context()
	emitter := func(processor string) *client.Client {
		return s.dial(t, client.WithAPIKey(s.apiKeys[processor]), client.WithProcessor(processor))
	}
	clinic, shop := emitter("city-clinic"), emitter("shop-42")

	now := time.Now().Truncate(time.Millisecond)
	receipts, err := clinic.Append(ctx,
		phones("patient-1", now.Add(-48*time.Hour), 24*time.Hour),    // due a day ago
		phones("patient-2", now.Add(-40*24*time.Hour), 24*time.Hour), // overdue: past the 15 days of grace
		phones("patient-3", now.Add(-time.Hour), 48*time.Hour),       // due in 47 hours
	)
	if err != nil {
		t.Fatal(err)
	}
	shopReceipts, err := shop.Append(ctx, phones("customer-1", now.Add(-48*time.Hour), 24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	minIndex := max(receipts[2].Index, shopReceipts[0].Index)

	collect := func(c *client.Client, q client.DueQuery) []*piledgerv1.Holding {
		t.Helper()
		var out []*piledgerv1.Holding
		for h, err := range c.DueHoldings(ctx, q) {
			if err != nil {
				t.Fatalf("%+v: %v", q, err)
			}
			out = append(out, h)
		}
		return out
	}
	events := func(hs []*piledgerv1.Holding) []string {
		var ids []string
		for _, h := range hs {
			ids = append(ids, h.GetSourceEventId())
		}
		return ids
	}

	// The emitter's own due holdings, one per page, by deadline: the
	// server forces its processor.
	got := collect(clinic, client.DueQuery{PageSize: 1, MinIndex: &minIndex})
	if want := []string{receipts[1].EventID, receipts[0].EventID}; !slices.Equal(events(got), want) {
		t.Fatalf("due holdings of the clinic: events %v, want %v", events(got), want)
	}
	for i, state := range []piledgerv1.HoldingState{piledgerv1.HoldingState_HOLDING_STATE_OVERDUE, piledgerv1.HoldingState_HOLDING_STATE_DUE} {
		if h := got[i]; h.GetProcessor() != "city-clinic" || h.GetDataCategory() != "phone" || h.GetState() != state || h.GetDestroyDueTime() == nil {
			t.Errorf("holding %d: %v, want a %v phone holding of city-clinic", i, h, state)
		}
	}
	if got := collect(clinic, client.DueQuery{Processor: "city-clinic"}); len(got) != 2 {
		t.Errorf("own processor named: %d holdings, want 2", len(got))
	}
	later := now.Add(72 * time.Hour)
	if got := collect(clinic, client.DueQuery{Before: later}); len(got) != 3 {
		t.Errorf("due within 72 hours: %d holdings, want 3", len(got))
	}

	// Breaking out of the loop stops it.
	n := 0
	for _, err := range clinic.DueHoldings(ctx, client.DueQuery{PageSize: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		break
	}
	if n != 1 {
		t.Errorf("the loop ran %d times after break", n)
	}

	// One page at a time, with the effective before time.
	page, err := clinic.ListDueHoldings(ctx, client.DueQuery{Before: later, PageSize: 2}, "")
	if err != nil || len(page.GetHoldings()) != 2 || page.GetNextPageToken() == "" || page.GetEvaluateTime() == nil ||
		!page.GetBefore().AsTime().Equal(later) {
		t.Fatalf("first page of 2: %v, %v", page, err)
	}
	page, err = clinic.ListDueHoldings(ctx, client.DueQuery{Before: later, PageSize: 2}, page.GetNextPageToken())
	if err != nil || len(page.GetHoldings()) != 1 || page.GetNextPageToken() != "" {
		t.Errorf("second page of 2: %v, %v", page, err)
	}

	// Another processor's holdings are refused, typed.
	_, err = clinic.ListDueHoldings(ctx, client.DueQuery{Processor: "shop-42"}, "")
	if !errors.Is(err, client.ErrPermissionDenied) || status.Code(err) != codes.PermissionDenied || client.Reason(err) != api.ReasonPermissionDenied {
		t.Errorf("another processor's holdings: %v, want ErrPermissionDenied with PERMISSION_DENIED", err)
	}
	var iterErr error
	for _, err := range clinic.DueHoldings(ctx, client.DueQuery{Processor: "shop-42"}) {
		iterErr = err
	}
	if !errors.Is(iterErr, client.ErrPermissionDenied) {
		t.Errorf("the iterator's error: %v, want ErrPermissionDenied", iterErr)
	}

	// A bad filter.
	_, err = clinic.ListDueHoldings(ctx, client.DueQuery{PageSize: -1}, "")
	if status.Code(err) != codes.InvalidArgument || !slices.ContainsFunc(client.FieldViolations(err), func(v client.FieldViolation) bool { return v.Field == "pageSize" }) {
		t.Errorf("negative page size: %v, want INVALID_ARGUMENT on pageSize", err)
	}

	// A regulator sees every processor's, with a reason.
	regulatorToken := s.token(t, api.RoleRegulator, "inspector-12")
	regulator := s.dial(t, client.WithToken(regulatorToken), client.WithReason("retention audit 2026-03"))
	if got := collect(regulator, client.DueQuery{MinIndex: &minIndex}); len(got) != 3 {
		t.Errorf("a regulator's due holdings: %d, want 3 (of both processors)", len(got))
	}
	if got := collect(regulator, client.DueQuery{Processor: "shop-42"}); len(got) != 1 || got[0].GetSourceEventId() != shopReceipts[0].EventID {
		t.Errorf("a regulator's due holdings of shop-42: %v", events(got))
	}
	// ... and only with a reason.
	noReason := s.dial(t, client.WithToken(regulatorToken))
	_, err = noReason.ListDueHoldings(ctx, client.DueQuery{}, "")
	if status.Code(err) != codes.InvalidArgument || !slices.ContainsFunc(client.FieldViolations(err), func(v client.FieldViolation) bool { return v.Field == "x-piledger-reason" }) {
		t.Errorf("a regulator without a reason: %v, want INVALID_ARGUMENT on x-piledger-reason", err)
	}

	// A data subject may not list due holdings.
	subject := s.dial(t, client.WithToken(s.token(t, api.RoleSubject, "patient-1")))
	if _, err := subject.ListDueHoldings(ctx, client.DueQuery{}, ""); !errors.Is(err, client.ErrPermissionDenied) {
		t.Errorf("a subject: %v, want ErrPermissionDenied", err)
	}

	// After Close.
	if err := shop.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := shop.ListDueHoldings(ctx, client.DueQuery{}, ""); !errors.Is(err, client.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}
