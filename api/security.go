package api

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// security is the server's authentication, authorization, access recording,
// rate limiting and metrics, shared by the gRPC server and the gateway.
type security struct {
	auth    *authenticator // nil: authentication is off (Config.Auth nil)
	limits  *limiters
	access  AccessLog
	metrics *metrics
	logger  *slog.Logger
	tls     *tls.Config // server TLS; nil: plaintext
}

func newSecurity(cfg Config, log Log, logger *slog.Logger) (*security, error) {
	s := &security{
		limits:  newLimiters(cfg.RateLimit, cfg.RateBurst),
		metrics: newMetrics(),
		logger:  logger,
	}
	if cfg.TLS != nil {
		s.tls = cfg.TLS.Clone()
		s.tls.MinVersion = max(s.tls.MinVersion, tls.VersionTLS12)
		if s.tls.ClientCAs != nil && s.tls.ClientAuth == tls.NoClientCert {
			// Client certificates are optional (token and API-key callers
			// have none) but, when sent, verified against ClientCAs.
			s.tls.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	if cfg.Auth == nil {
		logger.Warn("authentication is off: every caller may call every method (api.Config.Auth is nil)")
		return s, nil
	}
	a := cfg.Auth
	if a.Pseudonymize == nil && len(a.Tokens) > 0 {
		return nil, errors.New("api: Auth.Pseudonymize is required to accept tokens")
	}
	access, ok := log.(AccessLog)
	if !ok {
		return nil, fmt.Errorf("api: the Log (%T) cannot record accesses: it does not implement AccessLog", log)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	s.access = access
	s.auth = &authenticator{
		apiKeys:       a.APIKeys,
		tokens:        a.Tokens,
		pseudonymize:  a.Pseudonymize,
		gatewaySecret: hex.EncodeToString(secret),
		now:           time.Now,
	}
	return s, nil
}

// serverOptions are the gRPC server options security adds: TLS, and a
// handler for unknown methods so that they, too, pass the interceptors
// (and so authentication) before being refused.
func (s *security) serverOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
			return status.Error(codes.Unimplemented, "unknown method")
		}),
	}
	if s.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.tls)))
	}
	return opts
}

// gatewayDialOption is how the gateway reaches the gRPC listener: plaintext
// over loopback, or TLS accepting exactly the server's own certificate.
func (s *security) gatewayDialOption() grpc.DialOption {
	if s.tls == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	own := make(map[string]bool)
	for _, c := range s.tls.Certificates {
		if len(c.Certificate) > 0 {
			own[string(c.Certificate[0])] = true
		}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		// The gateway dials its own listener by IP; the certificate is
		// checked by identity instead of by name.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection pins the server's own certificate
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !own[string(cs.PeerCertificates[0].Raw)] {
				return errors.New("api: gateway: the gRPC listener presented a certificate that is not the server's")
			}
			return nil
		},
	}))
}

// gatewayMuxOptions are the gateway options security adds.
func (s *security) gatewayMuxOptions() []runtime.ServeMuxOption {
	opts := []runtime.ServeMuxOption{
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithForwardResponseOption(noStore),
	}
	if s.auth != nil {
		opts = append(opts, runtime.WithMetadata(s.gatewayMetadata))
	}
	return opts
}

// noStore keeps responses (personal data) out of shared and browser caches.
func noStore(_ context.Context, w http.ResponseWriter, _ proto.Message) error {
	w.Header().Set("Cache-Control", "no-store")
	return nil
}

// gatewayMetadata is what the gateway vouches for to the gRPC server, with
// the gateway secret: the client's address and the processor of the client
// certificate the HTTPS listener verified. These values replace any header
// a client sent under the same names.
func (s *security) gatewayMetadata(_ context.Context, r *http.Request) metadata.MD {
	md := metadata.Pairs(mdGatewaySecret, s.auth.gatewaySecret, mdGatewayClient, hostOf(r.RemoteAddr))
	if r.TLS != nil {
		if p := chainsProcessor(r.TLS.VerifiedChains); p != "" {
			md.Set(mdGatewayCert, p)
		}
	}
	return md
}

