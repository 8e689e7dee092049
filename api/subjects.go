package api

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// ReadModels is what the api needs of the read models. *projections.Store
// implements it.
//
// Implementations MUST be safe for concurrent use. Errors SHOULD be the
// projections sentinels (ErrNotFound, ErrInvalidPageToken, ErrBehind,
// ErrStopped, ErrCorrupt) or context errors; anything else is reported to
// clients as an internal error.
type ReadModels interface {
	// Resolve returns the pseudonym of a raw subject reference and whether
	// any event of the subject was applied.
	Resolve(ctx context.Context, ref string) (pseudonym string, recorded bool, err error)
	// DataMap returns every holding of a subject.
	DataMap(ctx context.Context, pseudonym string, minIndex *uint64) (*piledgerv1.DataMap, error)
	// SubjectEvents returns one page of a subject's events, newest first.
	SubjectEvents(ctx context.Context, pseudonym string, pageSize int, pageToken string, minIndex *uint64) (*piledgerv1.ListSubjectEventsResponse, error)
	// Export returns everything about a subject.
	Export(ctx context.Context, pseudonym string, minIndex *uint64) (*piledgerv1.SubjectExport, error)
	// DueHoldings returns one page of holdings due for destruction.
	DueHoldings(ctx context.Context, q projections.DueQuery) (*piledgerv1.ListDueHoldingsResponse, error)
	// PurposeHoldings returns one page of who holds data for a purpose.
	PurposeHoldings(ctx context.Context, purpose string, pageSize int, pageToken string, minIndex *uint64) (*piledgerv1.ListPurposeHoldingsResponse, error)
	// Findings returns one page of rule findings.
	Findings(ctx context.Context, q projections.FindingQuery) (*piledgerv1.ListFindingsResponse, error)
}

var _ ReadModels = (*projections.Store)(nil)

// Option configures an optional part of a Server.
type Option func(*options)

type options struct {
	readModels ReadModels
	eraser     Eraser
	keys       *crypto.Keyring
	signer     *crypto.LogSigner
}

// Eraser records a subject's erasure in the log and destroys the subject's
// keys (*ledger.Ledger).
type Eraser interface {
	Erase(ctx context.Context, pseudonym string, req ledger.ErasureRequest) (ledger.ErasureResult, error)
}

var _ Eraser = (*ledger.Ledger)(nil)

// WithErasure serves SubjectService.EraseSubject: e records the erasure in
// the log and destroys the subject's keys, keys describes the key store on
// the receipt, and signer (the transparency log's signing key) signs it.
// Without it (or without WithReadModels) EraseSubject answers
// UNIMPLEMENTED.
func WithErasure(e Eraser, keys *crypto.Keyring, signer *crypto.LogSigner) Option {
	return func(o *options) { o.eraser, o.keys, o.signer = e, keys, signer }
}

// WithReadModels serves the SubjectService, HoldingService and
// FindingService over rm.
// Without it those services answer UNIMPLEMENTED.
func WithReadModels(rm ReadModels) Option {
	return func(o *options) { o.readModels = rm }
}

