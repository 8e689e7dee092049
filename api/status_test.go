package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	spb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

func TestToStatus(t *testing.T) {
	info := func(reason string, md map[string]string) *errdetails.ErrorInfo {
		return &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: md}
	}
	violations := []ledger.FieldViolation{
		{Field: "events[0].eventId", Description: "must be a UUIDv7"},
		{Field: "events[2].recipient.country", Description: "required for transfer abroad"},
	}
	wantViolations := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: "events[0].eventId", Description: "must be a UUIDv7"},
		{Field: "events[2].recipient.country", Description: "required for transfer abroad"},
	}}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, test := range []struct {
		name    string
		ctx     context.Context
		err     error
		code    codes.Code
		msg     string
		details []protoadapt.MessageV1
		logged  bool // the error must be logged
	}{
		{
			name: "invalid event",
			err:  fmt.Errorf("append: %w", &ledger.InvalidEventError{Violations: violations}),
			code: codes.InvalidArgument, msg: "invalid event",
			details: []protoadapt.MessageV1{info(ReasonInvalidEvent, nil), wantViolations},
		},
		{
			name: "bare ErrInvalidEvent",
			err:  ledger.ErrInvalidEvent,
			code: codes.InvalidArgument, msg: "invalid event",
			details: []protoadapt.MessageV1{info(ReasonInvalidEvent, nil)},
		},
		{
			name: "invalid request",
			err:  invalidRequest("events", "at least one event is required"),
			code: codes.InvalidArgument, msg: "invalid request",
			details: []protoadapt.MessageV1{info(ReasonInvalidRequest, nil), &errdetails.BadRequest{
				FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "events", Description: "at least one event is required"}},
			}},
		},
		{
			name: "body too large",
			err:  fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 1024}),
			code: codes.ResourceExhausted, msg: "request body too large",
			details: []protoadapt.MessageV1{info(ReasonRequestTooLarge, map[string]string{"limit_bytes": "1024"})},
		},
		{
			name: "unavailable",
			err:  fmt.Errorf("publish: %w", ledger.ErrUnavailable),
			code: codes.Unavailable, msg: "ledger unavailable; retry later",
			details: []protoadapt.MessageV1{info(ReasonUnavailable, nil), &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}},
			logged:  true,
		},
		{
			name: "closed",
			err:  ledger.ErrClosed,
			code: codes.Unavailable, msg: "ledger unavailable; retry later",
			details: []protoadapt.MessageV1{info(ReasonUnavailable, nil), &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}},
			logged:  true,
		},
		{
			name: "unavailable wins over deadline",
			err:  fmt.Errorf("publish: %w: %w", ledger.ErrUnavailable, context.DeadlineExceeded),
			code: codes.Unavailable, msg: "ledger unavailable; retry later",
			details: []protoadapt.MessageV1{info(ReasonUnavailable, nil), &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}},
			logged:  true,
		},
		{
			name: "corrupt",
			err:  fmt.Errorf("block 7: %w", ledger.ErrCorrupt),
			code: codes.DataLoss, msg: "corrupt log entry",
			details: []protoadapt.MessageV1{info(ReasonCorrupt, nil)},
			logged:  true,
		},
		{
			name: "canceled",
			err:  fmt.Errorf("wait: %w", context.Canceled),
			code: codes.Canceled, msg: "canceled",
			details: []protoadapt.MessageV1{info(ReasonCanceled, nil)},
		},
		{
			name: "deadline",
			err:  fmt.Errorf("wait: %w", context.DeadlineExceeded),
			code: codes.DeadlineExceeded, msg: "deadline exceeded",
			details: []protoadapt.MessageV1{info(ReasonDeadlineExceeded, nil)},
		},
		{
			name: "failure after the caller left",
			ctx:  canceled,
			err:  errors.New("transport is closing"),
			code: codes.Canceled, msg: "canceled",
			details: []protoadapt.MessageV1{info(ReasonCanceled, nil)},
		},
		{
			name: "anything else",
			err:  errors.New("pebble: disk full at /secret/path for subject 4711"),
			code: codes.Internal, msg: "internal error",
			details: []protoadapt.MessageV1{info(ReasonInternal, nil)},
			logged:  true,
		},
		{
			name: "unsafe stream is internal",
			err:  ledger.ErrUnsafeStream,
			code: codes.Internal, msg: "internal error",
			details: []protoadapt.MessageV1{info(ReasonInternal, nil)},
			logged:  true,
		},
	} {
		t.Run(test.name, func(t *testing.T) {
			ctx := test.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))

			got := toStatus(ctx, logger, test.err)

			st, ok := status.FromError(got)
			if !ok {
				t.Fatalf("toStatus returned %T %v, want a status error", got, got)
			}
			want := &spb.Status{Code: int32(test.code), Message: test.msg}
			for _, d := range test.details {
				a, err := anypb.New(protoadapt.MessageV2Of(d))
				if err != nil {
					t.Fatal(err)
				}
				want.Details = append(want.Details, a)
			}
			if !proto.Equal(st.Proto(), want) {
				t.Errorf("status mismatch\n got: %s\nwant: %s", protojson.Format(st.Proto()), protojson.Format(want))
			}
			if strings.Contains(st.Message(), "4711") || strings.Contains(st.Message(), "/secret") {
				t.Errorf("message %q leaks the error text", st.Message())
			}
			if test.logged && !strings.Contains(logs.String(), test.err.Error()) {
				t.Errorf("log %q does not hold the original error %q", logs.String(), test.err)
			}
			if !test.logged && logs.Len() > 0 {
				t.Errorf("client error was logged: %q", logs.String())
			}
		})
	}
}

