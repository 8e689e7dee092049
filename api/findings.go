package api

import (
	"context"
	"log/slog"

	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	"github.com/piledger/piledger/projections/rules"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// findingService implements piledgerv1.FindingServiceServer on ReadModels.
// Who sees which findings is the policy table's business (authz.go): an
// emitter's request arrives here already narrowed to its own processor.
type findingService struct {
	piledgerv1.UnimplementedFindingServiceServer
	rm     ReadModels
	logger *slog.Logger
}

// ListFindings implements piledgerv1.FindingServiceServer. Every filter is
// checked before the read models are asked; a bad one is INVALID_ARGUMENT
// with a BadRequest naming it (never repeating its value).
func (s *findingService) ListFindings(ctx context.Context, req *piledgerv1.ListFindingsRequest) (*piledgerv1.ListFindingsResponse, error) {
	var v violations
	q := projections.FindingQuery{
		Rule: req.GetRule(), Processor: req.GetProcessor(), Severity: req.GetSeverity(),
		PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken(), MinIndex: req.MinIndex,
	}
	if q.Rule != "" && !rules.IsRuleName(q.Rule) {
		v.add("rule", "must be a rule name of 1-63 characters from [a-z0-9-], starting with a letter or digit")
	}
	if q.Processor != "" && !ledger.IsIdentifier(q.Processor) {
		v.add("processor", "must be an identifier of 1-128 characters from [a-z0-9._-], starting with a letter or digit")
	}
	if _, known := piledgerv1.FindingSeverity_name[int32(q.Severity)]; !known {
		v.add("severity", "must be FINDING_SEVERITY_LOW, FINDING_SEVERITY_MEDIUM, FINDING_SEVERITY_HIGH or FINDING_SEVERITY_CRITICAL (or unset)")
	}
	if t := req.GetStartTime(); t != nil {
		if t.CheckValid() != nil {
			v.add("startTime", "must be a valid timestamp")
		} else {
			q.Start = t.AsTime()
		}
	}
	if t := req.GetEndTime(); t != nil {
		if t.CheckValid() != nil {
			v.add("endTime", "must be a valid timestamp")
		} else {
			q.End = t.AsTime()
		}
	}
	if !q.Start.IsZero() && !q.End.IsZero() && q.Start.After(q.End) {
		v.add("endTime", "must not be before startTime")
	}
	v.pageSize(req.GetPageSize())
	if err := v.err(); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	resp, err := s.rm.Findings(ctx, q)
	return resp, toStatus(ctx, s.logger, err)
}