// gatewayContext returns ctx with what the gateway forwards for r (its
// Authorization and reason headers, and the gateway's own vouching), for
// plain HTTP handlers that call the gRPC server over the gateway's
// connection, as the grpc-gateway handlers do.
func (s *security) gatewayContext(ctx context.Context, r *http.Request) context.Context {
	md := metadata.MD{}
	for _, v := range r.Header.Values("Authorization") {
		md.Append(mdAuthorization, v)
	}
	for _, v := range r.Header.Values("X-Piledger-Reason") {
		md.Append(mdReason, v)
	}
	if s.auth != nil {
		md = metadata.Join(md, s.gatewayMetadata(ctx, r))
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// callInfoKey holds a *callInfo, which the authentication interceptor fills
// for the logging and metrics interceptors around it.
type callInfoKey struct{}

type callInfo struct{ id *Identity }

func callInfoFrom(ctx context.Context) *callInfo {
	c, _ := ctx.Value(callInfoKey{}).(*callInfo)
	return c
}

// observeUnary records the call's metrics, outermost.
func (s *security) observeUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(context.WithValue(ctx, callInfoKey{}, &callInfo{}), req)
		d := time.Since(start)
		s.observe(info.FullMethod, err, d)
		if r, ok := req.(*piledgerv1.AppendEventsRequest); ok && info.FullMethod == piledgerv1.LedgerService_AppendEvents_FullMethodName {
			out, _ := resp.(*piledgerv1.AppendEventsResponse)
			s.metrics.observeAppend(r, out, err)
			s.metrics.appendDuration.Observe(d.Seconds())
		}
		return resp, err
	}
}

// observeStream is observeUnary for streams.
func (s *security) observeStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, &ctxStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callInfoKey{}, &callInfo{})})
		s.observe(info.FullMethod, err, time.Since(start))
		return err
	}
}

func (s *security) observe(method string, err error, d time.Duration) {
	m := methodLabel(method)
	s.metrics.grpcRequests.WithLabelValues(m, status.Code(err).String()).Inc()
	s.metrics.grpcDuration.WithLabelValues(m).Observe(d.Seconds())
}

// ctxStream is a ServerStream with another context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }

// admit authenticates the caller and takes a token from its rate limit
// bucket. Unauthenticated callers draw on a bucket per client address.
func (s *security) admit(ctx context.Context, method string) (*Identity, error) {
	now := time.Now()
	id, c, err := s.auth.authenticate(ctx)
	if err != nil {
		var ae *authError
		reason := "unknown"
		if errors.As(err, &ae) {
			reason = ae.reason
		}
		s.metrics.authFailures.WithLabelValues(reason).Inc()
		s.logger.LogAttrs(ctx, slog.LevelInfo, "authentication failed",
			slog.String("method", methodLabel(method)), slog.String("reason", reason))
		if ok, d := s.limits.allow("a\x00"+c.addr, now); !ok {
			s.metrics.rateLimited.WithLabelValues(RoleNone.String()).Inc()
			return nil, toStatus(ctx, s.logger, &rateLimitError{retryAfter: d})
		}
		return nil, toStatus(ctx, s.logger, err)
	}
	if ci := callInfoFrom(ctx); ci != nil {
		ci.id = id
	}
	if ok, d := s.limits.allow(id.limiterKey(), now); !ok {
		s.metrics.rateLimited.WithLabelValues(id.Role.String()).Inc()
		return nil, toStatus(ctx, s.logger, &rateLimitError{retryAfter: d})
	}
	return id, nil
}

// call is what authorization decided about one call.
type call struct {
	pol     policy
	id      *Identity
	reason  string
	subject string // the subject the request names, if any
	record  bool   // record the access
}

// authorize applies pol to id and req (nil for streams, whose request is
// checked by check when it arrives).
func (s *security) authorize(ctx context.Context, pol policy, id *Identity) (*call, error) {
	if !pol.roles.has(id.Role) {
		return nil, denied("", "the caller's role may not call this method")
	}
	c := &call{pol: pol, id: id}
	md, _ := metadata.FromIncomingContext(ctx)
	reason, err := readReason(md)
	if err != nil {
		return nil, err
	}
	if pol.reasonRoles.has(id.Role) && reason == "" {
		return nil, invalidRequest(mdReason, "is required: say why you read these records (a case or request reference); it is recorded in the access events")
	}
	c.reason = reason
	c.record = pol.access != nil && id.Role != RoleSubject
	return c, nil
}

// check applies the request-level rules of the policy to req.
func (c *call) check(req proto.Message) error {
	if c.pol.subjectField != "" {
		p, err := subjectOf(c.pol, c.id, req)
		if err != nil {
			return err
		}
		c.subject = p
	}
	if c.pol.before != nil {
		return c.pol.before(c.id, req)
	}
	return nil
}

// authUnary authenticates, rate-limits and authorizes unary calls, and
// records the accesses they give.
func (s *security) authUnary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		pol, known := lookupPolicy(info.FullMethod)
		if s.auth == nil || known && pol.public {
			return handler(ctx, req)
		}
		id, err := s.admit(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		ctx = withIdentity(ctx, id)
		if !known {
			return nil, toStatus(ctx, s.logger, denied("", "no policy allows this method"))
		}
		c, err := s.authorize(ctx, pol, id)
		if err != nil {
			return nil, toStatus(ctx, s.logger, err)
		}
		msg, ok := req.(proto.Message)
		if !ok {
			return nil, toStatus(ctx, s.logger, denied("", "the request is not a protobuf message"))
		}
		if err := c.check(msg); err != nil {
			return nil, toStatus(ctx, s.logger, err)
		}
		resp, err := handler(ctx, req)
		if err != nil {
			return resp, err
		}
		out, ok := resp.(proto.Message)
		if !ok {
			return nil, toStatus(ctx, s.logger, denied("", "the response is not a protobuf message"))
		}
		if pol.after != nil {
			if err := pol.after(id, out); err != nil {
				return nil, toStatus(ctx, s.logger, err)
			}
		}
		if c.record {
			a := make(accessed)
			a.collect(out, c.subject)
			if err := s.recordAccess(ctx, info.FullMethod, id, pol.access, c.reason, a); err != nil {
				return nil, toStatus(ctx, s.logger, err)
			}
		}
		return resp, nil
	}
}

