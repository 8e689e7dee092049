package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/api/client"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// collect is a valid event: a camera collecting a face in a public place.
func collect(ref string) client.Collect {
	return client.Collect{
		Subject:    ref,
		Categories: []string{"face"},
		Purpose:    "public-safety",
		LegalBasis: "legal-duty",
		Place:      &client.Place{Kind: "public-street", NoticeSignRef: "sign-12"},
		Retention:  &client.Retention{Minimum: 30 * 24 * time.Hour, KeepFor: 90 * 24 * time.Hour},
		System:     "gate-cam-7",
	}
}

// transferNoCountry is invalid: a transfer abroad must name the country.
func transferNoCountry(ref string) client.TransferAbroad {
	return client.TransferAbroad{
		Subject:    ref,
		Categories: []string{"name"},
		Purpose:    "contract-performance",
		Recipient:  client.Recipient{Processor: "logistics-hk"},
	}
}

func ref(i int) string { return fmt.Sprintf("resident-%06d", i) }

// countCalls returns a dial option counting AppendEvents attempts, and the
// attempts that failed with UNAVAILABLE.
func countCalls() (opt grpc.DialOption, calls, unavailable *atomic.Int64) {
	calls, unavailable = new(atomic.Int64), new(atomic.Int64)
	opt = grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) == codes.Unavailable {
			unavailable.Add(1)
		}
		return err
	})
	return opt, calls, unavailable
}

func newClient(t testing.TB, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(addr, append([]client.Option{client.WithInsecure(), client.WithProcessor("city-police")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// checkLog checks that the log holds exactly the receipted events, each
// once, at the index its receipt gave.
func checkLog(t *testing.T, s *stack, receipts map[string]*client.Receipt) {
	t.Helper()
	entries := s.entries(t)
	if len(entries) != len(receipts) {
		t.Errorf("the log holds %d events, want %d", len(entries), len(receipts))
	}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		id := e.GetHeader().GetEventId()
		if seen[id] {
			t.Errorf("event %s is in the log twice", id)
		}
		seen[id] = true
		r, ok := receipts[id]
		switch {
		case !ok:
			t.Errorf("the log holds event %s, which has no receipt", id)
		case r.Index != e.GetIndex():
			t.Errorf("event %s is at index %d, its receipt says %d", id, e.GetIndex(), r.Index)
		}
	}
}

// getAll waits for every pending event and returns the receipts by event id;
// it fails the test for any error, a receipt for another id, or two events
// with one index.
func getAll(t *testing.T, pending []*client.Pending) map[string]*client.Receipt {
	t.Helper()
	out := make(map[string]*client.Receipt, len(pending))
	byIndex := make(map[uint64]string, len(pending))
	for _, p := range pending {
		r, err := p.Get(context.Background())
		if err != nil {
			t.Errorf("event %s: %v", p.EventID(), err)
			continue
		}
		if r.EventID != p.EventID() {
			t.Errorf("receipt for %s answers Emit of %s", r.EventID, p.EventID())
		}
		if other, dup := byIndex[r.Index]; dup {
			t.Errorf("events %s and %s both got index %d", other, r.EventID, r.Index)
		}
		byIndex[r.Index] = r.EventID
		out[r.EventID] = r
	}
	return out
}

// TestEmitConcurrent has many goroutines emit at once: every event gets its
// own receipt, the events travel in far fewer calls than events, and the log
// holds each event once.
func TestEmitConcurrent(t *testing.T) {
	s := newStack(t, t.TempDir(), stackOptions{})
	count, calls, _ := countCalls()
	c := newClient(t, s.addr, client.WithDialOptions(count))

	const goroutines, each = 32, 100
	pending := make([][]*client.Pending, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				pending[g] = append(pending[g], c.Emit(t.Context(), collect(ref(g*each+i))))
			}
		})
	}
	wg.Wait()
	all := slices.Concat(pending...)
	receipts := getAll(t, all)
	for _, r := range receipts {
		if r.Duplicate || r.Pseudonym == "" || r.RecordedAt.IsZero() {
			t.Fatalf("receipt %+v: want a first recording with pseudonym and time", r)
		}
	}
	if n := calls.Load(); n == 0 || n > int64(len(all))/4 {
		t.Errorf("%d AppendEvents calls for %d events: Emit did not batch", n, len(all))
	}
	t.Logf("%d events in %d calls", len(all), calls.Load())
	checkLog(t, s, receipts)
}

