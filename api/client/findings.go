package client

import (
	"context"
	"iter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// FindingQuery selects rule findings: where recorded processing broke a
// rule of the server's policy (see piledgerv1.FindingService). Every field
// is optional; the zero value selects every finding the caller may see.
type FindingQuery struct {
	// Rule keeps only the findings of this rule
	// ("sensitive-without-separate-consent").
	Rule string
	// Processor keeps only the findings about this processor. An emitter
	// sees only its own: empty means its own, another processor is
	// refused (PERMISSION_DENIED).
	Processor string
	// Severity keeps only the findings of at least this severity;
	// FINDING_SEVERITY_UNSPECIFIED keeps all.
	Severity piledgerv1.FindingSeverity
	// Since and Until keep only the findings whose event happened in
	// [Since, Until); a zero time is no bound.
	Since, Until time.Time
	// PageSize is how many findings one call asks for: 0 is the server's
	// default (50), above 1000 is taken as 1000, negative is refused.
	PageSize int
	// MinIndex, when set, makes the server answer only once its read models
	// include the log entry at this index (a Receipt's Index): read your
	// writes.
	MinIndex *uint64
}

func (q FindingQuery) request(pageToken string) *piledgerv1.ListFindingsRequest {
	req := &piledgerv1.ListFindingsRequest{
		Rule: q.Rule, Processor: q.Processor, Severity: q.Severity,
		PageSize: pageSize(q.PageSize), PageToken: pageToken, MinIndex: q.MinIndex,
	}
	if !q.Since.IsZero() {
		req.StartTime = timestamppb.New(q.Since)
	}
	if !q.Until.IsZero() {
		req.EndTime = timestamppb.New(q.Until)
	}
	return req
}

// Findings returns the findings q selects, in the server's order (stored
// findings in log order, then those computed at query time on holdings past
// their deadline), reading one page after the other as the loop asks for
// more. Every page of one iteration is evaluated at the time of the first.
//
// A failure ends the iteration with a nil finding and the error, which is
// that of [Client.ListFindings]. Breaking out of the loop stops reading.
//
//	for f, err := range c.Findings(ctx, client.FindingQuery{Rule: "sensitive-without-separate-consent"}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(f.GetLogIndex(), f.GetRule())
//	}
func (c *Client) Findings(ctx context.Context, q FindingQuery) iter.Seq2[*piledgerv1.Finding, error] {
	return pages(func(pageToken string) (*piledgerv1.ListFindingsResponse, error) {
		return c.ListFindings(ctx, q, pageToken)
	}, (*piledgerv1.ListFindingsResponse).GetFindings)
}

// ListFindings returns one page of the findings q selects: the first when
// pageToken is empty, else the one the previous page's NextPageToken names
// (q must be the same, PageSize aside). The page also says which policy
// raised the findings and when computed findings were evaluated.
//
// Failed calls are retried under the retry policy while ctx allows, as
// appends are. Errors: ErrPermissionDenied (wrapping the status) for a
// processor the caller may not see; gRPC status errors (status.Code works on
// them) — INVALID_ARGUMENT with the fields at fault in [FieldViolations] for
// a bad filter or page token, or for a regulator or admin without
// [WithReason]; ErrUnavailable (wrapping the last status) when the retry
// policy gave up; ctx.Err() (wrapped) when ctx ended first; ErrClosed after
// Close.
func (c *Client) ListFindings(ctx context.Context, q FindingQuery, pageToken string) (*piledgerv1.ListFindingsResponse, error) {
	return listPage(ctx, c, "list findings", piledgerv1.NewFindingServiceClient(c.conn).ListFindings, q.request(pageToken))
}
