package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc"
)

// Defaults of the options. Each one is the value used when its option is not
// given.
const (
	// DefaultCountThreshold is how many events [Client.Emit] collects before
	// it sends them in one AppendEvents call (Pub/Sub's default). Larger
	// batches cost the server less per event; the server takes at most 1000.
	DefaultCountThreshold = 100

	// DefaultByteThreshold is how many bytes of encoded events Emit collects
	// before it sends them. It must stay below the server's maximum message
	// size (4 MiB by default).
	DefaultByteThreshold = 1 << 20

	// DefaultDelayThreshold is how long Emit waits for more events before it
	// sends a batch that reached neither count nor byte threshold (Pub/Sub's
	// default). It is the latency Emit adds at low traffic; raise it to save
	// calls, lower it (or use [Client.Flush] or [Client.Append]) to get
	// receipts sooner.
	DefaultDelayThreshold = 10 * time.Millisecond

	// DefaultMaxInFlight bounds the events emitted but not yet settled (sent
	// and answered, or given up). Beyond it Emit blocks, or fails with
	// ErrPushback under [WithPushback]. It bounds the memory a slow or
	// unreachable server can make the client hold.
	DefaultMaxInFlight = 10_000

	// DefaultCallTimeout bounds one attempt of a call (AppendEvents, or a
	// read). An append attempt that times out is retried with the same
	// event ids.
	DefaultCallTimeout = 30 * time.Second

	// DefaultInitialBackoff, DefaultMaxBackoff, DefaultBackoffMultiplier and
	// DefaultMaxElapsed make the default [RetryPolicy]: 100 ms, doubling up
	// to 5 s between attempts, for at most one minute per batch.
	DefaultInitialBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff        = 5 * time.Second
	DefaultBackoffMultiplier = 2.0
	DefaultMaxElapsed        = time.Minute

	// MaxBatchEvents is the most events one AppendEvents call may carry (the
	// server's limit).
	MaxBatchEvents = 1000

	// MaxBatchBytes is the largest byte threshold accepted: the server's
	// default maximum gRPC message size.
	MaxBatchBytes = 4 << 20

	// MaxTokenBytes is the largest token [WithToken] accepts: the server
	// refuses larger ones.
	MaxTokenBytes = 8 << 10

	// MaxReasonBytes is the longest reason [WithReason] accepts, in bytes of
	// UTF-8: the ledger's limit on an access event's reason.
	MaxReasonBytes = 1024
)

// Option configures a [Client]. Options validate their arguments: [New]
// returns the first option error, wrapped around [ErrInvalidOption].
type Option func(*options) error

// options is the configuration New builds from Options.
type options struct {
	processor string
	userAgent string
	apiKey    string
	token     string
	reason    string

	insecure  bool
	tlsConfig *tls.Config
	transport []string // names of the transport options given, to reject combinations

	countThreshold int
	byteThreshold  int
	delayThreshold time.Duration
	maxInFlight    int
	pushback       bool
	callTimeout    time.Duration
	retry          RetryPolicy

	dialOptions []grpc.DialOption
}

func defaultOptions() options {
	return options{
		countThreshold: DefaultCountThreshold,
		byteThreshold:  DefaultByteThreshold,
		delayThreshold: DefaultDelayThreshold,
		maxInFlight:    DefaultMaxInFlight,
		callTimeout:    DefaultCallTimeout,
		retry:          DefaultRetryPolicy(),
	}
}

func optionError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}

// WithProcessor sets the processor (the personal-information handler, such as
// "acme-gates") of every event that does not name one. An emitter is usually
// bound to one processor id.
func WithProcessor(id string) Option {
	return func(o *options) error {
		if id == "" {
			return optionError("WithProcessor: empty processor id")
		}
		o.processor = id
		return nil
	}
}

// WithAPIKey sends key with every call, as the gRPC metadata
// "authorization: ApiKey <key>". The key is a secret: read it from a file or
// the environment, never from a command line. New refuses an API key on a
// plaintext connection ([WithInsecure]) to anything but a loopback address.
func WithAPIKey(key string) Option {
	return func(o *options) error {
		switch {
		case key == "":
			return optionError("WithAPIKey: empty key")
		case strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			return optionError("WithAPIKey: the key contains white space or control characters")
		}
		o.apiKey = key
		return nil
	}
}

