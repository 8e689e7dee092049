package api

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// newGRPCServer returns a gRPC server with the ledger service, the health
// service (SERVING for "" and the ledger service) and reflection registered.
//
// Interceptors run outermost first: metrics, access logging, panic recovery
// (so a recovered panic is logged as the INTERNAL it became), then
// authentication, rate limiting, authorization and access recording
// (security.go), so that nothing reaches a handler unchecked.
func newGRPCServer(cfg Config, svc piledgerv1.LedgerServiceServer, hs *health.Server, logger *slog.Logger, sec *security) *grpc.Server {
	s := grpc.NewServer(append(sec.serverOptions(),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.ChainUnaryInterceptor(sec.observeUnary(), logUnary(logger), recoverUnary(logger), sec.authUnary()),
		grpc.ChainStreamInterceptor(sec.observeStream(), logStream(logger), recoverStream(logger), sec.authStream()),
	)...)
	piledgerv1.RegisterLedgerServiceServer(s, svc)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(piledgerv1.LedgerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// logUnary logs one line per unary call: method, status code and duration.
// Nothing from the request or response is logged.
func logUnary(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		logCall(ctx, logger, info.FullMethod, err, time.Since(start))
		return resp, err
	}
}

// logStream is logUnary for streaming calls.
func logStream(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		logCall(ss.Context(), logger, info.FullMethod, err, time.Since(start))
		return err
	}
}

// logCall writes the access log line: DEBUG for successes and health checks
// (they are frequent), INFO for client-side failures, WARN for server faults.
func logCall(ctx context.Context, logger *slog.Logger, method string, err error, d time.Duration) {
	code := status.Code(err)
	level := slog.LevelInfo
	switch {
	case code == codes.OK, strings.HasPrefix(method, "/grpc.health.v1.Health/"):
		level = slog.LevelDebug
	case code == codes.Internal, code == codes.Unknown, code == codes.DataLoss, code == codes.Unavailable:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("method", methodLabel(method)),
		slog.String("code", code.String()),
		slog.Duration("duration", d),
	}
	// The caller's role, and an emitter's processor id (an organization,
	// not a person); never a subject's or an official's identity.
	if ci := callInfoFrom(ctx); ci != nil && ci.id != nil {
		attrs = append(attrs, slog.String("role", ci.id.Role.String()))
		if ci.id.Role == RoleEmitter {
			attrs = append(attrs, slog.String("processor", ci.id.Processor))
		}
	}
	logger.LogAttrs(ctx, level, "grpc call", attrs...)
}

// recoverUnary turns a panic in a handler into INTERNAL "internal error"; the
// panic value and stack go to the log only.
func recoverUnary(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				resp, err = nil, recovered(ctx, logger, info.FullMethod, p)
			}
		}()
		return handler(ctx, req)
	}
}

// recoverStream is recoverUnary for streaming calls.
func recoverStream(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = recovered(ss.Context(), logger, info.FullMethod, p)
			}
		}()
		return handler(srv, ss)
	}
}

// recovered logs a recovered panic with its stack and returns the status the
// client sees (INTERNAL "internal error"). A panic value is logged by type
// only, since it could hold request data; runtime errors (nil dereference,
// index out of range) are logged in full, as they carry none.
func recovered(ctx context.Context, logger *slog.Logger, method string, p any) error {
	desc := fmt.Sprintf("%T", p)
	if err, ok := p.(runtime.Error); ok {
		desc = err.Error()
	}
	logger.ErrorContext(ctx, "panic in grpc handler",
		slog.String("method", methodLabel(method)),
		slog.String("panic", desc),
		slog.String("stack", string(debug.Stack())))
	return toStatus(ctx, logger, fmt.Errorf("api: panic in %s: %s", method, desc))
}
