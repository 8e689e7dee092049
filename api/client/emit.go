package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Pending is the outcome of one [Client.Emit]. It settles exactly once: with
// a receipt when the server recorded the event, or with an error. It is safe
// for concurrent use.
type Pending struct {
	id   string
	done chan struct{}
	r    *Receipt
	err  error
	c    *Client // set while the event holds an in-flight slot
}

// EventID returns the event's id: the one it was emitted with, or the UUIDv7
// generated for it. It is "" only when Emit failed before an id existed.
// Store it if you may need to emit the event again after a crash: the same id
// makes that safe.
func (p *Pending) EventID() string { return p.id }

// Ready returns a channel closed once the event has settled; Get then
// returns at once.
func (p *Pending) Ready() <-chan struct{} { return p.done }

// Get waits until the event has settled or ctx is done. Its receipt means the
// event is durably recorded: the server answers only after the log's block
// holding it was fsynced (see the package documentation for what that covers).
//
// Errors: an *InvalidEventError (errors.Is ErrInvalidEvent) — the event was
// rejected and is not recorded; ErrUnavailable — the retry policy gave up,
// the outcome is unknown, emitting the same event again (same id) is safe;
// ErrPermissionDenied (wrapping the status) — the credentials may not append
// it, for example an event of another processor than theirs, and it is not
// recorded; ErrPushback or ErrClosed — the event was never sent; the context
// error of Emit's ctx when it ended before the event was admitted — never
// sent; ctx.Err() of Get's own ctx — Get stopped waiting, but the event is
// still on its way and a later Get returns its outcome.
func (p *Pending) Get(ctx context.Context) (*Receipt, error) {
	select {
	case <-p.done:
		return p.r, p.err
	default:
	}
	select {
	case <-p.done:
		return p.r, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// settle records the outcome, frees the in-flight slot and wakes waiters.
func (p *Pending) settle(r *Receipt, err error) {
	p.r, p.err = r, err
	if p.c != nil {
		<-p.c.slots
		p.c = nil
	}
	close(p.done)
}

// item is one event id waiting in a batch, with every Pending emitted for it
// while it waited (the first Emit and any re-emit of the same id).
type item struct {
	ev      *piledgerv1.Event
	size    int
	waiters []*Pending
}

func (it *item) settle(r *piledgerv1.Receipt, err error) {
	for _, p := range it.waiters {
		if err != nil {
			p.settle(nil, err)
		} else {
			p.settle(receiptFrom(r), nil)
		}
	}
}

func settleAll(items []*item, err error) {
	for _, it := range items {
		it.settle(nil, err)
	}
}

// bundle is a batch of events Emit collects and sends in one call.
type bundle struct {
	items []*item
	byID  map[string]*item
	bytes int
	timer *time.Timer
	done  chan struct{} // closed when every item has settled
}

// Emit queues e to be appended in the background, batched with other events
// emitted by any goroutine (see [WithBatching]), and returns at once with a
// [Pending] to wait on. Errors are reported by Pending.Get, never by Emit.
//
// The event's id is fixed here: the given EventID, or a new UUIDv7. Every
// attempt to send it reuses that id, so retries after timeouts and server
// restarts never record it twice.
//
// ctx bounds only Emit itself: when it is already done, or ends while Emit
// waits for room under the in-flight bound ([WithMaxInFlight]), the event is
// not sent and Get returns ctx's error. Once Emit has returned, the event is
// sent whatever becomes of ctx. With [WithPushback], Emit does not wait for
// room: the event fails with ErrPushback.
//
// Events of one batch travel in one AppendEvents call, which the server
// applies atomically; Emit keeps them independent of each other: when the
// server rejects some events as malformed, those fail with an
// *InvalidEventError and the others are sent again without them.
//
// Emit takes a copy of e; the caller may reuse e and what it points to.
func (c *Client) Emit(ctx context.Context, e Event) *Pending {
	p := &Pending{done: make(chan struct{})}
	ev, err := c.prepare(e)
	if err != nil {
		p.settle(nil, fmt.Errorf("client: emit: %w", err))
		return p
	}
	p.id = ev.GetEventId()
	if err := c.acquire(ctx); err != nil {
		p.settle(nil, err)
		return p
	}
	p.c = c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		p.settle(nil, ErrClosed)
		return p
	}
	c.addLocked(&item{ev: ev, size: proto.Size(ev) + 8, waiters: []*Pending{p}})
	return p
}

// acquire takes an in-flight slot.
func (c *Client) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("client: emit: %w", err)
	}
	if c.isClosed() {
		return ErrClosed
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	if c.opts.pushback {
		return ErrPushback
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("client: emit: waiting for room in flight: %w", ctx.Err())
	case <-c.closing:
		return ErrClosed
	}
}

