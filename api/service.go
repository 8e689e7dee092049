package api

import (
	"context"
	"log/slog"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Log is what the api needs of the ledger. *ledger.Ledger implements it.
//
// Implementations MUST be safe for concurrent use. Errors SHOULD be the
// ledger's sentinels (ledger.ErrInvalidEvent as *ledger.InvalidEventError,
// ledger.ErrUnavailable, ledger.ErrClosed, ledger.ErrCorrupt) or context
// errors; anything else is reported to clients as an internal error.
type Log interface {
	// Append records events atomically and returns one receipt per event, in
	// order, once they are durably stored.
	Append(ctx context.Context, events []*piledgerv1.Event) ([]*piledgerv1.Receipt, error)
	// Entries calls fn for each log entry in order from index start, at most
	// limit entries (0 = up to the current end), and stops at fn's first error.
	Entries(ctx context.Context, start, limit uint64, fn func(*piledgerv1.LogEntry) error) error
}

// ledgerService implements piledgerv1.LedgerServiceServer on a Log.
type ledgerService struct {
	piledgerv1.UnimplementedLedgerServiceServer
	log    Log
	logger *slog.Logger
}

// AppendEvents implements piledgerv1.LedgerServiceServer. Validation is the
// ledger's: an empty batch, a batch over its limit and every malformed event
// come back as INVALID_ARGUMENT with field violations.
func (s *ledgerService) AppendEvents(ctx context.Context, req *piledgerv1.AppendEventsRequest) (*piledgerv1.AppendEventsResponse, error) {
	receipts, err := s.log.Append(ctx, req.GetEvents())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &piledgerv1.AppendEventsResponse{Receipts: receipts}, nil
}

// ListLogEntries implements piledgerv1.LedgerServiceServer.
func (s *ledgerService) ListLogEntries(req *piledgerv1.ListLogEntriesRequest, stream piledgerv1.LedgerService_ListLogEntriesServer) error {
	ctx := stream.Context()
	err := s.log.Entries(ctx, req.GetStart(), req.GetLimit(), stream.Send)
	return toStatus(ctx, s.logger, err)
}