// WithToken sends token, a JWT, with every call, as the gRPC metadata
// "authorization: Bearer <token>": the credential of a data subject, a
// regulator or an admin (see docs/SECURITY.md; `piledger token` issues them
// from the server's local issuer). An emitter uses an API key or a client
// certificate instead: WithToken and [WithAPIKey] exclude each other. The
// token is a secret — a subject's token is as sensitive as their subject
// reference: read it from a file or the environment, never from a command
// line. New refuses a token on a plaintext connection ([WithInsecure]) to
// anything but a loopback address. Regulators and admins also need
// [WithReason] to read people's records.
func WithToken(token string) Option {
	return func(o *options) error {
		switch {
		case token == "":
			return optionError("WithToken: empty token")
		case len(token) > MaxTokenBytes:
			return optionError("WithToken: the token is longer than %d bytes", MaxTokenBytes)
		case strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			return optionError("WithToken: the token contains white space or control characters (give the token alone, without the Bearer scheme)")
		}
		o.token = token
		return nil
	}
}

// WithReason sends reason with every call, as the gRPC metadata
// "x-piledger-reason": why the caller reads people's records (a case or
// request reference). Regulators and admins must give one to read personal
// data (a data map, due holdings, findings); without it the server answers
// INVALID_ARGUMENT on x-piledger-reason. The server records the reason, in
// the encrypted access event it appends for every person whose records it
// returns, and never logs it. Subjects and emitters need none.
//
// reason is any UTF-8 text of at most MaxReasonBytes bytes, without control
// characters (line breaks included) and not only white space; it is
// percent-encoded on the wire, so non-ASCII text travels in the ASCII-only
// metadata and comes back intact.
func WithReason(reason string) Option {
	return func(o *options) error {
		switch {
		case strings.TrimSpace(reason) == "":
			return optionError("WithReason: empty reason")
		case len(reason) > MaxReasonBytes:
			return optionError("WithReason: the reason is longer than %d bytes", MaxReasonBytes)
		case !utf8.ValidString(reason):
			return optionError("WithReason: the reason is not valid UTF-8")
		case strings.ContainsFunc(reason, unicode.IsControl):
			return optionError("WithReason: the reason contains control characters")
		}
		o.reason = reason
		return nil
	}
}

// WithTLSConfig uses TLS with a copy of cfg: custom root CAs, a client
// certificate for mutual TLS (cfg.Certificates or GetClientCertificate), a
// server name. Without any transport option the client uses TLS with the
// system's root CAs.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) error {
		if cfg == nil {
			return optionError("WithTLSConfig: nil config")
		}
		o.tlsConfig = cfg.Clone()
		o.transport = append(o.transport, "WithTLSConfig")
		return nil
	}
}

// WithTLSFiles uses TLS with PEM files: caFile holds the root CAs that sign
// the server's certificate ("" = the system's roots); certFile and keyFile
// hold the client certificate and key for mutual TLS (both "" = no client
// certificate). The files are read when the option is applied.
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(o *options) error {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return optionError("WithTLSFiles: CA file: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return optionError("WithTLSFiles: CA file %s holds no PEM certificate", caFile)
			}
			cfg.RootCAs = pool
		}
		switch {
		case certFile == "" && keyFile == "":
		case certFile == "" || keyFile == "":
			return optionError("WithTLSFiles: a client certificate needs both certFile and keyFile")
		default:
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return optionError("WithTLSFiles: client certificate: %v", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		o.tlsConfig = cfg
		o.transport = append(o.transport, "WithTLSFiles")
		return nil
	}
}

// WithInsecure uses a plaintext connection, for a server on the same machine
// (127.0.0.1, ::1, localhost) or in tests. Everything, including event
// contents, crosses the network in clear.
func WithInsecure() Option {
	return func(o *options) error {
		o.insecure = true
		o.transport = append(o.transport, "WithInsecure")
		return nil
	}
}

