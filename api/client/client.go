package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// userAgent names this SDK in the user agent of every call.
const userAgent = "piledger-go-client"

// Metadata the client sends with every call when a credential or a reason is
// configured.
const (
	// APIKeyMetadata is the gRPC metadata key carrying the API key, and the
	// token ([WithToken]).
	APIKeyMetadata = "authorization"
	// APIKeyScheme is the scheme in front of the key: "ApiKey <key>".
	APIKeyScheme = "ApiKey"
	// TokenScheme is the scheme in front of a token: "Bearer <token>".
	TokenScheme = "Bearer"
	// ReasonMetadata is the gRPC metadata key carrying the reason of
	// [WithReason], percent-encoded.
	ReasonMetadata = "x-piledger-reason"
)

// Client appends events to a piledger server over gRPC, and reads what the
// server derived from them (findings, due holdings, data maps).
//
// A Client is safe for concurrent use by any number of goroutines, and meant
// to be shared: one per process and server. It holds one gRPC connection,
// opened lazily and re-established after failures. Close releases it.
type Client struct {
	opts options
	conn *grpc.ClientConn
	rpc  piledgerv1.LedgerServiceClient

	slots   chan struct{} // one token per event emitted and not yet settled
	closing chan struct{} // closed when Close begins

	mu        sync.Mutex
	cur       *bundle              // the batch being filled, or nil
	open      map[*bundle]struct{} // batches filling or sent, not yet settled
	closed    bool                 // Close began; guarded by mu
	sends     sync.WaitGroup       // goroutines delivering batches
	closeOnce sync.Once            // Close's work runs once
	err       error                // Close's result
}

// Receipt is the server's acknowledgement of one event.
type Receipt struct {
	// EventID is the event's id.
	EventID string
	// Index is the event's position in the log (0-based Merkle leaf index).
	Index uint64
	// BlockSequence is the stream sequence of the block holding the event.
	BlockSequence uint64
	// BlockOffset is the event's offset inside its block.
	BlockOffset uint32
	// RecordedAt is when the ledger recorded the event.
	RecordedAt time.Time
	// Pseudonym is the subject's pseudonym ("" for events without a
	// subject): the name under which the subject's data map and timeline are
	// read.
	Pseudonym string
	// Duplicate is true when the event id had already been recorded and
	// this is the original receipt: the event was emitted again, or this
	// client retried after an answer was lost. Either way the log holds the
	// event once.
	Duplicate bool
}

func receiptFrom(r *piledgerv1.Receipt) *Receipt {
	return &Receipt{
		EventID:       r.GetEventId(),
		Index:         r.GetIndex(),
		BlockSequence: r.GetBlockSequence(),
		BlockOffset:   r.GetBlockOffset(),
		RecordedAt:    r.GetRecordedAt().AsTime(),
		Pseudonym:     r.GetPseudonym(),
		Duplicate:     r.GetDuplicate(),
	}
}

// New returns a client of the piledger gRPC server at target ("host:port",
// or any gRPC target such as "dns:///ledger.example:7070"). It does not
// connect: the connection is made on the first call and re-made after
// failures, so New succeeds while the server is down.
//
// Without a transport option the connection uses TLS with the system's root
// CAs. Errors wrap ErrInvalidOption: a failing option, more than one
// transport option, both an API key and a token, or a credential (API key or
// token) on a plaintext connection to a host that is not a loopback address.
func New(target string, opts ...Option) (*Client, error) {
	if strings.TrimSpace(target) == "" {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, errEmptyTarget)
	}
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := o.check(target); err != nil {
		return nil, err
	}

	var creds credentials.TransportCredentials
	switch {
	case o.insecure:
		creds = insecure.NewCredentials()
	case o.tlsConfig != nil:
		creds = credentials.NewTLS(o.tlsConfig)
	default:
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	ua := userAgent
	if o.userAgent != "" {
		ua = o.userAgent + " " + userAgent
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent(ua),
		// Reconnect quickly after a server restart: grpc's default backoff
		// grows to two minutes, longer than the retry policy waits.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if cc := o.callCreds(); cc != nil {
		dial = append(dial, grpc.WithPerRPCCredentials(cc))
	}
	dial = append(dial, o.dialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("%w: target %q: %w", ErrInvalidOption, target, err)
	}
	return &Client{
		opts:    o,
		conn:    conn,
		rpc:     piledgerv1.NewLedgerServiceClient(conn),
		slots:   make(chan struct{}, o.maxInFlight),
		closing: make(chan struct{}),
		open:    make(map[*bundle]struct{}),
	}, nil
}

