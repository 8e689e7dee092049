package api

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/piledger/piledger/ledger/transparency"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Transparency is what the api needs of the transparency log.
// *transparency.Log implements it.
//
// Implementations MUST be safe for concurrent use. Errors SHOULD be the
// transparency sentinels (*transparency.RangeError,
// transparency.ErrCheckpointNotFound, transparency.ErrInconsistent), the
// ledger's (ErrUnavailable, ErrCorrupt) or context errors; anything else is
// reported to clients as an internal error.
type Transparency interface {
	// Origin returns the log's origin.
	Origin() string
	// VerifierKey returns the signed-note key checkpoints are signed with.
	VerifierKey() string
	// Checkpoint returns the latest checkpoint (size 0) or the one of a size.
	Checkpoint(ctx context.Context, size uint64) (*piledgerv1.Checkpoint, error)
	// InclusionProof proves an event's inclusion in the tree of a size.
	InclusionProof(ctx context.Context, index, size uint64) (*piledgerv1.InclusionProof, error)
	// ConsistencyProof proves the tree of size from is a prefix of size to.
	ConsistencyProof(ctx context.Context, from, to uint64) (*piledgerv1.ConsistencyProof, error)
	// Export calls fn with the records of a bundle of the whole log.
	Export(ctx context.Context, fn func(*piledgerv1.BundleRecord) error) error
}

var _ Transparency = (*transparency.Log)(nil)

// ServeTransparency serves the TransparencyService over t (checkpoints,
// proofs, the log export) and marks it SERVING. It MUST be called after New
// and before Run. Without it the service's routes answer UNIMPLEMENTED.
// GET /v1/log/checkpoint (text/plain) and the gateway routes of the service
// are always mounted; they call the gRPC service like any client, so every
// interceptor covers them.
func (s *Server) ServeTransparency(t Transparency) {
	piledgerv1.RegisterTransparencyServiceServer(s.grpc, &transparencyService{t: t, logger: s.logger})
	s.health.SetServingStatus(piledgerv1.TransparencyService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// transparencyService implements piledgerv1.TransparencyServiceServer.
type transparencyService struct {
	piledgerv1.UnimplementedTransparencyServiceServer
	t      Transparency
	logger *slog.Logger
}

// GetCheckpoint implements piledgerv1.TransparencyServiceServer.
func (s *transparencyService) GetCheckpoint(ctx context.Context, req *piledgerv1.GetCheckpointRequest) (*piledgerv1.Checkpoint, error) {
	cp, err := s.t.Checkpoint(ctx, req.GetTreeSize())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return cp, nil
}

// GetVerifierKey implements piledgerv1.TransparencyServiceServer.
func (s *transparencyService) GetVerifierKey(context.Context, *piledgerv1.GetVerifierKeyRequest) (*piledgerv1.VerifierKey, error) {
	return &piledgerv1.VerifierKey{Origin: s.t.Origin(), Key: s.t.VerifierKey()}, nil
}

// GetInclusionProof implements piledgerv1.TransparencyServiceServer.
func (s *transparencyService) GetInclusionProof(ctx context.Context, req *piledgerv1.GetInclusionProofRequest) (*piledgerv1.InclusionProof, error) {
	p, err := s.t.InclusionProof(ctx, req.GetIndex(), req.GetTreeSize())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return p, nil
}

// GetConsistencyProof implements piledgerv1.TransparencyServiceServer.
func (s *transparencyService) GetConsistencyProof(ctx context.Context, req *piledgerv1.GetConsistencyProofRequest) (*piledgerv1.ConsistencyProof, error) {
	p, err := s.t.ConsistencyProof(ctx, req.GetFrom(), req.GetTo())
	if err != nil {
		return nil, toStatus(ctx, s.logger, err)
	}
	return p, nil
}

// ExportLog implements piledgerv1.TransparencyServiceServer. A block record
// can exceed gRPC's default 4 MiB receive limit: clients should raise it
// (grpc.MaxCallRecvMsgSize).
func (s *transparencyService) ExportLog(_ *piledgerv1.ExportLogRequest, stream piledgerv1.TransparencyService_ExportLogServer) error {
	ctx := stream.Context()
	return toStatus(ctx, s.logger, s.t.Export(ctx, stream.Send))
}

// checkpointHandler serves GET /v1/log/checkpoint[?treeSize=N]: the signed
// note alone, as text/plain (what C2SP clients fetch), or the Checkpoint
// message as JSON when the request accepts application/json and not
// text/plain. It calls GetCheckpoint over conn, so the gRPC interceptors run
// and errors have the gateway's JSON shape and HTTP mapping.
func checkpointHandler(conn *grpc.ClientConn, logger *slog.Logger) http.Handler {
	client := piledgerv1.NewTransparencyServiceClient(conn)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		req := &piledgerv1.GetCheckpointRequest{}
		for name, values := range r.URL.Query() {
			if name != "treeSize" && name != "tree_size" {
				writeStatus(w, http.StatusBadRequest, toStatus(ctx, logger, invalidRequest(name, "unknown query parameter")))
				return
			}
			n, err := strconv.ParseUint(values[len(values)-1], 10, 64)
			if err != nil {
				writeStatus(w, http.StatusBadRequest, toStatus(ctx, logger, invalidRequest("treeSize", "invalid value for this query parameter")))
				return
			}
			req.TreeSize = n
		}
		cp, err := client.GetCheckpoint(ctx, req)
		if err != nil {
			writeStatus(w, runtime.HTTPStatusFromCode(status.Code(err)), err)
			return
		}
		if accept := r.Header.Get("Accept"); strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/plain") {
			b, err := protojson.Marshal(cp)
			if err != nil {
				writeStatus(w, http.StatusInternalServerError, toStatus(ctx, logger, err))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(cp.GetNote()))
	})
}
