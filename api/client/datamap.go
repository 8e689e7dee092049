package client

import (
	"context"
	"errors"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// ReadOption adjusts one read of [Client.DataMap] or [Client.MyDataMap].
type ReadOption func(*readOptions)

type readOptions struct {
	minIndex *uint64
}

// MinIndex makes the server answer only once its read models include the
// log entry at index (a Receipt's Index): read your writes. The server
// answers UNAVAILABLE, which is retried, while they lag behind.
func MinIndex(index uint64) ReadOption {
	return func(o *readOptions) { o.minIndex = &index }
}

// DataMap returns the data map of the person the raw subject reference
// subjectRef names (as events carry it in Subject): every holding of their
// data — who holds what, for which purpose, on which legal basis — and when
// each is, or was, destroyed.
//
// The reference is first resolved to the person's pseudonym with
// SubjectService.ResolveSubject; it travels only in that request's body,
// never in a URL, a metadata key or an error. The data map is then read by
// pseudonym ("subjects/{pseudonym}/datamap").
//
// Who may call it: a regulator or an admin, with [WithToken] and
// [WithReason]; the server records the read as an access event in the
// person's timeline, with the reason. An emitter may not read data maps: it
// gets ErrPermissionDenied. A data subject reads their own with
// [Client.MyDataMap] (resolving references is not for subjects: DataMap
// gives them ErrPermissionDenied).
//
// Failed calls are retried under the retry policy while ctx allows, as
// appends are. Errors: ErrPermissionDenied (wrapping the status) when the
// credentials may not read the data map; gRPC status errors (status.Code
// works on them) — NOT_FOUND when the ledger has no event of the person,
// INVALID_ARGUMENT with the fields at fault in [FieldViolations] for an
// empty or too long reference, or for a regulator or admin without
// [WithReason]; ErrUnavailable (wrapping the last status) when the retry
// policy gave up; ctx.Err() (wrapped) when ctx ended first; ErrClosed after
// Close.
func (c *Client) DataMap(ctx context.Context, subjectRef string, opts ...ReadOption) (*piledgerv1.DataMap, error) {
	req := &piledgerv1.ResolveSubjectRequest{SubjectRef: subjectRef}
	rpc := piledgerv1.NewSubjectServiceClient(c.conn)
	resolved, err := retryRead(ctx, c, "resolve subject", func(ctx context.Context) (*piledgerv1.ResolveSubjectResponse, error) {
		return rpc.ResolveSubject(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	if resolved.GetPseudonym() == "" {
		return nil, errors.New("client: resolve subject: the server returned no pseudonym")
	}
	return c.dataMap(ctx, "subjects/"+resolved.GetPseudonym()+"/datamap", opts)
}

// MyDataMap returns the caller's own data map ("subjects/me/datamap"): every
// holding of their data and when each is, or was, destroyed. It needs a data
// subject's credential: [WithToken] with a subject token, whose subject is
// the person's raw reference. The server does not record a person reading
// their own records. Any other caller is refused: an emitter with
// ErrPermissionDenied, a regulator or an admin with INVALID_ARGUMENT (only a
// data subject has a "me"; they use [Client.DataMap]).
//
// Errors are those of [Client.DataMap]; NOT_FOUND when the ledger has no
// event of the caller.
func (c *Client) MyDataMap(ctx context.Context, opts ...ReadOption) (*piledgerv1.DataMap, error) {
	return c.dataMap(ctx, "subjects/me/datamap", opts)
}

// dataMap reads the data map called name.
func (c *Client) dataMap(ctx context.Context, name string, opts []ReadOption) (*piledgerv1.DataMap, error) {
	var o readOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	req := &piledgerv1.GetDataMapRequest{Name: name, MinIndex: o.minIndex}
	rpc := piledgerv1.NewSubjectServiceClient(c.conn)
	return retryRead(ctx, c, "get data map", func(ctx context.Context) (*piledgerv1.DataMap, error) {
		return rpc.GetDataMap(ctx, req)
	})
}
