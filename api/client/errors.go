package client

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrInvalidEvent is the error (as an *InvalidEventError, test with
	// errors.Is) of an event the server rejected as malformed. It was not
	// recorded; retrying it unchanged fails again. Fix the fields the
	// violations name.
	ErrInvalidEvent = errors.New("client: invalid event")

	// ErrUnavailable is the error of events the server did not acknowledge
	// within the retry policy (unreachable, overloaded, answers lost). Their
	// outcome is unknown: some may be recorded. Emitting the same events again
	// with the same event ids is safe — the server records an id once.
	// The last gRPC status is wrapped too (status.Code works on the error).
	ErrUnavailable = errors.New("client: piledger unavailable")

	// ErrPushback is returned under [WithPushback] when the in-flight bound
	// is reached. Nothing was sent; the caller may retry later, shed the
	// event, or apply back-pressure upstream (for example an HTTP 503 with
	// Retry-After).
	ErrPushback = errors.New("client: pushback: too many events in flight")

	// ErrClosed is returned for events emitted after [Client.Close] began.
	ErrClosed = errors.New("client: closed")

	// ErrInvalidOption wraps every error of an [Option] and of [New].
	ErrInvalidOption = errors.New("client: invalid option")

	// ErrPermissionDenied is the error of a call the server refused with
	// PERMISSION_DENIED: the caller's credentials do not allow it — the
	// wrong role (an emitter reading a data map), or another processor's
	// data (an emitter listing another processor's due holdings or
	// findings, or appending its events). Retrying with the same
	// credentials fails again. The gRPC status is wrapped too: status.Code
	// and [Reason] work on the error, and the status message says what was
	// refused.
	ErrPermissionDenied = errors.New("client: permission denied")
)

// FieldViolation names one invalid field of a rejected event and says what is
// wrong with it. Field is a lowerCamelCase JSON path ("recipient.country");
// Description is fixed English text that never repeats the field's value.
type FieldViolation struct {
	Field       string
	Description string
}

func (v FieldViolation) String() string { return v.Field + ": " + v.Description }

// InvalidEventError is the error of events the server rejected as malformed
// (gRPC INVALID_ARGUMENT with google.rpc.BadRequest details). errors.Is(err,
// ErrInvalidEvent) reports true for it. Nothing it concerns was recorded.
//
// From [Pending.Get], it concerns one event: EventID is that event's id and
// each Field is relative to the event ("recipient.country"; "" when the event
// as a whole is at fault, for example too large). From [Client.Append], it
// concerns the batch: EventID is empty and each Field is the server's path,
// whose index is the event's position in Append's arguments
// ("events[2].recipient.country", or "events" for the batch as a whole).
type InvalidEventError struct {
	EventID    string
	Violations []FieldViolation
}

// Error lists the fields at fault, never their values.
func (e *InvalidEventError) Error() string {
	fields := make([]string, 0, len(e.Violations))
	for _, v := range e.Violations {
		f := v.Field
		if f == "" {
			f = "(event)"
		}
		fields = append(fields, f)
	}
	return fmt.Sprintf("client: invalid event: %d violation(s): %s", len(e.Violations), strings.Join(fields, ", "))
}

// Is makes errors.Is(err, ErrInvalidEvent) true.
func (e *InvalidEventError) Is(target error) bool { return target == ErrInvalidEvent }

// FieldViolations returns the field violations an error carries: those of an
// *InvalidEventError in its chain, or else the google.rpc.BadRequest details
// of a gRPC status error (as returned by a raw piledgerv1 client), with the
// server's paths. It returns nil when err carries none.
func FieldViolations(err error) []FieldViolation {
	var ie *InvalidEventError
	if errors.As(err, &ie) {
		return ie.Violations
	}
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return nil
	}
	return badRequestViolations(st)
}

// Reason returns the google.rpc.ErrorInfo reason of the gRPC status in err's
// chain ("INVALID_EVENT", "LEDGER_UNAVAILABLE", ...), or "" when there is
// none. Reasons are part of piledger's API: callers may switch on them.
func Reason(err error) string {
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// badRequestViolations unpacks every google.rpc.BadRequest detail of st.
func badRequestViolations(st *status.Status) []FieldViolation {
	var out []FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return out
}

// eventPath matches a server violation path naming one event of a batch.
var eventPath = regexp.MustCompile(`^events\[(\d+)\](?:\.(.*))?$`)

// splitViolations sorts the violations of a rejected batch of n events: per
// event (paths made relative to the event), and those about the batch as a
// whole (or naming no event of it).
func splitViolations(vs []FieldViolation, n int) (perEvent map[int][]FieldViolation, batch []FieldViolation) {
	for _, v := range vs {
		m := eventPath.FindStringSubmatch(v.Field)
		if m == nil {
			batch = append(batch, v)
			continue
		}
		i, err := strconv.Atoi(m[1])
		if err != nil || i >= n {
			batch = append(batch, v)
			continue
		}
		if perEvent == nil {
			perEvent = make(map[int][]FieldViolation)
		}
		perEvent[i] = append(perEvent[i], FieldViolation{Field: m[2], Description: v.Description})
	}
	return perEvent, batch
}

// callError wraps the final (not retried) failure of the call op: with
// ErrPermissionDenied too when the server refused it.
func callError(op string, err error) error {
	if status.Code(err) == codes.PermissionDenied {
		return fmt.Errorf("%w: %s: %w", ErrPermissionDenied, op, err)
	}
	return fmt.Errorf("client: %s: %w", op, err)
}

// unavailable wraps the last failure of a call given up under the retry
// policy.
func unavailable(err error) error {
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
