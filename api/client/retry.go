package client

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RetryPolicy says how a failed call is retried: AppendEvents, and the
// reads ([Client.ListFindings], [Client.ListDueHoldings], [Client.DataMap],
// ...), which are safe to repeat.
//
// Only UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED are retried:
// they mean the server could not take the events now, or the answer was
// lost. Retrying is safe because every event's id is fixed once, before the
// first attempt, and the server records an id at most once: a retry of an
// event that did reach the log returns its original receipt (with
// Receipt.Duplicate set). Every other failure is final.
//
// The delay before retry n (n = 1, 2, ...) is drawn at random between half
// and all of min(MaxBackoff, InitialBackoff × Multiplier^(n-1)) (exponential
// backoff with jitter), and is at least the server's google.rpc.RetryInfo
// delay when it sends one (capped at MaxBackoff).
type RetryPolicy struct {
	// InitialBackoff is the delay before the first retry.
	InitialBackoff time.Duration
	// MaxBackoff caps the delay between attempts.
	MaxBackoff time.Duration
	// Multiplier grows the delay after each attempt; >= 1.
	Multiplier float64
	// MaxElapsed bounds the time spent on one batch, from its first attempt:
	// no retry starts later than this (0: no retries). The events then fail
	// with ErrUnavailable (their outcome is unknown; emitting the same events
	// again, with the same ids, is safe).
	MaxElapsed time.Duration
	// MaxAttempts bounds the attempts per batch, the first included; 0
	// means no bound other than MaxElapsed. 1 disables retries.
	MaxAttempts int
}

// DefaultRetryPolicy returns the policy used without [WithRetry].
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		InitialBackoff: DefaultInitialBackoff,
		MaxBackoff:     DefaultMaxBackoff,
		Multiplier:     DefaultBackoffMultiplier,
		MaxElapsed:     DefaultMaxElapsed,
	}
}

func (p RetryPolicy) validate() error {
	switch {
	case p.InitialBackoff <= 0:
		return optionError("RetryPolicy.InitialBackoff %v must be positive", p.InitialBackoff)
	case p.MaxBackoff < p.InitialBackoff:
		return optionError("RetryPolicy.MaxBackoff %v must be >= InitialBackoff %v", p.MaxBackoff, p.InitialBackoff)
	case p.Multiplier < 1 || math.IsInf(p.Multiplier, 0) || math.IsNaN(p.Multiplier):
		return optionError("RetryPolicy.Multiplier %v must be a number >= 1", p.Multiplier)
	case p.MaxElapsed < 0:
		return optionError("RetryPolicy.MaxElapsed %v must not be negative", p.MaxElapsed)
	case p.MaxAttempts < 0:
		return optionError("RetryPolicy.MaxAttempts %d must not be negative", p.MaxAttempts)
	}
	return nil
}

// backoff returns the delay before retry n (n >= 1) after a failure with
// status st.
func (p RetryPolicy) backoff(n int, st *status.Status) time.Duration {
	d := float64(p.InitialBackoff) * math.Pow(p.Multiplier, float64(n-1))
	if d > float64(p.MaxBackoff) {
		d = float64(p.MaxBackoff)
	}
	delay := time.Duration(d/2 + rand.Float64()*d/2)
	if hint := retryInfoDelay(st); hint > delay {
		delay = min(hint, p.MaxBackoff)
	}
	return delay
}

// giveUp reports whether no retry may follow attempt n (n >= 1) of a batch
// first tried at start, given the delay the retry would wait first.
func (p RetryPolicy) giveUp(n int, start time.Time, delay time.Duration) bool {
	if p.MaxAttempts > 0 && n >= p.MaxAttempts {
		return true
	}
	return time.Since(start)+delay > p.MaxElapsed
}

// retryable reports whether a call that failed with code may be retried.
func retryable(code codes.Code) bool {
	switch code {
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// retryInfoDelay returns the google.rpc.RetryInfo delay of st, or 0.
func retryInfoDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().IsValid() {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// retryRead makes the read call (named op in errors) under c's retry policy,
// each attempt bounded by the call timeout, while ctx allows. Errors:
// ErrClosed after Close; ctx.Err() (wrapped) when ctx ended first;
// ErrUnavailable wrapping the last status when the policy gave up; else the
// status error, wrapped by callError.
func retryRead[T any](ctx context.Context, c *Client, op string, call func(context.Context) (T, error)) (T, error) {
	var zero T
	if c.isClosed() {
		return zero, ErrClosed
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, c.opts.callTimeout)
		resp, err := call(callCtx)
		cancel()
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return zero, fmt.Errorf("client: %s: %w", op, ctx.Err())
		}
		st := status.Convert(err)
		if !retryable(st.Code()) {
			return zero, callError(op, err)
		}
		delay := c.opts.retry.backoff(attempt, st)
		if c.opts.retry.giveUp(attempt, start, delay) {
			return zero, unavailable(err)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return zero, fmt.Errorf("client: %s: %w (last attempt: %w)", op, ctx.Err(), err)
		}
	}
}
