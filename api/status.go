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
	"github.com/piledger/piledger/ledger/transparency"
	"github.com/piledger/piledger/projections"
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
	// ReasonCorrupt: a stored log entry (or read-model row) cannot be decoded.
	// The log (or the read models) were altered or damaged; operators must
	// investigate. Retrying does not help.
	ReasonCorrupt = "LOG_CORRUPT"
	// ReasonCanceled: the caller canceled the call.
	ReasonCanceled = "CANCELED"
	// ReasonDeadlineExceeded: the caller's deadline passed before the call
	// completed. An append may or may not have been recorded; retry with the
	// same event ids.
	ReasonDeadlineExceeded = "DEADLINE_EXCEEDED"
	// ReasonInternal: a server fault. The cause is in the server log only.
	ReasonInternal = "INTERNAL"
	// ReasonNotFound: the read models hold nothing under the name asked for
	// (for a subject: no event of the subject was applied yet; pass the
	// append's receipt index as minIndex to wait for it).
	ReasonNotFound = "NOT_FOUND"
	// ReasonReadModelsBehind: the read models did not reach the minIndex the
	// request asked for within the server's wait limit. Retry after the
	// RetryInfo delay.
	ReasonReadModelsBehind = "READ_MODELS_BEHIND"
	// ReasonReadModelsUnavailable: the read models stopped following the log
	// (the cause is in the server log); operators must act.
	ReasonReadModelsUnavailable = "READ_MODELS_UNAVAILABLE"
	// ReasonBeyondCheckpoint: a proof request reaches past the latest signed
	// checkpoint (or asks for an event no checkpoint covers yet); the
	// BadRequest detail names the field. Retry after the RetryInfo delay: a
	// checkpoint covers new events within about a second.
	ReasonBeyondCheckpoint = "BEYOND_CHECKPOINT"
	// ReasonCheckpointNotFound: no checkpoint was signed yet, or none of the
	// requested tree size.
	ReasonCheckpointNotFound = "CHECKPOINT_NOT_FOUND"
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
		proofRange   *transparency.RangeError
	)
	var (
		authErr     *authError
		permErr     *permissionError
		rateLimited *rateLimitError
	)
	switch {
	case errors.As(err, &authErr):
		return newStatus(codes.Unauthenticated, "unauthenticated: missing or invalid credentials", ReasonUnauthenticated, nil)
	case errors.As(err, &permErr):
		msg, md := "permission denied", map[string]string(nil)
		if permErr.field != "" {
			msg, md = "permission denied: "+permErr.field+" "+permErr.description, map[string]string{"field": permErr.field}
		}
		return newStatus(codes.PermissionDenied, msg, ReasonPermissionDenied, md)
	case errors.As(err, &rateLimited):
		return newStatus(codes.ResourceExhausted, "rate limit exceeded; retry later", ReasonRateLimited, nil,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(rateLimited.retryAfter)})
	case errors.As(err, &invalidEvent):
		return newStatus(codes.InvalidArgument, "invalid event", ReasonInvalidEvent, nil, badRequest(invalidEvent.Violations))
	case errors.Is(err, ledger.ErrInvalidEvent):
		return newStatus(codes.InvalidArgument, "invalid event", ReasonInvalidEvent, nil)
	case errors.As(err, &invalidReq):
		return newStatus(codes.InvalidArgument, "invalid request", ReasonInvalidRequest, nil, badRequest(invalidReq.violations))
	case errors.As(err, &proofRange) && errors.Is(err, transparency.ErrBeyondCheckpoint):
		return newStatus(codes.OutOfRange, "beyond the latest signed checkpoint", ReasonBeyondCheckpoint, nil,
			badRequest([]ledger.FieldViolation{{Field: proofRange.Field, Description: proofRange.Description}}),
			&errdetails.RetryInfo{RetryDelay: durationpb.New(retryDelay)})
	case errors.As(err, &proofRange):
		return newStatus(codes.InvalidArgument, "invalid request", ReasonInvalidRequest, nil,
			badRequest([]ledger.FieldViolation{{Field: proofRange.Field, Description: proofRange.Description}}))
	case errors.Is(err, transparency.ErrCheckpointNotFound):
		return newStatus(codes.NotFound, "no such checkpoint", ReasonCheckpointNotFound, nil)
	case errors.Is(err, transparency.ErrInconsistent):
		logger.ErrorContext(ctx, "log inconsistent with its signed checkpoints", slog.Any("error", err))
		return newStatus(codes.DataLoss, "the log disagrees with its signed checkpoints", ReasonCorrupt, nil)
	case errors.Is(err, projections.ErrInvalidPageToken):
		return newStatus(codes.InvalidArgument, "invalid request", ReasonInvalidRequest, nil, badRequest([]ledger.FieldViolation{{
			Field: "pageToken", Description: "was not issued for this request (its other parameters changed) or was altered; start again from the first page",
		}}))
	case errors.Is(err, projections.ErrNotFound):
		return newStatus(codes.NotFound, "not found", ReasonNotFound, nil)
	case errors.Is(err, projections.ErrBehind):
		return newStatus(codes.Unavailable, "read models have not reached minIndex yet; retry later", ReasonReadModelsBehind, nil,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(retryDelay)})
	case errors.Is(err, projections.ErrStopped):
		logger.ErrorContext(ctx, "read models stopped", slog.Any("error", err))
		return newStatus(codes.Unavailable, "read models unavailable", ReasonReadModelsUnavailable, nil)
	case errors.Is(err, projections.ErrCorrupt):
		logger.ErrorContext(ctx, "corrupt read model", slog.Any("error", err))
		return newStatus(codes.DataLoss, "corrupt read model", ReasonCorrupt, nil)
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
