package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
)

const (
	// readHeaderTimeout bounds how long a client may take to send request
	// headers (slow-loris protection). Bodies and streams are not bounded.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes keep-alive HTTP connections idle for this long.
	idleTimeout = 2 * time.Minute
)

// Server serves the ledger over gRPC and over HTTP (the REST gateway,
// /healthz and /openapi.json).
type Server struct {
	cfg      Config
	logger   *slog.Logger
	grpcLis  net.Listener
	httpLis  net.Listener
	grpc     *grpc.Server
	health   *health.Server
	http     *http.Server
	gwConn   *grpc.ClientConn
	gwCancel context.CancelFunc

	sec        *security
	metricsLis net.Listener // nil without Config.MetricsAddr
	metrics    *http.Server
}

// New validates cfg, opens both listeners (so an address in use fails here,
// not in Run) and builds the servers. The HTTP gateway is a client of the gRPC
// listener. log must be safe for concurrent use; logger receives access and
// error logs, never personal data.
//
// The caller MUST call Run exactly once: Run serves and, when it returns, has
// closed the listeners and released everything New allocated. opts add
// optional services (WithReadModels).
func New(cfg Config, log Log, logger *slog.Logger, opts ...Option) (srv *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		return nil, errors.New("api: New: nil Log")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, logger: logger, health: health.NewServer()}
	defer func() {
		if err != nil {
			s.release()
		}
	}()

	if s.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("api: gRPC listener: %w", err)
	}
	if s.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("api: HTTP listener: %w", err)
	}
	if s.sec, err = newSecurity(cfg, log, logger); err != nil {
		return nil, err
	}
	if cfg.MetricsAddr != "" {
		if s.metricsLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("api: metrics listener: %w", err)
		}
		s.metrics = newMetricsServer(s.sec, logger)
	}
	s.grpc = newGRPCServer(cfg, &ledgerService{log: log, logger: logger}, s.health, logger, s.sec)
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	o.register(s.grpc, s.health, logger)
	if st, ok := o.readModels.(readModelStats); ok {
		s.sec.metrics.reg.MustRegister(newReadModelCollector(st))
	}

	s.gwConn, err = grpc.NewClient(dialTarget(s.grpcLis.Addr()), s.sec.gatewayDialOption())
	if err != nil {
		return nil, fmt.Errorf("api: gateway client: %w", err)
	}
	var gwCtx context.Context
	gwCtx, s.gwCancel = context.WithCancel(context.Background())
	handler, err := newHTTPHandler(gwCtx, cfg, s.gwConn, logger, s.sec)
	if err != nil {
		return nil, err
	}
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if s.sec.tls != nil {
		s.httpLis = tlsListener(s.httpLis, s.sec.tls)
	}
	return s, nil
}

// dialTarget returns the address the gateway dials to reach the gRPC
// listener: the bound address, with an unspecified IP (0.0.0.0, ::) replaced
// by loopback.
func dialTarget(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	ip := tcp.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}

// GRPCAddr returns the address the gRPC server listens on, with the actual
// port when Config.GRPCAddr asked for port 0.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr returns the address the HTTP gateway listens on, with the actual
// port when Config.HTTPAddr asked for port 0.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// MetricsAddr returns the address of the /metrics listener, or "" when
// Config.MetricsAddr is empty.
func (s *Server) MetricsAddr() string {
	if s.metricsLis == nil {
		return ""
	}
	return s.metricsLis.Addr().String()
}

// Run serves gRPC and HTTP until ctx is done or either server fails, then
// shuts down in this order:
//
//  1. health: every service NOT_SERVING, so load balancers stop sending;
//  2. HTTP: stop accepting, wait for in-flight requests and NDJSON streams;
//  3. gRPC: GracefulStop, waiting for in-flight calls and streams.
//
// Steps 2 and 3 together take at most Config.ShutdownTimeout; calls still
// running then are cut off. Run returns nil after a shutdown caused by ctx,
// and the serving error otherwise. When Run returns, no call is in flight
// any more, so the Log may be drained and closed.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 3)
	var serving sync.WaitGroup
	defer serving.Wait()
	serving.Go(func() {
		if err := s.grpc.Serve(s.grpcLis); err != nil {
			errc <- fmt.Errorf("api: gRPC server: %w", err)
		}
	})
	serving.Go(func() {
		if err := s.http.Serve(s.httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("api: HTTP server: %w", err)
		}
	})
	if s.metrics != nil {
		serving.Go(func() {
			if err := s.metrics.Serve(s.metricsLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("api: metrics server: %w", err)
			}
		})
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}

	s.health.Shutdown()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(shutdownCtx); err != nil {
		s.logger.WarnContext(ctx, "HTTP shutdown cut off in-flight requests", slog.Any("error", err))
		_ = s.http.Close()
	}
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		s.logger.WarnContext(ctx, "gRPC shutdown cut off in-flight calls")
		s.grpc.Stop()
		<-stopped
	}
	if s.metrics != nil {
		_ = s.metrics.Close()
	}
	s.release()
	return serveErr
}

// release frees what New allocated. It is safe on a partly built Server.
func (s *Server) release() {
	if s.gwCancel != nil {
		s.gwCancel()
	}
	if s.gwConn != nil {
		_ = s.gwConn.Close()
	}
	if s.grpc != nil {
		s.grpc.Stop() // closes grpcLis
	}
	for _, l := range []net.Listener{s.grpcLis, s.httpLis, s.metricsLis} {
		if l != nil {
			_ = l.Close()
		}
	}
}