// Close stops accepting events (Emit then fails with ErrClosed), sends the
// events already emitted and waits until each has settled — which takes at
// most the retry policy's MaxElapsed when the server is unreachable — then
// closes the connection. Use [Client.Flush] with a deadline first to bound
// the wait. Close is safe to call more than once; later calls return the
// first call's result.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		close(c.closing)
		if b := c.cur; b != nil {
			c.cur = nil
			c.sendLocked(b)
		}
		open := c.openLocked()
		c.mu.Unlock()
		for _, b := range open {
			<-b.done
		}
		c.sends.Wait()
		c.err = c.conn.Close()
	})
	return c.err
}

// Append appends events as one atomic batch, synchronously: either every
// event is recorded or none is. It returns one receipt per event, in order,
// once the server acknowledged them, which it does only after they are
// durably stored (fsynced by the log). It bypasses Emit's batching and its
// in-flight bound; the caller controls the batch (at most MaxBatchEvents
// events, a few MiB).
//
// Failed calls are retried under the retry policy while ctx allows, with the
// same event ids. Errors: an *InvalidEventError (errors.Is ErrInvalidEvent)
// whose violations carry the server's paths, indexed like events, when any
// event is malformed — nothing was recorded; ErrUnavailable when the retry
// policy gave up — the outcome is unknown and calling Append again with the
// same events is safe; ctx.Err() (wrapped) when ctx ended first — the events
// may still be recorded; ErrClosed after Close; ErrPermissionDenied
// (wrapping the status) when the credentials may not append an event, for
// example one of another processor than theirs — nothing was recorded.
// Other server errors are returned as gRPC status errors (status.Code works
// on them).
func (c *Client) Append(ctx context.Context, events ...Event) ([]*Receipt, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	if len(events) == 0 {
		return nil, &InvalidEventError{Violations: []FieldViolation{{Field: "events", Description: "must contain at least one event"}}}
	}
	pbs := make([]*piledgerv1.Event, len(events))
	for i, e := range events {
		ev, err := c.prepare(e)
		if err != nil {
			return nil, fmt.Errorf("client: events[%d]: %w", i, err)
		}
		pbs[i] = ev
	}
	req := &piledgerv1.AppendEventsRequest{Events: pbs}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		resp, err := c.call(ctx, req)
		if err == nil {
			if len(resp.GetReceipts()) != len(pbs) {
				return nil, fmt.Errorf("client: server returned %d receipts for %d events", len(resp.GetReceipts()), len(pbs))
			}
			out := make([]*Receipt, len(pbs))
			for i, r := range resp.GetReceipts() {
				out[i] = receiptFrom(r)
			}
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("client: append: %w", ctx.Err())
		}
		st := status.Convert(err)
		switch {
		case st.Code() == codes.InvalidArgument:
			if vs := badRequestViolations(st); len(vs) > 0 {
				return nil, &InvalidEventError{Violations: vs}
			}
			return nil, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
		case !retryable(st.Code()):
			return nil, callError("append", err)
		}
		delay := c.opts.retry.backoff(attempt, st)
		if c.opts.retry.giveUp(attempt, start, delay) {
			return nil, unavailable(err)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("client: append: %w (last attempt: %w)", ctx.Err(), err)
		}
	}
}

// call makes one AppendEvents attempt bounded by the call timeout.
func (c *Client) call(ctx context.Context, req *piledgerv1.AppendEventsRequest) (*piledgerv1.AppendEventsResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.callTimeout)
	defer cancel()
	return c.rpc.AppendEvents(ctx, req)
}

// prepare builds e's protobuf form and fills in what the caller left out:
// the event id (a new UUIDv7, fixed from now on), the time and the
// processor.
func (c *Client) prepare(e Event) (*piledgerv1.Event, error) {
	if e == nil {
		return nil, errors.New("nil event")
	}
	ev := e.build()
	if ev == nil {
		return nil, errors.New("nil event")
	}
	if ev.EventId == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("generate event id: %w", err)
		}
		ev.EventId = id.String()
	}
	if ev.OccurredAt == nil {
		ev.OccurredAt = timestamppb.Now()
	}
	if ev.Processor == "" {
		ev.Processor = c.opts.processor
	}
	return ev, nil
}

func (c *Client) isClosed() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// callCreds sends the credential (API key or token) and the reason with
// every call.
type callCreds struct {
	authorization string // "ApiKey <key>", "Bearer <token>" or ""
	reason        string // percent-encoded, or ""
	requireTLS    bool
}

func (c callCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	md := make(map[string]string, 2)
	if c.authorization != "" {
		md[APIKeyMetadata] = c.authorization
	}
	if c.reason != "" {
		md[ReasonMetadata] = c.reason
	}
	return md, nil
}

func (c callCreds) RequireTransportSecurity() bool { return c.requireTLS }

// isLoopback reports whether a gRPC target names this machine.
func isLoopback(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	if i := strings.Index(target, ":///"); i >= 0 {
		target = target[i+4:]
	}
	host := target
	if h, _, err := net.SplitHostPort(target); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