// register adds the optional services to the gRPC server and marks them
// SERVING.
func (o *options) register(s *grpc.Server, hs *health.Server, logger *slog.Logger) {
	if o.readModels == nil {
		return
	}
	piledgerv1.RegisterSubjectServiceServer(s, &subjectService{rm: o.readModels, eraser: o.eraser, keys: o.keys, signer: o.signer, logger: logger})
	piledgerv1.RegisterHoldingServiceServer(s, &holdingService{rm: o.readModels, logger: logger})
	piledgerv1.RegisterFindingServiceServer(s, &findingService{rm: o.readModels, logger: logger})
	hs.SetServingStatus(piledgerv1.SubjectService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(piledgerv1.HoldingService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(piledgerv1.FindingService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// subjectService implements piledgerv1.SubjectServiceServer on ReadModels.
type subjectService struct {
	piledgerv1.UnimplementedSubjectServiceServer
	rm     ReadModels
	eraser Eraser            // nil: no erasure
	keys   *crypto.Keyring   // describes the key store on receipts
	signer *crypto.LogSigner // signs erasure receipts
	logger *slog.Logger
}

// holdingService implements piledgerv1.HoldingServiceServer on ReadModels.
type holdingService struct {
	piledgerv1.UnimplementedHoldingServiceServer
	rm     ReadModels
	logger *slog.Logger
}

// maxSubjectRefBytes is the longest subject reference ResolveSubject takes:
// the ledger's limit on subjectRef.
const maxSubjectRefBytes = ledger.DefaultMaxRefBytes

// ResolveSubject implements piledgerv1.SubjectServiceServer. The reference
// is checked as the ledger checks subjectRef; no error or log repeats it.
func (s *subjectService) ResolveSubject(ctx context.Context, req *piledgerv1.ResolveSubjectRequest) (*piledgerv1.ResolveSubjectResponse, error) {
	var v violations
	switch ref := req.GetSubjectRef(); {
	case ref == "":
		v.add("subjectRef", "is required")
	case len(ref) > maxSubjectRefBytes:
		v.add("subjectRef", "must be at most 256 bytes")
	case !utf8.ValidString(ref) || strings.ContainsFunc(ref, unicode.IsControl):
		v.add("subjectRef", "must be valid UTF-8 without control characters")
	}
	if err := v.err(); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	p, recorded, err := s.rm.Resolve(ctx, req.GetSubjectRef())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return &piledgerv1.ResolveSubjectResponse{Name: projections.SubjectName(p), Pseudonym: p, Recorded: recorded}, nil
}

// GetDataMap implements piledgerv1.SubjectServiceServer.
func (s *subjectService) GetDataMap(ctx context.Context, req *piledgerv1.GetDataMapRequest) (*piledgerv1.DataMap, error) {
	var v violations
	p := v.subject("name", req.GetName(), "/datamap")
	if err := v.err(); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	dm, err := s.rm.DataMap(ctx, p, req.MinIndex)
	return dm, toStatus(ctx, s.logger, err)
}

// ListSubjectEvents implements piledgerv1.SubjectServiceServer.
func (s *subjectService) ListSubjectEvents(ctx context.Context, req *piledgerv1.ListSubjectEventsRequest) (*piledgerv1.ListSubjectEventsResponse, error) {
	var v violations
	p := v.subject("parent", req.GetParent(), "")
	v.pageSize(req.GetPageSize())
	if err := v.err(); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	resp, err := s.rm.SubjectEvents(ctx, p, int(req.GetPageSize()), req.GetPageToken(), req.MinIndex)
	return resp, toStatus(ctx, s.logger, err)
}

// ExportSubject implements piledgerv1.SubjectServiceServer.
func (s *subjectService) ExportSubject(ctx context.Context, req *piledgerv1.ExportSubjectRequest) (*piledgerv1.SubjectExport, error) {
	var v violations
	p := v.subject("name", req.GetName(), "")
	if err := v.err(); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	out, err := s.rm.Export(ctx, p, req.MinIndex)
	return out, toStatus(ctx, s.logger, err)
}

// kekRetention is how long after an erasure the receipt promises the
// remnants (wrapped-key copies in backups, replicas, freed blocks) become
// irrecoverable: the KEK epoch is retired by then (`piledger keys rotate`
// run at least this often; docs/KEK-ROTATION.md).
const kekRetention = 30 * 24 * time.Hour

// EraseSubject implements piledgerv1.SubjectServiceServer: it records the
// erasure in the log, destroys the subject's keys, waits until the read
// models applied the erasure entry (to count the entries it made
// unreadable) and returns a signed receipt. Repeating it is harmless.
func (s *subjectService) EraseSubject(ctx context.Context, req *piledgerv1.EraseSubjectRequest) (*piledgerv1.ErasureReceipt, error) {
	if s.eraser == nil || s.keys == nil || s.signer == nil {
		return s.UnimplementedSubjectServiceServer.EraseSubject(ctx, req)
	}
	var v violations
	p := v.subject("name", req.GetName(), "")
	if err := v.err(); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	er := ledger.ErasureRequest{RequestedBy: "admin"}
	if id, ok := CallerIdentity(ctx); ok && id.Role == RoleSubject {
		er.RequestedBy = "subject"
	} else if md, ok := metadata.FromIncomingContext(ctx); ok {
		er.Reason, _ = readReason(md) // validated by the authorization interceptor
	}
	res, err := s.eraser.Erase(ctx, p, er)
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	now := res.Receipt.GetRecordedAt().AsTime().UTC().Truncate(time.Second)
	r := &crypto.ErasureReceipt{Subject: p, ErasedAt: now, Locations: s.keys.KeyStoreLocations(res.Keys, now.Add(kekRetention))}
	if res.Generation == 0 && len(r.Locations) > 0 && r.Locations[0].Name == "key-store" {
		// A subject the ledger never made a key for: say so rather than
		// "generations 1..0".
		r.Locations[0].Detail = "no key of the subject existed; nothing to destroy"
	}
	// The read models apply the erasure entry: they count the subject's
	// entries it made unreadable, and their rows are sealed under the
	// destroyed key.
	index := res.Receipt.GetIndex()
	dm, err := s.rm.DataMap(ctx, p, &index)
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	var erased *piledgerv1.SubjectErasure
	for _, e := range dm.GetErasures() {
		if e.GetLogIndex() == index {
			erased = e
		}
	}
	entries := "the erasure entry was not found in the read models"
	if erased != nil {
		entries = fmt.Sprintf("%d entries of the subject now unreadable (they replay as shredded headers)", erased.GetEventCount())
		if erased.GetEventCount() > 0 {
			entries += fmt.Sprintf(", at log indexes %d to %d", erased.GetFirstIndex(), erased.GetLastIndex())
		}
	}
	r.Locations = append(r.Locations,
		crypto.ErasureLocation{Name: "erasure-entry", State: crypto.LocationDone,
			Detail: fmt.Sprintf("recorded in the log at index %d", index)},
		crypto.ErasureLocation{Name: "read-models", State: crypto.LocationDone,
			Detail: fmt.Sprintf("rows are sealed under the destroyed key; %d holding(s) now unreadable", dm.GetShreddedHoldingCount())},
		crypto.ErasureLocation{Name: "log-entries", State: crypto.LocationDone, Detail: entries},
		crypto.ErasureLocation{Name: "external-systems", State: crypto.LocationOutOfScope,
			Detail: "copies held by emitters"},
	)
	msg, err := crypto.SignErasureReceipt(r, s.signer)
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	out := &piledgerv1.ErasureReceipt{
		Name: projections.SubjectName(p), Pseudonym: p,
		EraseTime: timestamppb.New(now), SignedNote: string(msg),
	}
	for _, l := range r.Locations {
		pl := &piledgerv1.ErasureLocation{Name: l.Name, State: l.State, Detail: l.Detail}
		if l.State == crypto.LocationPending {
			pl.UntilTime = timestamppb.New(l.Until)
		}
		out.Locations = append(out.Locations, pl)
	}
	return out, nil
}

// ListDueHoldings implements piledgerv1.HoldingServiceServer.
func (s *holdingService) ListDueHoldings(ctx context.Context, req *piledgerv1.ListDueHoldingsRequest) (*piledgerv1.ListDueHoldingsResponse, error) {
	var v violations
	q := projections.DueQuery{
		Processor: req.GetProcessor(), PageSize: int(req.GetPageSize()),
		PageToken: req.GetPageToken(), MinIndex: req.MinIndex,
	}
	if b := req.GetBefore(); b != nil {
		if b.CheckValid() != nil {
			v.add("before", "must be a valid timestamp")
		} else {
			q.Before = b.AsTime()
		}
	}
	if q.Processor != "" && !ledger.IsIdentifier(q.Processor) {
		v.add("processor", "must be an identifier of 1-128 characters from [a-z0-9._-], starting with a letter or digit")
	}
	v.pageSize(req.GetPageSize())
	if err := v.err(); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	resp, err := s.rm.DueHoldings(ctx, q)
	return resp, toStatus(ctx, s.logger, err)
}

// ListPurposeHoldings implements piledgerv1.HoldingServiceServer.
func (s *holdingService) ListPurposeHoldings(ctx context.Context, req *piledgerv1.ListPurposeHoldingsRequest) (*piledgerv1.ListPurposeHoldingsResponse, error) {
	var v violations
	purpose, ok := strings.CutPrefix(req.GetParent(), "purposes/")
	if _, known := ledger.DefaultVocabulary().Purpose(purpose); !ok || !known {
		v.add("parent", "must be purposes/{purpose}, with a purpose of the vocabulary or an extension term x-<namespace>.<term>")
	}
	v.pageSize(req.GetPageSize())
	if err := v.err(); err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	resp, err := s.rm.PurposeHoldings(ctx, purpose, int(req.GetPageSize()), req.GetPageToken(), req.MinIndex)
	return resp, toStatus(ctx, s.logger, err)
}

// violations collects the field violations of a request. Descriptions never
// repeat a field's value.
type violations struct{ list []ledger.FieldViolation }

func (v *violations) add(field, desc string) {
	v.list = append(v.list, ledger.FieldViolation{Field: field, Description: desc})
}

func (v *violations) err() error {
	if len(v.list) == 0 {
		return nil
	}
	return &requestError{violations: v.list}
}

// subject checks a resource name "subjects/{pseudonym}<suffix>" and returns
// the pseudonym.
func (v *violations) subject(field, name, suffix string) string {
	rest, ok := strings.CutPrefix(name, "subjects/")
	if ok {
		rest, ok = strings.CutSuffix(rest, suffix)
	}
	if !ok || !crypto.IsPseudonym(rest) {
		v.add(field, "must be subjects/{pseudonym}"+suffix+", the pseudonym being 64 lowercase hex characters (resolve a subject reference with subjects:resolve)")
		return ""
	}
	return rest
}

// pageSize checks an AIP-158 page size: negative is invalid, 0 means the
// default, larger than the maximum is coerced.
func (v *violations) pageSize(n int32) {
	if n < 0 {
		v.add("pageSize", "must not be negative")
	}
}