// TestEmitSameID emits one event id twice into one batch and once more
// later: every Emit gets the event's receipt, the log holds it once.
func TestEmitSameID(t *testing.T) {
	s := newStack(t, t.TempDir(), stackOptions{})
	c := newClient(t, s.addr, client.WithBatching(100, 1<<20, time.Hour))
	ev := collect(ref(1))
	ev.EventID = uuid.Must(uuid.NewV7()).String()
	first, second := c.Emit(t.Context(), ev), c.Emit(t.Context(), ev)
	if err := c.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	r1, err1 := first.Get(t.Context())
	r2, err2 := second.Get(t.Context())
	if err1 != nil || err2 != nil || r1.Index != r2.Index || r1.EventID != ev.EventID {
		t.Fatalf("same id twice in one batch: %+v %v, %+v %v", r1, err1, r2, err2)
	}
	third := c.Emit(t.Context(), ev)
	if err := c.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	r3, err := third.Get(t.Context())
	if err != nil || !r3.Duplicate || r3.Index != r1.Index {
		t.Fatalf("re-emit after it was recorded: %+v %v, want the original receipt marked duplicate", r3, err)
	}
	checkLog(t, s, map[string]*client.Receipt{ev.EventID: r1})
}

// TestRetryAcrossRestart stops the server while writers emit, keeps emitting
// while it is down, and restarts it on the same data directory and port:
// every pending event completes, and the log holds each event once.
func TestRetryAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s := newStack(t, dir, stackOptions{})
	addr := s.addr
	count, calls, unavailable := countCalls()
	c := newClient(t, addr, client.WithDialOptions(count),
		client.WithBatching(20, 1<<20, 2*time.Millisecond),
		client.WithRetry(client.RetryPolicy{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Multiplier: 2, MaxElapsed: 5 * time.Minute}))

	const writers, each, stopAfter, whileDown = 8, 200, 300, 200
	var emitted atomic.Int64
	stopNow, restarted := make(chan struct{}), make(chan struct{})
	var downCount atomic.Int64 // events emitted while the server was down
	var isDown atomic.Bool
	pending := make([][]*client.Pending, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				pending[w] = append(pending[w], c.Emit(t.Context(), collect(ref(w*each+i))))
				if isDown.Load() {
					downCount.Add(1)
				}
				if emitted.Add(1) == stopAfter {
					close(stopNow)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}

	<-stopNow
	isDown.Store(true)
	if err := s.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// Keep emitting into the outage for a while.
	for downCount.Load() < whileDown && emitted.Load() < writers*each {
		time.Sleep(time.Millisecond)
	}
	s2 := newStack(t, dir, stackOptions{grpcAddr: addr})
	isDown.Store(false)
	close(restarted)
	wg.Wait()

	receipts := getAll(t, slices.Concat(pending...))
	if len(receipts) != writers*each {
		t.Fatalf("%d receipts for %d events", len(receipts), writers*each)
	}
	if unavailable.Load() == 0 || downCount.Load() == 0 {
		t.Errorf("the outage was not exercised: %d failed attempts, %d events emitted while down", unavailable.Load(), downCount.Load())
	}
	t.Logf("%d events, %d emitted during the outage, %d calls of which %d UNAVAILABLE", len(receipts), downCount.Load(), calls.Load(), unavailable.Load())
	checkLog(t, s2, receipts)
}

// TestInvalidEvents checks that the server's field violations come back as
// typed errors, that one malformed event does not fail the others of its
// batch, and that nothing malformed is recorded.
func TestInvalidEvents(t *testing.T) {
	s := newStack(t, t.TempDir(), stackOptions{})
	c := newClient(t, s.addr, client.WithBatching(100, 1<<20, time.Hour)) // one batch, sent by Flush

	good1 := c.Emit(t.Context(), collect(ref(1)))
	bad1 := c.Emit(t.Context(), transferNoCountry(ref(2)))
	bad2 := c.Emit(t.Context(), client.Access{Subject: ref(3), Categories: []string{"face"}, Reason: "case 7"})
	good2 := c.Emit(t.Context(), client.Destroy{Subject: ref(1), Categories: []string{"face"}})
	if err := c.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	receipts := getAll(t, []*client.Pending{good1, good2})

	for _, test := range []struct {
		p    *client.Pending
		want []client.FieldViolation
	}{
		{bad1, []client.FieldViolation{{Field: "recipient.country", Description: "is required for OPERATION_TRANSFER_ABROAD"}}},
		{bad2, []client.FieldViolation{{Field: "access.actor", Description: "is required"}}},
	} {
		_, err := test.p.Get(t.Context())
		var ie *client.InvalidEventError
		if !errors.Is(err, client.ErrInvalidEvent) || !errors.As(err, &ie) {
			t.Fatalf("event %s: error %v, want an *InvalidEventError", test.p.EventID(), err)
		}
		if ie.EventID != test.p.EventID() || !slices.Equal(ie.Violations, test.want) || !slices.Equal(client.FieldViolations(err), test.want) {
			t.Errorf("event %s: %+v, want event id %s and violations %v", test.p.EventID(), ie, test.p.EventID(), test.want)
		}
	}
	checkLog(t, s, receipts)

	// Append is atomic: nothing of a batch with a malformed event is
	// recorded, and the paths index Append's arguments.
	_, err := c.Append(t.Context(), collect(ref(4)), transferNoCountry(ref(5)))
	var ie *client.InvalidEventError
	want := []client.FieldViolation{{Field: "events[1].recipient.country", Description: "is required for OPERATION_TRANSFER_ABROAD"}}
	if !errors.As(err, &ie) || ie.EventID != "" || !slices.Equal(ie.Violations, want) {
		t.Errorf("Append with a malformed event: %v, want violations %v", err, want)
	}
	checkLog(t, s, receipts)

	// FieldViolations and Reason also unpack a raw gRPC error.
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = piledgerv1.NewLedgerServiceClient(conn).AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{
		Events: []*piledgerv1.Event{{EventId: uuid.Must(uuid.NewV7()).String(), SubjectRef: ref(6), Operation: piledgerv1.Operation_OPERATION_STORE}},
	})
	vs := client.FieldViolations(err)
	if client.Reason(err) != "INVALID_EVENT" || len(vs) == 0 || vs[0].Field != "events[0].occurredAt" {
		t.Errorf("raw gRPC error: reason %q, violations %v", client.Reason(err), vs)
	}
	if client.FieldViolations(errors.New("plain")) != nil || client.Reason(nil) != "" {
		t.Error("errors without details must give no violations and no reason")
	}
}

