package client_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/api/client"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestDataMap reads data maps with the SDK: a regulator by raw reference
// with a token and a reason (which comes back intact in the access event
// the server records), the data subject their own, and the refusals.
func TestDataMap(t *testing.T) {
	s := newReadStack(t, "city-clinic")
	ctx := t.Context()
	const ref = "patient-7" // the person's raw reference in the clinic's systems
	clinic := s.dial(t, client.WithAPIKey(s.apiKeys["city-clinic"]), client.WithProcessor("city-clinic"))
	receipts, err := clinic.Append(ctx, client.Collect{
		Subject: ref, OccurredAt: time.Now().Add(-time.Hour), System: "front-desk", Categories: []string{"name", "phone"},
		Purpose: "contract-performance", LegalBasis: "contract-or-hr",
		Retention: &client.Retention{KeepFor: 24 * time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := receipts[0]
	checkMap := func(who string, dm *piledgerv1.DataMap) {
		t.Helper()
		if dm.GetPseudonym() != r.Pseudonym || dm.GetName() != "subjects/"+r.Pseudonym+"/datamap" || len(dm.GetHoldings()) != 2 {
			t.Fatalf("%s: data map %v, want the 2 holdings of pseudonym %s", who, dm, r.Pseudonym)
		}
		for _, h := range dm.GetHoldings() {
			if h.GetProcessor() != "city-clinic" || h.GetSourceEventId() != r.EventID || h.GetState() != piledgerv1.HoldingState_HOLDING_STATE_HELD {
				t.Errorf("%s: holding %v, want city-clinic's, held, from event %s", who, h, r.EventID)
			}
		}
	}

	// A regulator, by reference, with a reason in any script: it is
	// percent-encoded on the wire.
	const reason = "case 2026/17: complaint 投诉 über 100% of retention"
	regulatorToken := s.token(t, api.RoleRegulator, "inspector-12")
	regulator := s.dial(t, client.WithToken(regulatorToken), client.WithReason(reason))
	dm, err := regulator.DataMap(ctx, ref, client.MinIndex(r.Index))
	if err != nil {
		t.Fatal(err)
	}
	checkMap("regulator", dm)

	// The data subject, their own, with a subject token.
	subjectToken := s.token(t, api.RoleSubject, ref)
	subject := s.dial(t, client.WithToken(subjectToken))
	mine, err := subject.MyDataMap(ctx, client.MinIndex(r.Index), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkMap("subject", mine)

	// The regulator's read is in the subject's timeline, with the reason
	// intact.
	if !accessRecorded(t, s.addr, subjectToken, dm.GetLogSize(), reason) {
		t.Errorf("no access event with the reason %q in the subject's timeline", reason)
	}

	// An admin reads it too, with a reason.
	admin := s.dial(t, client.WithToken(s.token(t, api.RoleAdmin, "ops-1")), client.WithReason("erasure request 88"))
	if dm, err := admin.DataMap(ctx, ref); err != nil {
		t.Error(err)
	} else {
		checkMap("admin", dm)
	}

	// An emitter may not read a data map; the error does not show the
	// reference.
	_, err = clinic.DataMap(ctx, ref)
	if !errors.Is(err, client.ErrPermissionDenied) || status.Code(err) != codes.PermissionDenied || client.Reason(err) != api.ReasonPermissionDenied {
		t.Errorf("an emitter's DataMap: %v, want ErrPermissionDenied with PERMISSION_DENIED", err)
	}
	if err != nil && strings.Contains(err.Error(), ref) {
		t.Errorf("the error shows the subject reference: %v", err)
	}
	if _, err := clinic.MyDataMap(ctx); !errors.Is(err, client.ErrPermissionDenied) {
		t.Errorf("an emitter's MyDataMap: %v, want ErrPermissionDenied", err)
	}
	// Subjects do not resolve references: they read subjects/me.
	if _, err := subject.DataMap(ctx, ref); !errors.Is(err, client.ErrPermissionDenied) {
		t.Errorf("a subject's DataMap: %v, want ErrPermissionDenied", err)
	}

	// A regulator without a reason, or without a "me".
	noReason := s.dial(t, client.WithToken(regulatorToken))
	_, err = noReason.DataMap(ctx, ref)
	if status.Code(err) != codes.InvalidArgument || !slices.ContainsFunc(client.FieldViolations(err), func(v client.FieldViolation) bool { return v.Field == "x-piledger-reason" }) {
		t.Errorf("a regulator without a reason: %v, want INVALID_ARGUMENT on x-piledger-reason", err)
	}
	if _, err := regulator.MyDataMap(ctx); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a regulator's MyDataMap: %v, want INVALID_ARGUMENT", err)
	}

	// Nobody of that reference; no reference at all.
	if _, err := regulator.DataMap(ctx, "patient-unknown"); status.Code(err) != codes.NotFound {
		t.Errorf("an unknown subject: %v, want NOT_FOUND", err)
	}
	_, err = regulator.DataMap(ctx, "")
	if status.Code(err) != codes.InvalidArgument || !slices.ContainsFunc(client.FieldViolations(err), func(v client.FieldViolation) bool { return v.Field == "subjectRef" }) {
		t.Errorf("an empty reference: %v, want INVALID_ARGUMENT on subjectRef", err)
	}

	// After Close.
	if err := regulator.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := regulator.DataMap(ctx, ref); !errors.Is(err, client.ErrClosed) {
		t.Errorf("DataMap after Close: %v, want ErrClosed", err)
	}
	if _, err := regulator.MyDataMap(ctx); !errors.Is(err, client.ErrClosed) {
		t.Errorf("MyDataMap after Close: %v, want ErrClosed", err)
	}
}

// accessRecorded reports whether the timeline of the subject whose token is
// subjectToken, read once the log entry at index minIndex is applied, holds
// an access event with the given reason.
func accessRecorded(t *testing.T, addr, subjectToken string, minIndex uint64, reason string) bool {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+subjectToken)
	resp, err := piledgerv1.NewSubjectServiceClient(conn).ListSubjectEvents(ctx, &piledgerv1.ListSubjectEventsRequest{Parent: "subjects/me", MinIndex: &minIndex})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.GetSubjectEvents() {
		if ev := e.GetEvent(); ev.GetOperation() == piledgerv1.Operation_OPERATION_ACCESS && ev.GetAccess().GetReason() == reason {
			return true
		}
	}
	return false
}
