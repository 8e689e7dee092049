package ledger

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/crypto"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Erasure in the log. Erase records the erasure as an entry of the log
// before it destroys the subject's keys, so that the log itself says when a
// subject was erased and which of its entries that made unreadable (every
// entry of the subject before it, under a generation the erasure names),
// and so that an erasure interrupted by a crash is finished by whoever
// follows the log (the projector, on restart: see projections).

// ErasureRequest says who asked for an erasure; it is sealed in the
// erasure entry under the ledger's own key.
type ErasureRequest struct {
	// RequestedBy is "subject" (the person themself) or "admin".
	RequestedBy string
	// Reason is an admin's stated reason; empty for a subject's request.
	Reason string
}

// ErasureResult is what Erase did.
type ErasureResult struct {
	// Receipt is the erasure entry's receipt: its log index and time.
	Receipt *piledgerv1.Receipt
	// Generation is the highest key generation destroyed (0: the ledger
	// never made a key for the subject).
	Generation uint32
	// Keys is what destroying the keys did.
	Keys crypto.DestroyReport
}

// Erase erases a subject by crypto-shredding: it appends an erasure entry
// for the pseudonym (durable when Erase returns), then destroys every key
// generation of the subject (crypto.Keyring.Destroy). While it runs,
// appends of the same subject on this node wait: every event sealed under a
// destroyed generation is in the log before the erasure entry, and every
// event appended after Erase returns is sealed under a new generation and
// stays readable. (Appends on other nodes are not held: an event another
// node sealed under the old key just before the erasure lands after the
// entry and is unreadable like the ones before it.)
//
// Erase is idempotent: repeating it appends another entry and destroys
// whatever is left. If it fails after the entry is durable, the keys are
// destroyed by the projector when it applies the entry (on restart at the
// latest). It returns ErrInvalidEvent for a malformed pseudonym.
func (l *Ledger) Erase(ctx context.Context, pseudonym string, req ErasureRequest) (ErasureResult, error) {
	if !crypto.IsPseudonym(pseudonym) {
		return ErasureResult{}, &InvalidEventError{Violations: []FieldViolation{{Field: "pseudonym", Description: "must be a pseudonym (64 lowercase hex characters)"}}}
	}
	shard := l.fence.shardsOf([]string{pseudonym})
	l.fence.lock(shard[0])
	defer l.fence.unlock(shard[0])

	gen, err := l.keys.LatestGeneration(ctx, pseudonym)
	if err != nil {
		return ErasureResult{}, fmt.Errorf("ledger: erase: %w", err)
	}
	s, err := sealErasure(ctx, l.keys, pseudonym, &piledgerv1.Erasure{Generation: gen, RequestedBy: req.RequestedBy, Reason: req.Reason}, l.cfg.Now())
	if err != nil {
		return ErasureResult{}, err
	}
	rec, err := l.appendSealed(ctx, s)
	if err != nil {
		return ErasureResult{}, fmt.Errorf("ledger: erase: record the erasure: %w", err)
	}
	rep, err := l.keys.Destroy(ctx, pseudonym)
	if err != nil {
		return ErasureResult{Receipt: rec, Generation: gen}, fmt.Errorf("ledger: erase: destroy keys (recorded at log index %d; completed when the log is next applied): %w", rec.GetIndex(), err)
	}
	return ErasureResult{Receipt: rec, Generation: max(gen, rep.Generations), Keys: rep}, nil
}

// CompleteErasure finishes an erasure whose entry is in the log but whose
// keys may have survived (a crash between the two steps of Erase): if the
// subject's generation gen, the one the entry names, is still its latest and
// is not destroyed, it destroys the subject's keys. It reports whether it
// destroyed anything. It waits for an Erase of the same subject running on
// this node, and first applies the whole key stream, so an erasure finished
// meanwhile (here or on another node) is not repeated and a generation
// created after it is never touched. Safe for concurrent use.
func (l *Ledger) CompleteErasure(ctx context.Context, pseudonym string, gen uint32) (bool, error) {
	if gen == 0 || !crypto.IsPseudonym(pseudonym) {
		return false, nil
	}
	shard := l.fence.shardsOf([]string{pseudonym})
	l.fence.lock(shard[0])
	defer l.fence.unlock(shard[0])
	latest, err := l.keys.LatestGeneration(ctx, pseudonym) // applies the key stream first
	if err != nil {
		return false, fmt.Errorf("ledger: complete erasure: %w", err)
	}
	destroyed, err := l.keys.Destroyed(pseudonym)
	if err != nil {
		return false, fmt.Errorf("ledger: complete erasure: %w", err)
	}
	if destroyed >= gen || latest != gen {
		return false, nil
	}
	if _, err := l.keys.Destroy(ctx, pseudonym); err != nil {
		return false, fmt.Errorf("ledger: complete erasure: %w", err)
	}
	return true, nil
}

