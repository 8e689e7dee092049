package ledger

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalidEvent is returned (wrapped in an *InvalidEventError) when an
	// event of a batch breaks the contract. Nothing of the batch was appended;
	// callers should fix the events named in the violations, not retry.
	ErrInvalidEvent = errors.New("ledger: invalid event")

	// ErrClosed is returned by calls made after the ledger was closed or its
	// Run loop ended.
	ErrClosed = errors.New("ledger: closed")

	// ErrUnsafeStream is returned by Open when an existing stream is
	// configured so that acknowledged events could be lost or removed
	// (limits, deletes or purges allowed, memory storage, async persistence).
	// piledger refuses to run against such a stream.
	ErrUnsafeStream = errors.New("ledger: stream configuration could lose events")

	// ErrUnavailable is returned when the log cannot be reached or did not
	// acknowledge in time. Nothing of the batch is known to be appended;
	// callers may retry with the same event ids (appends are idempotent).
	ErrUnavailable = errors.New("ledger: log unavailable")

	// ErrCorrupt is returned when a stored block or envelope cannot be
	// decoded. It means the log was altered or damaged.
	ErrCorrupt = errors.New("ledger: corrupt log entry")

	// ErrNotInLog is returned for a log index the log does not hold (yet).
	ErrNotInLog = errors.New("ledger: no such log index")
)

// FieldViolation names one invalid field of a batch and says what is wrong
// with it. Field is a path such as "events[3].recipient.country". Description
// never repeats the field's value, which may be personal data.
type FieldViolation struct {
	Field       string
	Description string
}

// InvalidEventError lists every violation found in a rejected batch.
// errors.Is(err, ErrInvalidEvent) reports true for it.
type InvalidEventError struct {
	Violations []FieldViolation
}

// Error implements error. The message lists field paths only.
func (e *InvalidEventError) Error() string {
	fields := make([]string, 0, len(e.Violations))
	for _, v := range e.Violations {
		fields = append(fields, v.Field)
	}
	return fmt.Sprintf("ledger: invalid event: %d violation(s): %s", len(e.Violations), strings.Join(fields, ", "))
}

// Is makes errors.Is(err, ErrInvalidEvent) true.
func (e *InvalidEventError) Is(target error) bool { return target == ErrInvalidEvent }