func TestToStatusNil(t *testing.T) {
	if err := toStatus(t.Context(), slog.New(slog.DiscardHandler), nil); err != nil {
		t.Errorf("toStatus(nil) = %v, want nil", err)
	}
}

func TestBodyError(t *testing.T) {
	// Each input is decoded by strictJSON into an AppendEventsRequest; the
	// description must name the problem and never quote a value.
	for _, test := range []struct {
		name, body, want string
	}{
		{"syntax", `{"events": [}`, "request body: not valid JSON (at byte 13)"},
		{"truncated", `{"events": [`, "request body: JSON ends unexpectedly"},
		{"unknown field", `{"evnts": []}`, `request body: line 1, column 2: unknown field "evnts"`},
		{"nested unknown field", `{"events": [{"subjectReference": "ID 110101199003077777"}]}`, `request body: line 1, column 14: unknown field "subjectReference"`},
		{"duplicate field", `{"events": [], "events": []}`, `request body: line 1, column 16: duplicate field "events"`},
		{"string for number", `{"events": [{"subjectRef": 110101199003077777}]}`, `request body: line 1, column 28: invalid value for field "subjectRef"`},
		{"bad enum", `{"events": [{"operation": "STEAL_ID_110101199003077777"}]}`, `request body: line 1, column 27: invalid value for field "operation"`},
		{"bad timestamp", `{"events": [{"occurredAt": "110101199003077777"}]}`, `request body: line 1, column 28: invalid google.protobuf.Timestamp value`},
		{"trailing data", `{"events": []} {"x": "110101199003077777"}`, "request body: unexpected data after the JSON value"},
		{"not an object", `["110101199003077777"]`, "request body: line 1, column 1: invalid JSON for this request message"},
		{"unknown field with odd name", `{"ID 110101199003077777": 1}`, "request body: line 1, column 2: invalid JSON for this request message"},
	} {
		t.Run(test.name, func(t *testing.T) {
			var req piledgerv1.AppendEventsRequest
			err := newStrictJSON().NewDecoder(strings.NewReader(test.body)).Decode(&req)
			if err == nil {
				t.Fatalf("Decode(%s) succeeded", test.body)
			}
			if err.Error() != test.want {
				t.Errorf("Decode(%s) error\n got: %s\nwant: %s", test.body, err, test.want)
			}
			if strings.Contains(err.Error(), "110101199003077777") {
				t.Errorf("error %q quotes a request value", err)
			}
		})
	}
}

func TestStrictJSONDecodesValidBodies(t *testing.T) {
	for _, body := range []string{
		`{}`,
		`{"events": [{"eventId": "0190d6a2-7f3e-7000-8000-000000000000", "operation": "OPERATION_COLLECT"}]}` + "\n\t ",
	} {
		var req piledgerv1.AppendEventsRequest
		if err := newStrictJSON().NewDecoder(strings.NewReader(body)).Decode(&req); err != nil {
			t.Errorf("Decode(%q) = %v", body, err)
		}
	}
	var req piledgerv1.AppendEventsRequest
	if err := newStrictJSON().NewDecoder(strings.NewReader("")).Decode(&req); !errors.Is(err, io.EOF) {
		t.Errorf("Decode of an empty body = %v, want io.EOF", err)
	}
}

func TestGatewayRequestError(t *testing.T) {
	for _, test := range []struct {
		msg       string
		field     string
		wantInMsg string
	}{
		{bodyErrorPrefix + `line 1, column 2: unknown field "evnts"`, "body", `unknown field "evnts"`},
		{`parsing field "start": strconv.ParseUint: parsing "110101199003077777x": invalid syntax`, "start", "invalid value"},
		{`too many values for field "limit": 110101199003077777, 2`, "limit", "invalid value"},
		{`parsing field "page_size": strconv.ParseInt: parsing "110101199003077777x": invalid syntax`, "pageSize", "invalid value"},
		{`invalid grpc-timeout: 110101199003077777x`, "", "invalid"},
	} {
		var re *requestError
		if !errors.As(gatewayRequestError(test.msg), &re) || len(re.violations) != 1 {
			t.Fatalf("gatewayRequestError(%q) is not a single violation", test.msg)
		}
		v := re.violations[0]
		if v.Field != test.field || !strings.Contains(v.Description, test.wantInMsg) || strings.Contains(v.Description, "110101199003077777") {
			t.Errorf("gatewayRequestError(%q) = %+v, want field %q, description containing %q and no value", test.msg, v, test.field, test.wantInMsg)
		}
	}
}