// sealErasure seals an erasure entry under the ledger's own key, with a
// fresh UUIDv7 as its event id.
func sealErasure(ctx context.Context, keys *crypto.Keyring, pseudonym string, e *piledgerv1.Erasure, recordedAt time.Time) (sealed, error) {
	key, err := keys.SealingKey(ctx, "")
	if err != nil {
		return sealed{}, fmt.Errorf("ledger: ledger key: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return sealed{}, fmt.Errorf("ledger: erasure id: %w", err)
	}
	header := &piledgerv1.EnvelopeHeader{
		Version:       envelopeVersion,
		EventId:       id.String(),
		Pseudonym:     pseudonym,
		RecordedAt:    timestamppb.New(recordedAt),
		KeyGeneration: key.Generation,
		Erasure:       true,
	}
	return sealEnvelope(header, key, e)
}

// appendSealed appends one entry the ledger sealed itself through the
// group-commit pipeline and returns its receipt once it is durable.
func (l *Ledger) appendSealed(ctx context.Context, s sealed) (*piledgerv1.Receipt, error) {
	req := &request{done: make(chan struct{}), events: []sealed{s}, size: len(s.envelope) + 4, receipts: make([]*piledgerv1.Receipt, 1)}
	id := s.header.GetEventId()
	sh := &l.ids.shards[l.ids.shard(id)]
	sh.mu.Lock()
	sh.inflight[id] = req // a fresh UUIDv7: no other request has it
	req.ids = []string{id}
	sh.mu.Unlock()
	if err := l.enqueue(ctx, req); err != nil {
		l.ids.release(req)
		return nil, err
	}
	select {
	case <-req.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if req.err != nil {
		return nil, req.err
	}
	return req.receipts[0], nil
}

// openErasure opens an erasure entry's content (sealed under the ledger's
// own key).
func openErasure(ctx context.Context, keys *crypto.Keyring, env *piledgerv1.Envelope, entry *piledgerv1.LogEntry) (*piledgerv1.LogEntry, error) {
	h := entry.GetHeader()
	aead, err := keys.OpeningKey(ctx, "", h.GetKeyGeneration())
	if err != nil {
		return nil, fmt.Errorf("ledger: ledger key: %w", err)
	}
	pt, err := aead.Decrypt(env.GetCiphertext(), env.GetHeader())
	if err != nil {
		return nil, fmt.Errorf("%w: erasure entry %s does not decrypt under the ledger key", ErrCorrupt, h.GetEventId())
	}
	e := &piledgerv1.Erasure{}
	if err := proto.Unmarshal(pt, e); err != nil {
		return nil, fmt.Errorf("%w: erasure entry %s: %w", ErrCorrupt, h.GetEventId(), err)
	}
	entry.Erasure = e
	return entry, nil
}

// fence serializes an erasure with the appends of the same subject on this
// node: an append holds the shards of its subjects shared from sealing until
// its block settles; Erase holds the subject's shard exclusively while it
// records the erasure and destroys the keys. Shards are taken in ascending
// order, so appends of several subjects cannot deadlock with erasures.
type fence struct {
	seed   maphash.Seed
	shards [256]sync.RWMutex
}

// shardsOf returns the sorted, distinct shards of the pseudonyms ("" is no
// subject and takes none).
func (f *fence) shardsOf(pseudonyms []string) []int {
	var out []int
	for _, p := range pseudonyms {
		if p != "" {
			out = append(out, int(maphash.String(f.seed, p)%uint64(len(f.shards))))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (f *fence) rlock(shards []int) {
	for _, i := range shards {
		f.shards[i].RLock()
	}
}

func (f *fence) runlock(shards []int) {
	for _, i := range shards {
		f.shards[i].RUnlock()
	}
}

func (f *fence) lock(i int)   { f.shards[i].Lock() }
func (f *fence) unlock(i int) { f.shards[i].Unlock() }