// authStream is authUnary for streams: the request is checked when the
// handler receives it, and streamed messages are held back in chunks until
// their accesses are recorded.
func (s *security) authStream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		pol, known := lookupPolicy(info.FullMethod)
		if s.auth == nil || known && pol.public {
			return handler(srv, ss)
		}
		ctx := ss.Context()
		id, err := s.admit(ctx, info.FullMethod)
		if err != nil {
			return err
		}
		ctx = withIdentity(ctx, id)
		if !known {
			return toStatus(ctx, s.logger, denied("", "no policy allows this method"))
		}
		c, err := s.authorize(ctx, pol, id)
		if err != nil {
			return toStatus(ctx, s.logger, err)
		}
		g := &guardedStream{ServerStream: ss, ctx: ctx, s: s, c: c, method: info.FullMethod, done: make(accessed)}
		err = handler(srv, g)
		if ferr := g.flush(); err == nil {
			err = ferr
		}
		return err
	}
}

// guardedStream applies a call's policy to a stream.
type guardedStream struct {
	grpc.ServerStream
	ctx     context.Context
	s       *security
	c       *call
	method  string
	checked bool
	held    []any
	done    accessed // accesses already recorded in this call
}

func (g *guardedStream) Context() context.Context { return g.ctx }

// RecvMsg checks the first request message against the policy.
func (g *guardedStream) RecvMsg(m any) error {
	if err := g.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if g.checked {
		return nil
	}
	g.checked = true
	msg, ok := m.(proto.Message)
	if !ok {
		return toStatus(g.ctx, g.s.logger, denied("", "the request is not a protobuf message"))
	}
	if err := g.c.check(msg); err != nil {
		return toStatus(g.ctx, g.s.logger, err)
	}
	return nil
}

// SendMsg holds messages back while their accesses are not recorded.
func (g *guardedStream) SendMsg(m any) error {
	if !g.c.record {
		return g.ServerStream.SendMsg(m)
	}
	g.held = append(g.held, m)
	if len(g.held) >= streamAccessChunk {
		return g.flush()
	}
	return nil
}

// flush records the accesses of the held messages, then sends them.
func (g *guardedStream) flush() error {
	if len(g.held) == 0 {
		return nil
	}
	a := make(accessed)
	for _, m := range g.held {
		if msg, ok := m.(proto.Message); ok {
			a.collect(msg, g.c.subject)
		}
	}
	if err := g.s.recordAccess(g.ctx, g.method, g.c.id, g.c.pol.access, g.c.reason, a.minus(g.done)); err != nil {
		g.held = nil
		return toStatus(g.ctx, g.s.logger, err)
	}
	held := g.held
	g.held = nil
	for _, m := range held {
		if err := g.ServerStream.SendMsg(m); err != nil {
			return err
		}
	}
	return nil
}

// LoadTLSConfig returns a server TLS configuration from PEM files: the
// server's certificate chain and key, and optionally the CA certificates
// that sign emitters' client certificates (mutual TLS). With a client CA, a
// client certificate is verified when sent and its processor id
// (CertificateProcessor) identifies the caller as an emitter; callers with
// tokens or API keys need none.
func LoadTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("api: TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("api: client CA: %w", err)
		}
		cfg.ClientCAs = x509.NewCertPool()
		if !cfg.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("api: client CA %s holds no PEM certificate", clientCAFile)
		}
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// forwardAuth wraps a plain HTTP handler that calls the gRPC server over the
// gateway's connection with r.Context(): the call then carries what the
// gateway forwards (gatewayContext), so it is authenticated like any
// gateway call.
func (s *security) forwardAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(s.gatewayContext(r.Context(), r)))
	})
}

// newMetricsServer serves GET /metrics, on the operator listener only.
func newMetricsServer(s *security, logger *slog.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// tlsListener serves HTTP/1.1 over TLS on l (the gateway's NDJSON streams
// need nothing more).
func tlsListener(l net.Listener, cfg *tls.Config) net.Listener {
	c := cfg.Clone()
	c.NextProtos = []string{"http/1.1"}
	return tls.NewListener(l, c)
}