// WithBatching sets when [Client.Emit] sends the events it collected: as soon
// as count events or maxBytes bytes (protobuf encoding) are waiting, or delay
// after the first of them arrived, whichever comes first. count must be in
// 1..MaxBatchEvents and maxBytes in 1 KiB..MaxBatchBytes; delay 0 sends every
// event at once (no batching in time). Defaults: DefaultCountThreshold,
// DefaultByteThreshold, DefaultDelayThreshold.
//
// Batching trades latency for cost: one call and one server round trip carry
// many events. Events of one batch are appended atomically, but Emit keeps
// them independent: an invalid event fails alone (see [Client.Emit]).
func WithBatching(count, maxBytes int, delay time.Duration) Option {
	return func(o *options) error {
		switch {
		case count < 1 || count > MaxBatchEvents:
			return optionError("WithBatching: count %d must be in 1..%d", count, MaxBatchEvents)
		case maxBytes < 1<<10 || maxBytes > MaxBatchBytes:
			return optionError("WithBatching: maxBytes %d must be in 1024..%d", maxBytes, MaxBatchBytes)
		case delay < 0:
			return optionError("WithBatching: negative delay %v", delay)
		}
		o.countThreshold, o.byteThreshold, o.delayThreshold = count, maxBytes, delay
		return nil
	}
}

// WithMaxInFlight bounds the events emitted with [Client.Emit] and not yet
// settled. When n are in flight, Emit blocks until one settles or its context
// ends; with [WithPushback] it fails at once with ErrPushback instead.
// Default DefaultMaxInFlight.
func WithMaxInFlight(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return optionError("WithMaxInFlight: %d must be >= 1", n)
		}
		o.maxInFlight = n
		return nil
	}
}

// WithPushback makes [Client.Emit] fail at once with ErrPushback when the
// in-flight bound is reached, instead of blocking: for callers that must not
// wait (request handlers) and would rather shed or queue the event
// themselves.
func WithPushback() Option {
	return func(o *options) error {
		o.pushback = true
		return nil
	}
}

// WithRetry replaces the retry policy. See [RetryPolicy] for what is retried.
func WithRetry(p RetryPolicy) Option {
	return func(o *options) error {
		if err := p.validate(); err != nil {
			return err
		}
		o.retry = p
		return nil
	}
}

// WithCallTimeout bounds each attempt of a call — AppendEvents, and the
// reads (default DefaultCallTimeout). A timed-out attempt is retried under
// the retry policy.
func WithCallTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return optionError("WithCallTimeout: %v must be positive", d)
		}
		o.callTimeout = d
		return nil
	}
}

// WithUserAgent puts s in front of the client's user agent, to tell emitters
// apart in server logs.
func WithUserAgent(s string) Option {
	return func(o *options) error {
		if s == "" {
			return optionError("WithUserAgent: empty user agent")
		}
		o.userAgent = s
		return nil
	}
}

// WithDialOptions adds gRPC dial options after the client's own (transport
// credentials, user agent, connection backoff), so they can override them:
// interceptors, keepalive, a custom dialer. Options that change the transport
// security conflict with the transport options of this package.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) error {
		o.dialOptions = append(o.dialOptions, opts...)
		return nil
	}
}

// check rejects option combinations that cannot be meant: two transports,
// two credentials, a credential sent in clear across a network.
func (o *options) check(target string) error {
	if len(o.transport) > 1 {
		return optionError("%s exclude each other", strings.Join(o.transport, " and "))
	}
	if o.apiKey != "" && o.token != "" {
		return optionError("WithAPIKey and WithToken exclude each other: an emitter presents an API key (or a client certificate), a subject, regulator or admin a token")
	}
	if o.insecure && !isLoopback(target) {
		switch {
		case o.apiKey != "":
			return optionError("an API key on a plaintext connection (WithInsecure) is only allowed to a loopback address; use TLS for %s", target)
		case o.token != "":
			return optionError("a token on a plaintext connection (WithInsecure) is only allowed to a loopback address; use TLS for %s", target)
		}
	}
	return nil
}

// callCreds returns the per-call credentials of the options, or nil when
// there is nothing to send. A reason is percent-encoded as the piledger
// command does (url.PathEscape), which the server decodes.
func (o *options) callCreds() *callCreds {
	cc := callCreds{requireTLS: !o.insecure}
	switch {
	case o.apiKey != "":
		cc.authorization = APIKeyScheme + " " + o.apiKey
	case o.token != "":
		cc.authorization = TokenScheme + " " + o.token
	}
	if o.reason != "" {
		cc.reason = url.PathEscape(o.reason)
	}
	if cc.authorization == "" && cc.reason == "" {
		return nil
	}
	return &cc
}

var errEmptyTarget = errors.New("empty target")