// addLocked puts it in the current batch and sends the batch when a
// threshold is reached. c.mu must be held.
func (c *Client) addLocked(it *item) {
	id := it.ev.GetEventId()
	if b := c.cur; b != nil {
		if prev, ok := b.byID[id]; ok {
			// The same id is already waiting: one event, several waiters.
			prev.waiters = append(prev.waiters, it.waiters...)
			return
		}
		if len(b.items) > 0 && b.bytes+it.size > c.opts.byteThreshold {
			c.cur = nil
			c.sendLocked(b)
		}
	}
	if c.cur == nil {
		b := &bundle{byID: make(map[string]*item), done: make(chan struct{})}
		c.cur = b
		c.open[b] = struct{}{}
		if d := c.opts.delayThreshold; d > 0 {
			b.timer = time.AfterFunc(d, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				if c.cur == b {
					c.cur = nil
					c.sendLocked(b)
				}
			})
		}
	}
	b := c.cur
	b.items = append(b.items, it)
	b.byID[id] = it
	b.bytes += it.size
	if len(b.items) >= c.opts.countThreshold || b.bytes >= c.opts.byteThreshold || c.opts.delayThreshold == 0 {
		c.cur = nil
		c.sendLocked(b)
	}
}

// sendLocked delivers b in the background. c.mu must be held and b must no
// longer be c.cur.
func (c *Client) sendLocked(b *bundle) {
	if b.timer != nil {
		b.timer.Stop()
	}
	c.sends.Add(1)
	go func() {
		defer c.sends.Done()
		c.deliver(b.items)
		c.mu.Lock()
		delete(c.open, b)
		c.mu.Unlock()
		close(b.done)
	}()
}

// openLocked returns the batches not yet settled. c.mu must be held.
func (c *Client) openLocked() []*bundle {
	out := make([]*bundle, 0, len(c.open))
	for b := range c.open {
		out = append(out, b)
	}
	return out
}

// Flush sends the events waiting for a batch threshold now, and waits until
// every event emitted before Flush was called has settled, or ctx is done
// (then it returns ctx.Err(); the events are still on their way). Each
// event's own outcome is reported by its Pending.
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	if b := c.cur; b != nil {
		c.cur = nil
		c.sendLocked(b)
	}
	open := c.openLocked()
	c.mu.Unlock()
	for _, b := range open {
		select {
		case <-b.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// deliver appends items in one call and settles each of them, retrying under
// the retry policy. Malformed events are settled with their violations and
// the rest sent again; a batch refused as a whole is split in halves.
func (c *Client) deliver(items []*item) {
	pol := c.opts.retry
	start := time.Now()
	attempt := 0
	for len(items) > 0 {
		req := &piledgerv1.AppendEventsRequest{Events: make([]*piledgerv1.Event, len(items))}
		for i, it := range items {
			req.Events[i] = it.ev
		}
		resp, err := c.call(context.Background(), req)
		if err == nil {
			rs := resp.GetReceipts()
			if len(rs) != len(items) {
				settleAll(items, fmt.Errorf("client: server returned %d receipts for %d events", len(rs), len(items)))
				return
			}
			for i, it := range items {
				it.settle(rs[i], nil)
			}
			return
		}
		st := status.Convert(err)
		switch {
		case st.Code() == codes.InvalidArgument:
			perEvent, whole := splitViolations(badRequestViolations(st), len(items))
			if len(perEvent) == 0 {
				if len(whole) > 0 && len(items) > 1 {
					mid := len(items) / 2
					c.deliver(items[:mid])
					c.deliver(items[mid:])
					return
				}
				if len(whole) == 0 {
					settleAll(items, fmt.Errorf("%w: %w", ErrInvalidEvent, err))
					return
				}
				// One event, refused as a batch: it is at fault as a whole.
				vs := make([]FieldViolation, len(whole))
				for i, v := range whole {
					vs[i] = FieldViolation{Description: v.Description}
				}
				items[0].settle(nil, &InvalidEventError{EventID: items[0].ev.GetEventId(), Violations: vs})
				return
			}
			rest := items[:0:0]
			for i, it := range items {
				if vs, bad := perEvent[i]; bad {
					it.settle(nil, &InvalidEventError{EventID: it.ev.GetEventId(), Violations: vs})
				} else {
					rest = append(rest, it)
				}
			}
			items = rest
			continue
		case !retryable(st.Code()):
			settleAll(items, callError("append", err))
			return
		}
		attempt++
		delay := pol.backoff(attempt, st)
		if pol.giveUp(attempt, start, delay) {
			settleAll(items, unavailable(err))
			return
		}
		time.Sleep(delay)
	}
}