// TestContextCancellation covers what a context bounds: Emit's admission
// (an event whose ctx ended is never sent), Get's wait (the event stays on
// its way) and Append's retries.
func TestContextCancellation(t *testing.T) {
	s := newStack(t, t.TempDir(), stackOptions{})
	c := newClient(t, s.addr, client.WithBatching(100, 1<<20, time.Hour), client.WithMaxInFlight(2))
	bg := context.Background()

	canceled, cancel := context.WithCancel(bg)
	cancel()
	p0 := c.Emit(canceled, collect(ref(0)))
	if _, err := p0.Get(bg); !errors.Is(err, context.Canceled) || p0.EventID() == "" {
		t.Errorf("Emit with a canceled context: %v (id %q), want context.Canceled and an id", err, p0.EventID())
	}

	// Two events fill the in-flight bound; they wait for their batch.
	p1, p2 := c.Emit(bg, collect(ref(1))), c.Emit(bg, collect(ref(2)))
	short, cancelShort := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancelShort()
	p3 := c.Emit(short, collect(ref(3))) // blocks until short ends
	if _, err := p3.Get(bg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Emit blocked on the in-flight bound: %v, want context.DeadlineExceeded", err)
	}

	// Get stops waiting when its context ends; the event stays in flight.
	if _, err := p1.Get(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a canceled context: %v", err)
	}
	select {
	case <-p1.Ready():
		t.Fatal("the event settled before its batch was sent")
	default:
	}
	if err := c.Flush(bg); err != nil {
		t.Fatal(err)
	}
	receipts := getAll(t, []*client.Pending{p1, p2})

	// WithPushback: no waiting, ErrPushback.
	cp := newClient(t, s.addr, client.WithBatching(100, 1<<20, time.Hour), client.WithMaxInFlight(1), client.WithPushback())
	q1, q2 := cp.Emit(bg, collect(ref(4))), cp.Emit(bg, collect(ref(5)))
	select {
	case <-q2.Ready():
	default:
		t.Fatal("Emit under WithPushback waited")
	}
	if _, err := q2.Get(bg); !errors.Is(err, client.ErrPushback) {
		t.Errorf("Emit beyond the bound under WithPushback: %v, want ErrPushback", err)
	}
	if err := cp.Close(); err != nil { // Close sends what is pending
		t.Fatal(err)
	}
	more := getAll(t, []*client.Pending{q1})
	for id, r := range more {
		receipts[id] = r
	}
	if _, err := cp.Emit(bg, collect(ref(6))).Get(bg); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Emit after Close: %v, want ErrClosed", err)
	}
	if _, err := cp.Append(bg, collect(ref(6))); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	checkLog(t, s, receipts) // p0, p3 and q2 were never sent

	// Append stops retrying when its context ends: against a port nobody
	// listens on, it returns the context's error, not ErrUnavailable after
	// the policy's minute.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := l.Addr().String()
	l.Close()
	cu := newClient(t, nobody)
	deadline, cancelDeadline := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancelDeadline()
	start := time.Now()
	_, err = cu.Append(deadline, collect(ref(7)))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, client.ErrUnavailable) || time.Since(start) > client.DefaultMaxElapsed/2 {
		t.Errorf("Append to an unreachable server with a 300ms context: %v after %v", err, time.Since(start))
	}
}

// TestGiveUp checks that a retry policy that runs out reports ErrUnavailable,
// with the last gRPC status still readable.
func TestGiveUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := l.Addr().String()
	l.Close()
	c := newClient(t, nobody, client.WithRetry(client.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Multiplier: 2, MaxAttempts: 3}))
	_, err = c.Emit(t.Context(), collect(ref(1))).Get(t.Context())
	if !errors.Is(err, client.ErrUnavailable) || status.Code(err) != codes.Unavailable {
		t.Errorf("Emit to nobody: %v (code %v), want ErrUnavailable wrapping UNAVAILABLE", err, status.Code(err))
	}
	_, err = c.Append(t.Context(), collect(ref(1)))
	if !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Append to nobody: %v, want ErrUnavailable", err)
	}
}
