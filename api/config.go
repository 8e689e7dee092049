package api

import (
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
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("api: invalid config: %w", err)
	}
	return nil
}
