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
// Interceptors run outermost first: access logging, then panic recovery, so a
// recovered panic is logged as the INTERNAL it became.
func newGRPCServer(cfg Config, svc piledgerv1.LedgerServiceServer, hs *health.Server, logger *slog.Logger) *grpc.Server {
	s := grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.ChainUnaryInterceptor(logUnary(logger), recoverUnary(logger)),
		grpc.ChainStreamInterceptor(logStream(logger), recoverStream(logger)),
	)
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
	logger.LogAttrs(ctx, level, "grpc call",
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Duration("duration", d))
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
		slog.String("method", method),
		slog.String("panic", desc),
		slog.String("stack", string(debug.Stack())))
	return toStatus(ctx, logger, fmt.Errorf("api: panic in %s: %s", method, desc))
}
