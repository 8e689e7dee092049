package projections

import (
	"context"
	"errors"
	"time"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// FindingQuery selects findings. Every filter is optional.
type FindingQuery struct {
	// Rule keeps only findings of this rule.
	Rule string
	// Processor keeps only findings about this processor.
	Processor string
	// Severity keeps only findings of at least this severity.
	Severity piledgerv1.FindingSeverity
	// Start and End keep only findings whose event happened in [Start, End);
	// a zero time is no bound.
	Start, End time.Time
	// PageSize: 0 means DefaultPageSize; above MaxPageSize is coerced.
	PageSize int
	// PageToken continues a previous answer; empty for the first page.
	PageToken string
	// MinIndex, when set, makes the query wait until the log entry at this
	// index is applied (read your writes).
	MinIndex *uint64
}

// Findings lists findings: see piledgerv1.FindingService.
//
// It returns ErrInvalidPageToken for a token issued for other parameters.
func (s *Store) Findings(ctx context.Context, q FindingQuery) (*piledgerv1.ListFindingsResponse, error) {
	return nil, errors.New("projections: findings not built yet")
}
