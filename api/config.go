package api

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

const (
	// DefaultGRPCAddr is where gRPC listens when Config.GRPCAddr is empty:
	// loopback only, so a fresh install is not reachable from the network.
	DefaultGRPCAddr = "127.0.0.1:7070"

	// DefaultHTTPAddr is where the REST gateway listens when Config.HTTPAddr is
	// empty: loopback only.
	DefaultHTTPAddr = "127.0.0.1:8080"

	// DefaultMaxRequestBytes bounds an HTTP request body. 4 MiB holds a full
	// batch of 1000 events of a few KiB of JSON each; larger bodies get 413
	// before any decoding, so a client cannot make the gateway buffer more.
	DefaultMaxRequestBytes = 4 << 20

	// DefaultMaxRecvMsgSize bounds one gRPC request message (grpc-go's own
	// default). Protobuf is smaller than the equivalent JSON, so a body the
	// gateway accepts also fits here.
	DefaultMaxRecvMsgSize = 4 << 20

	// DefaultShutdownTimeout is how long Run waits for in-flight requests and
	// streams to finish once its context is done, before cutting them off.
	DefaultShutdownTimeout = 10 * time.Second

	// DefaultRateLimit is each caller's sustained rate of calls per second
	// (one token bucket per identity, and per client address for
	// unauthenticated calls). An emitter's call carries up to 1000 events.
	DefaultRateLimit = 1000
	// DefaultRateBurst is each caller's bucket size: the calls it may make
	// at once after being idle.
	DefaultRateBurst = 2000

	// DefaultMetricsAddr is the operator listener for GET /metrics that
	// `piledger serve` uses by default. Config.MetricsAddr itself has no
	// default: empty serves no metrics listener.
	DefaultMetricsAddr = "127.0.0.1:9090"
)

// Config configures a [Server]. The zero value of each field means its
// Default* constant.
type Config struct {
	// GRPCAddr is the host:port the gRPC server listens on. Port 0 picks a
	// free port; see [Server.GRPCAddr].
	GRPCAddr string
	// HTTPAddr is the host:port the REST gateway listens on. Port 0 picks a
	// free port; see [Server.HTTPAddr].
	HTTPAddr string
	// MaxRequestBytes is the largest HTTP request body accepted; larger ones
	// get 413 Request Entity Too Large.
	MaxRequestBytes int64
	// MaxRecvMsgSize is the largest gRPC message accepted; larger ones get
	// RESOURCE_EXHAUSTED.
	MaxRecvMsgSize int
	// ShutdownTimeout bounds the graceful part of the shutdown in Run.
	ShutdownTimeout time.Duration

	// Auth turns on authentication and authorization (docs/SECURITY.md):
	// every method but health and reflection needs a verified credential,
	// the policy table decides what each caller may do, and every read of
	// a person's records by someone else is recorded in the log, so the
	// Log given to New must implement AccessLog. nil serves every method to
	// every caller, for tests and in-process tools only: New logs a
	// warning, and `piledger serve` always sets it.
	Auth *AuthConfig
	// TLS serves both listeners over TLS (see LoadTLSConfig). With
	// ClientCAs set, a verified client certificate identifies an emitter.
	TLS *tls.Config
	// InsecurePlaintext allows Auth without TLS on addresses other than
	// loopback, where credentials would cross the network in clear. Leave
	// it false unless a TLS-terminating proxy sits on the same host.
	InsecurePlaintext bool
	// MetricsAddr is the operator listener for GET /metrics (Prometheus
	// text format). Unlike the other fields, empty means no listener.
	MetricsAddr string
	// RateLimit is each caller's sustained calls per second; negative means
	// no limit.
	RateLimit float64
	// RateBurst is each caller's burst of calls.
	RateBurst int
}

// AuthConfig says which credentials the server accepts.
type AuthConfig struct {
	// APIKeys verifies emitters' API keys (OpenAPIKeyStore); nil accepts
	// none.
	APIKeys *APIKeyStore
	// Tokens verify the JWTs of subjects, regulators and admins, one
	// verifier per issuer; empty accepts none.
	Tokens []*TokenVerifier
	// Pseudonymize returns the pseudonym of a subject token's sub (the raw
	// subject reference); required with Tokens. crypto.Keyring.Pseudonym
	// is the one to use.
	Pseudonymize func(ref string) string
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxRecvMsgSize == 0 {
		c.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateBurst == 0 {
		c.RateBurst = DefaultRateBurst
	}
	return c
}

// Validate reports every problem with c as one error. Empty and zero fields
// are valid: they stand for the defaults.
func (c Config) Validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{{"gRPC address", c.GRPCAddr}, {"HTTP address", c.HTTPAddr}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", a.name, a.addr))
		}
	}
	if c.GRPCAddr != "" && c.GRPCAddr == c.HTTPAddr {
		if _, port, err := net.SplitHostPort(c.GRPCAddr); err == nil && port != "0" {
			errs = append(errs, fmt.Errorf("gRPC and HTTP addresses are both %q", c.GRPCAddr))
		}
	}
	if c.MaxRequestBytes < 0 {
		errs = append(errs, fmt.Errorf("max request bytes %d is negative", c.MaxRequestBytes))
	}
	if c.MaxRecvMsgSize < 0 {
		errs = append(errs, fmt.Errorf("max receive message size %d is negative", c.MaxRecvMsgSize))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %v is negative", c.ShutdownTimeout))
	}
	if c.RateBurst < 0 {
		errs = append(errs, fmt.Errorf("rate burst %d is negative", c.RateBurst))
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("metrics address %q: want host:port", c.MetricsAddr))
		}
	}
	if c.TLS != nil && len(c.TLS.Certificates) == 0 {
		errs = append(errs, errors.New("TLS config has no server certificate"))
	}
	if c.Auth != nil && c.TLS == nil && !c.InsecurePlaintext {
		d := c.withDefaults()
		for _, a := range []struct{ name, addr string }{{"gRPC address", d.GRPCAddr}, {"HTTP address", d.HTTPAddr}} {
			if !isLoopback(a.addr) {
				errs = append(errs, fmt.Errorf("%s %q is not loopback: serving credentials without TLS would send them in clear (give a TLS config, or set InsecurePlaintext behind a local TLS proxy)", a.name, a.addr))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("api: invalid config: %w", err)
	}
	return nil
}

// isLoopback reports whether host:port listens on loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
