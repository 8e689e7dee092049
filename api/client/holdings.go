package client

import (
	"context"
	"iter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// DueQuery selects holdings due for destruction: data whose destruction
// deadline has come (or comes by Before) and that no recorded destruction
// ended (see piledgerv1.HoldingService). Every field is optional; the zero
// value selects the holdings due now that the caller may see.
type DueQuery struct {
	// Before keeps the holdings whose destruction deadline is at or before
	// this time; the zero time is now (due and overdue holdings). A later
	// time also lists the holdings that will be due by then.
	Before time.Time
	// Processor keeps only the holdings of this processor. An emitter sees
	// only its own — the server enforces it: empty means its own, another
	// processor is refused (ErrPermissionDenied). For a regulator or an
	// admin, empty means every processor.
	Processor string
	// PageSize is how many holdings one call asks for: 0 is the server's
	// default (50), above 1000 is taken as 1000, negative is refused.
	PageSize int
	// MinIndex, when set, makes the server answer only once its read models
	// include the log entry at this index (a Receipt's Index): read your
	// writes.
	MinIndex *uint64
}

func (q DueQuery) request(pageToken string) *piledgerv1.ListDueHoldingsRequest {
	req := &piledgerv1.ListDueHoldingsRequest{
		Processor: q.Processor,
		PageSize:  pageSize(q.PageSize), PageToken: pageToken, MinIndex: q.MinIndex,
	}
	if !q.Before.IsZero() {
		req.Before = timestamppb.New(q.Before)
	}
	return req
}

// DueHoldings returns the holdings q selects whose destruction is due or
// overdue, in the server's order (grouped by processor; within one, holdings
// with a fixed deadline by deadline, then those due because a purpose
// ended), reading one page after the other as the loop asks for more. Every
// page of one iteration is evaluated at the time of the first, with the
// first page's Before.
//
// Who may call it: an emitter, for its own processor's holdings (its API key
// or client certificate names the processor; no reason is needed); a
// regulator or an admin, for any processor's, with [WithToken] and
// [WithReason]. The server records every read as an access event in the
// timeline of each person listed.
//
// A failure ends the iteration with a nil holding and the error, which is
// that of [Client.ListDueHoldings]. Breaking out of the loop stops reading.
//
//	for h, err := range c.DueHoldings(ctx, client.DueQuery{}) {
//		if err != nil {
//			return err
//		}
//		destroy(h.GetSystem(), h.GetDataCategory(), h.GetSourceEventId())
//	}
func (c *Client) DueHoldings(ctx context.Context, q DueQuery) iter.Seq2[*piledgerv1.Holding, error] {
	return pages(func(pageToken string) (*piledgerv1.ListDueHoldingsResponse, error) {
		return c.ListDueHoldings(ctx, q, pageToken)
	}, (*piledgerv1.ListDueHoldingsResponse).GetHoldings)
}

// ListDueHoldings returns one page of the due holdings q selects (see
// [Client.DueHoldings] for who may call it): the first when pageToken is
// empty, else the one the previous page's NextPageToken names (q must be the
// same, PageSize aside). The page also says the effective Before time and
// when states were evaluated.
//
// Failed calls are retried under the retry policy while ctx allows, as
// appends are. Errors: ErrPermissionDenied (wrapping the status) for a
// processor the caller may not see, or a caller with a subject token; gRPC
// status errors (status.Code works on them) — INVALID_ARGUMENT with the
// fields at fault in [FieldViolations] for a bad filter or page token, or
// for a regulator or admin without [WithReason]; ErrUnavailable (wrapping
// the last status) when the retry policy gave up; ctx.Err() (wrapped) when
// ctx ended first; ErrClosed after Close.
func (c *Client) ListDueHoldings(ctx context.Context, q DueQuery, pageToken string) (*piledgerv1.ListDueHoldingsResponse, error) {
	return listPage(ctx, c, "list due holdings", piledgerv1.NewHoldingServiceClient(c.conn).ListDueHoldings, q.request(pageToken))
}
