package ledger

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/crypto"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// request is one Append call's new events on their way into a block. All of
// a request's events go into the same block, so a batch is atomic.
type request struct {
	ids      []string // admitted event ids, released when the request settles
	events   []sealed
	size     int
	receipts []*piledgerv1.Receipt // one per event once settled; filled early for events found already recorded
	err      error                 // set on failure
	done     chan struct{}         // closed when receipts or err is set
	fenced   []int                 // fence shards held shared until the request settles
}

// admissions tracks event ids that are on their way into the log, so that a
// concurrent retry of the same id waits for the first attempt instead of
// appending the event twice. Sharded to keep admission parallel.
type admissions struct {
	seed   maphash.Seed
	shards [64]struct {
		mu       sync.Mutex
		inflight map[string]*request
	}
}

func (a *admissions) init() {
	a.seed = maphash.MakeSeed()
	for i := range a.shards {
		a.shards[i].inflight = make(map[string]*request)
	}
}

func (a *admissions) shard(id string) int {
	return int(maphash.String(a.seed, id) % uint64(len(a.shards)))
}

// Append validates events, seals each under its subject's key and appends
// them to the log as one atomic unit. It returns one receipt per event, in
// order, once every new event is durably stored: the block holding them was
// acknowledged by JetStream after fsync. An event id that was already
// recorded (by an earlier call, before a restart, or concurrently) is not
// appended again; its receipt is the original one, with Duplicate set.
//
// Errors: *InvalidEventError (errors.Is ErrInvalidEvent) when any event is
// malformed, and then nothing is appended; ErrUnavailable when the log did
// not acknowledge (the outcome is unknown: retry with the same event ids);
// ErrClosed after shutdown; ctx.Err() when ctx ends first (the events may
// still be appended; retrying is safe).
//
// Append is safe for concurrent use. Concurrent calls are group-committed:
// their events share blocks, one fsync per block.
func (l *Ledger) Append(ctx context.Context, events []*piledgerv1.Event) ([]*piledgerv1.Receipt, error) {
	return l.appendBatch(ctx, events, false)
}

// AppendPseudonymous is Append for events the ledger writes itself, about a
// subject it knows only by pseudonym (for example the access events the api
// records when someone reads a person's records): each event's subjectRef
// holds the subject's pseudonym (64 lowercase hex characters), which is used
// as is instead of being pseudonymized again, so the event lands in that
// subject's timeline. The event's ciphertext carries the pseudonym as its
// subjectRef; no raw reference is involved. Everything else is as for
// Append; a subjectRef that is not a pseudonym is an invalid event.
//
// It MUST NOT be reachable by emitters: it lets the caller write to any
// pseudonym's timeline without knowing the person's reference.
func (l *Ledger) AppendPseudonymous(ctx context.Context, events []*piledgerv1.Event) ([]*piledgerv1.Receipt, error) {
	return l.appendBatch(ctx, events, true)
}

