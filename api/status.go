package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/piledger/piledger/ledger"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error piledger
// returns.
const ErrorDomain = "piledger.dev"

// The google.rpc.ErrorInfo reasons piledger returns. They are part of the API:
// clients may switch on them.
const (
	// ReasonInvalidEvent: an event of the batch breaks the contract; the
	// BadRequest detail names each field as "events[i].path". Nothing of the
	// batch was appended. Fix the events; do not retry as is.
	ReasonInvalidEvent = "INVALID_EVENT"
	// ReasonInvalidRequest: the request itself is malformed (an empty batch,
	// a body that is not JSON for the request message, an unknown JSON field,
	// a bad query parameter); the BadRequest detail says where.
	ReasonInvalidRequest = "INVALID_REQUEST"
	// ReasonRequestTooLarge: the HTTP body is larger than the server accepts;
	// metadata "limit_bytes" holds the limit. Split the batch.
	ReasonRequestTooLarge = "REQUEST_TOO_LARGE"
	// ReasonUnavailable: the log cannot take or serve requests right now
	// (unreachable, or the server is shutting down). Retry after the
	// RetryInfo delay with the same event ids: appends are idempotent.
	ReasonUnavailable = "LEDGER_UNAVAILABLE"
	// ReasonCorrupt: a stored log entry cannot be decoded. The log was altered
	// or damaged; operators must investigate. Retrying does not help.
	ReasonCorrupt = "LOG_CORRUPT"
	// ReasonCanceled: the caller canceled the call.
	ReasonCanceled = "CANCELED"
	// ReasonDeadlineExceeded: the caller's deadline passed before the call
	// completed. An append may or may not have been recorded; retry with the
	// same event ids.
	ReasonDeadlineExceeded = "DEADLINE_EXCEEDED"
	// ReasonInternal: a server fault. The cause is in the server log only.
	ReasonInternal = "INTERNAL"
)

// retryDelay is the RetryInfo delay sent with UNAVAILABLE.
const retryDelay = time.Second

// requestError is a request rejected by the api layer itself, before it reached
// the ledger. Its violations follow the same rules as ledger.FieldViolation:
// field paths, never field values.
type requestError struct {
	violations []ledger.FieldViolation
}

func (e *requestError) Error() string {
	return "api: invalid request: " + strconv.Itoa(len(e.violations)) + " violation(s)"
}

// invalidRequest returns a *requestError with a single violation.
func invalidRequest(field, description string) error {
	return &requestError{violations: []ledger.FieldViolation{{Field: field, Description: description}}}
}

// toStatus is the one place where errors become gRPC statuses. It returns nil
// for nil and a status error otherwise, always with a google.rpc.ErrorInfo
// detail. Messages are fixed English text and details carry field paths only,
// so no request value and no internal detail reaches the client. Errors the
// client cannot act on are logged with logger, including the original error.
//
// A failure while ctx is done (for example a stream send to a client that went
// away) is reported as the caller's cancellation or deadline.
func toStatus(ctx context.Context, logger *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var (
		invalidEvent *ledger.InvalidEventError
		invalidReq   *requestError
		tooLarge     *http.MaxBytesError
	)
	switch {
	case errors.As(err, &invalidEvent):
		return newStatus(codes.InvalidArgument, "invalid event", ReasonInvalidEvent, nil, badRequest(invalidEvent.Violations))
	case errors.Is(err, ledger.ErrInvalidEvent):
		return newStatus(codes.InvalidArgument, "invalid event", ReasonInvalidEvent, nil)
	case errors.As(err, &invalidReq):
		return newStatus(codes.InvalidArgument, "invalid request", ReasonInvalidRequest, nil, badRequest(invalidReq.violations))
	case errors.As(err, &tooLarge):
		return newStatus(codes.ResourceExhausted, "request body too large", ReasonRequestTooLarge,
			map[string]string{"limit_bytes": strconv.FormatInt(tooLarge.Limit, 10)})
	case errors.Is(err, ledger.ErrCorrupt):
		logger.ErrorContext(ctx, "corrupt log entry", slog.Any("error", err))
		return newStatus(codes.DataLoss, "corrupt log entry", ReasonCorrupt, nil)
	case errors.Is(err, ledger.ErrUnavailable), errors.Is(err, ledger.ErrClosed):
		logger.WarnContext(ctx, "ledger unavailable", slog.Any("error", err))
		return newStatus(codes.Unavailable, "ledger unavailable; retry later", ReasonUnavailable, nil,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(retryDelay)})
	case errors.Is(err, context.Canceled), errors.Is(ctx.Err(), context.Canceled):
		return newStatus(codes.Canceled, "canceled", ReasonCanceled, nil)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(ctx.Err(), context.DeadlineExceeded):
		return newStatus(codes.DeadlineExceeded, "deadline exceeded", ReasonDeadlineExceeded, nil)
	default:
		logger.ErrorContext(ctx, "internal error", slog.Any("error", err))
		return newStatus(codes.Internal, "internal error", ReasonInternal, nil)
	}
}

// badRequest converts field violations into a google.rpc.BadRequest.
func badRequest(violations []ledger.FieldViolation) *errdetails.BadRequest {
	br := &errdetails.BadRequest{FieldViolations: make([]*errdetails.BadRequest_FieldViolation, 0, len(violations))}
	for _, v := range violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       v.Field,
			Description: v.Description,
		})
	}
	return br
}

// newStatus builds a status error with an ErrorInfo detail followed by the
// given details.
func newStatus(code codes.Code, msg, reason string, metadata map[string]string, details ...protoadapt.MessageV1) error {
	st := status.New(code, msg)
	all := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: metadata}}, details...)
	withDetails, err := st.WithDetails(all...)
	if err != nil {
		// Only possible for code OK, which is never passed here.
		return st.Err()
	}
	return withDetails.Err()
}