func (l *Ledger) appendBatch(ctx context.Context, events []*piledgerv1.Event, pseudonymous bool) ([]*piledgerv1.Receipt, error) {
	now := l.cfg.Now()
	if err := ValidateBatch(events, now, l.cfg.Limits); err != nil {
		return nil, err
	}
	if pseudonymous {
		var vs []FieldViolation
		for i, e := range events {
			if !crypto.IsPseudonym(e.GetSubjectRef()) {
				vs = append(vs, FieldViolation{Field: fmt.Sprintf("events[%d].subjectRef", i), Description: "must be a pseudonym (64 lowercase hex characters)"})
			}
		}
		if len(vs) > 0 {
			return nil, &InvalidEventError{Violations: vs}
		}
	}
	for {
		receipts, wait, err := l.tryAppend(ctx, events, now, pseudonymous)
		if wait == nil {
			return receipts, err
		}
		// Another call is appending one of these ids: wait for it, then
		// look again (it may have failed).
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// tryAppend admits the batch's ids, seals and enqueues the new events and
// waits for their block. When an id is in flight in another request it
// returns that request's done channel instead, having admitted nothing.
func (l *Ledger) tryAppend(ctx context.Context, events []*piledgerv1.Event, now time.Time, pseudonymous bool) ([]*piledgerv1.Receipt, <-chan struct{}, error) {
	if p := l.indexErr.Load(); p != nil {
		return nil, nil, fmt.Errorf("%w: event-id index failed, restart to rebuild it: %w", ErrUnavailable, *p)
	}
	receipts := make([]*piledgerv1.Receipt, len(events))
	req := &request{done: make(chan struct{})}
	var fresh []int // positions in events of the ids this request appends
	release := func() { l.ids.release(req) }

	for i, ev := range events {
		id := ev.GetEventId()
		sh := &l.ids.shards[l.ids.shard(id)]
		sh.mu.Lock()
		if other, ok := sh.inflight[id]; ok {
			sh.mu.Unlock()
			release()
			return nil, other.done, nil
		}
		r, found, err := l.idx.receipt(id)
		if err != nil {
			sh.mu.Unlock()
			release()
			return nil, nil, err
		}
		if found {
			r.Duplicate = true
			receipts[i] = r
		} else {
			sh.inflight[id] = req
			req.ids = append(req.ids, id)
			fresh = append(fresh, i)
		}
		sh.mu.Unlock()
	}
	if len(fresh) == 0 {
		return receipts, nil, nil
	}

	pseudonyms := make([]string, len(fresh))
	for k, i := range fresh {
		switch ref := events[i].GetSubjectRef(); {
		case pseudonymous:
			pseudonyms[k] = ref
		case ref != "":
			pseudonyms[k] = l.keys.Pseudonym(ref)
		}
	}
	// Held until the block settles: an erasure of one of these subjects
	// waits for it (see fence).
	req.fenced = l.fence.shardsOf(pseudonyms)
	l.fence.rlock(req.fenced)
	release = func() { l.ids.release(req); l.fence.runlock(req.fenced) }

	// Keys of new subjects are created together: one write to the key
	// stream for all of them.
	keys, err := l.keys.SealingKeys(ctx, pseudonyms)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("ledger: subject key: %w", err)
	}
	req.events = make([]sealed, 0, len(fresh))
	for k, i := range fresh {
		s, err := seal(keys[k], events[i], pseudonyms[k], now)
		if err != nil {
			release()
			return nil, nil, err
		}
		req.events = append(req.events, s)
		req.size += len(s.envelope) + 4
	}
	req.receipts = make([]*piledgerv1.Receipt, len(req.events))
	if limit := l.cfg.MaxBlockBytes - blockOverhead; req.size > limit {
		release()
		return nil, nil, &InvalidEventError{Violations: []FieldViolation{{
			Field:       "events",
			Description: fmt.Sprintf("batch too large: %d bytes once sealed, the limit is %d; send fewer or smaller events", req.size, limit),
		}}}
	}

	if err := l.enqueue(ctx, req); err != nil {
		release()
		return nil, nil, err
	}
	select {
	case <-req.done:
	case <-ctx.Done():
		// The request stays admitted until its block settles, so a retry
		// waits for it rather than appending the events twice.
		return nil, nil, ctx.Err()
	}
	if req.err != nil {
		return nil, nil, req.err
	}
	for k, i := range fresh {
		receipts[i] = req.receipts[k]
	}
	return receipts, nil, nil
}

// blockOverhead is room left in a block for its version and first index.
const blockOverhead = 64

// release forgets the ids admitted for req.
func (a *admissions) release(req *request) {
	for _, id := range req.ids {
		sh := &a.shards[a.shard(id)]
		sh.mu.Lock()
		if sh.inflight[id] == req {
			delete(sh.inflight, id)
		}
		sh.mu.Unlock()
	}
}

func (l *Ledger) enqueue(ctx context.Context, req *request) error {
	l.closing.RLock()
	defer l.closing.RUnlock()
	if l.closed {
		return ErrClosed
	}
	select {
	case l.queue <- req:
		return nil
	case <-l.stopping:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run commits queued appends until ctx is done: it packs the requests waiting
// in the queue into one block (up to MaxBlockEvents and MaxBlockBytes; a
// request is never split), publishes it, and as soon as it is acknowledged
// starts the next. There is no timer: one block is in flight at a time and
// the next one fills meanwhile (adaptive group commit). When ctx is done it
// stops admitting, commits what is already queued, and returns nil.
func (l *Ledger) Run(ctx context.Context) error {
	started := false
	l.runOnce.Do(func() { started = true })
	if !started {
		return errors.New("ledger: Run called twice")
	}
	defer close(l.done)
	var carry *request
	for {
		var first *request
		if carry != nil {
			first, carry = carry, nil
		} else {
			select {
			case first = <-l.queue:
			case <-ctx.Done():
				return l.drain()
			}
		}
		batch := []*request{first}
		n, size := len(first.events), first.size
	fill:
		for {
			select {
			case r := <-l.queue:
				if n+len(r.events) > l.cfg.MaxBlockEvents || size+r.size > l.cfg.MaxBlockBytes-blockOverhead {
					carry = r
					break fill
				}
				batch = append(batch, r)
				n, size = n+len(r.events), size+r.size
			default:
				break fill
			}
		}
		l.commit(batch)
	}
}

// drain stops admissions and commits every request already queued.
func (l *Ledger) drain() error {
	close(l.stopping)
	l.closing.Lock()
	l.closed = true
	l.closing.Unlock()
	for {
		select {
		case r := <-l.queue:
			l.commit([]*request{r})
		default:
			return nil
		}
	}
}

// maxUnknownOutcomes bounds retries of one block whose publish failed
// without an answer (timeouts, lost connections). Conflicts with other
// writers are retried until PublishTimeout has passed instead: each one
// means the log made progress.
const maxUnknownOutcomes = 4

// commit appends one block holding every unrecorded event of reqs and
// settles them. Each publish has its own deadline, not the Run context, so
// that a shutdown never abandons a block whose outcome is unknown.
//
// Every publish expects the stream's last sequence to be the one this node
// knows. That makes the log's indexes gap-free across writers, and it makes
// retries safe without Nats-Msg-Id (whose de-duplication forgets after its
// window): if an attempt whose acknowledgement was lost did land, the retry
// fails with "wrong last sequence", the catch-up finds the events in the log,
// and they are answered with their receipts instead of being sent again.
func (l *Ledger) commit(reqs []*request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	deadline := time.Now().Add(l.cfg.PublishTimeout)
	unknown := 0
	for {
		blk := &piledgerv1.Block{Version: envelopeVersion, FirstIndex: l.nextIndex}
		for _, r := range reqs {
			for k, s := range r.events {
				if r.receipts[k] == nil {
					blk.Envelopes = append(blk.Envelopes, s.envelope)
				}
			}
		}
		if len(blk.Envelopes) == 0 {
			l.settle(reqs, nil)
			return
		}
		data, err := proto.Marshal(blk)
		if err != nil {
			l.settle(reqs, fmt.Errorf("ledger: marshal block: %w", err))
			return
		}
		pctx, cancel := context.WithTimeout(context.Background(), l.cfg.PublishTimeout)
		ack, err := l.js.Publish(pctx, l.cfg.logSubject(), data,
			jetstream.WithExpectStream(l.cfg.StreamName),
			jetstream.WithExpectLastSequence(l.lastSeq))
		cancel()
		if err == nil {
			// The block is durable whatever happens to the index. If the
			// index could not record it, later appends are refused (their
			// duplicates could not be detected) until a restart rebuilds it.
			if err := l.committed(reqs, blk, ack.Sequence); err != nil {
				l.indexErr.Store(&err)
			}
			l.settle(reqs, nil)
			return
		}
		conflict := isWrongLastSequence(err)
		if !conflict {
			unknown++
		}
		if unknown > maxUnknownOutcomes || time.Now().After(deadline) {
			l.settle(reqs, fmt.Errorf("%w: %w", ErrUnavailable, err))
			return
		}
		// Another writer got in first, or the outcome of our publish is
		// unknown. Read what the log now holds; events that reached it
		// (ours, from an unacknowledged attempt) are not sent again.
		advanced, cerr := l.catchUpLocked(context.Background())
		if cerr != nil && !errors.Is(cerr, ErrUnavailable) {
			l.settle(reqs, cerr)
			return
		}
		if advanced {
			if err := l.fillRecorded(reqs); err != nil {
				l.settle(reqs, err)
				return
			}
		}
		if !conflict {
			time.Sleep(time.Duration(unknown) * 50 * time.Millisecond)
		}
	}
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// fillRecorded gives the events of reqs whose ids the index now holds their
// original receipts, so they are not sent again.
func (l *Ledger) fillRecorded(reqs []*request) error {
	for _, r := range reqs {
		for k, s := range r.events {
			if r.receipts[k] != nil {
				continue
			}
			rec, found, err := l.idx.receipt(s.header.GetEventId())
			if err != nil {
				return err
			}
			if found {
				rec.Duplicate = true
				r.receipts[k] = rec
			}
		}
	}
	return nil
}

// committed records an acknowledged block at stream sequence seq: it fills
// the receipts of the events it carries, indexes them and advances the log
// position. l.mu must be held.
func (l *Ledger) committed(reqs []*request, blk *piledgerv1.Block, seq uint64) error {
	ib := indexedBlock{seq: seq, first: blk.GetFirstIndex(), receipts: make([]*piledgerv1.Receipt, 0, len(blk.GetEnvelopes()))}
	offset := 0
	for _, r := range reqs {
		for k, s := range r.events {
			if r.receipts[k] != nil {
				continue
			}
			rec := &piledgerv1.Receipt{
				EventId:       s.header.GetEventId(),
				Index:         blk.GetFirstIndex() + uint64(offset),
				BlockSequence: seq,
				BlockOffset:   uint32(offset),
				RecordedAt:    s.header.GetRecordedAt(),
				Pseudonym:     s.header.GetPseudonym(),
			}
			r.receipts[k] = rec
			ib.receipts = append(ib.receipts, rec)
			offset++
		}
	}
	l.lastSeq, l.nextIndex = seq, blk.GetFirstIndex()+uint64(len(blk.GetEnvelopes()))
	// The block is durable; an index failure only costs a rebuild later,
	// so report it but keep the receipts.
	return l.idx.apply([]indexedBlock{ib}, false)
}

// settle releases the admitted ids of reqs and wakes their waiters. The ids
// are released only now, after the index holds them, so that a retry either
// waits for the request or finds the id in the index.
func (l *Ledger) settle(reqs []*request, err error) {
	for _, r := range reqs {
		if err != nil {
			r.err = err
		}
		l.ids.release(r)
		l.fence.runlock(r.fenced)
		close(r.done)
	}
}
