package transparency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/tlog"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Log is the ledger's transparency log: the Merkle tree over the log, the
// signed checkpoints and the proofs.
//
// Open prepares it; Run follows the log into the tree and signs checkpoints.
// Reads (checkpoints, proofs, Export) work whether or not Run is running,
// from what the tree and the checkpoint stream hold. A Log is safe for
// concurrent use. It MUST NOT be used after Close.
type Log struct {
	cfg    Config
	led    *ledger.Ledger
	keys   *crypto.Keyring
	signer *crypto.LogSigner
	tree   *tree
	cps    *checkpoints
	logger *slog.Logger

	mu        sync.Mutex
	latest    *tlog.Checkpoint // the latest checkpoint this node knows of; nil: none
	latestSeq uint64
	signed    chan struct{} // closed and replaced when latest changes
	stuck     error         // why the checkpointer stopped signing, if it did
}

// Open opens the tree in cfg.Dir (rebuilding it from the log when it is
// missing, belongs to another log, or holds more than the log), opens or
// creates the checkpoint stream, and loads the signing key from keys (see
// crypto.Keyring.LogSigner). led MUST be open; the caller closes it after
// the Log.
//
// It returns an error wrapping ledger.ErrUnsafeStream for a checkpoint stream
// that could lose checkpoints, and ErrInconsistent when the latest stored
// checkpoint does not verify under this ledger's key and cfg.Origin (another
// log's stream, or a changed origin).
func Open(ctx context.Context, js jetstream.JetStream, led *ledger.Ledger, keys *crypto.Keyring, cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if js == nil || led == nil || keys == nil {
		return nil, errors.New("transparency: Open needs JetStream, a ledger and a keyring")
	}
	signer, err := keys.LogSigner(ctx, cfg.Origin)
	if err != nil {
		return nil, fmt.Errorf("transparency: signing key: %w", err)
	}
	cps, err := openCheckpoints(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	t, rebuilt, err := openTree(cfg.Dir, string(led.StreamIdentity()), led.Size())
	if err != nil {
		return nil, err
	}
	if rebuilt {
		cfg.Logger.WarnContext(ctx, "the Merkle tree was built from another log, or holds more events than the log: rebuilding it from the log",
			slog.String("dir", cfg.Dir))
	}
	l := &Log{cfg: cfg, led: led, keys: keys, signer: signer, tree: t, cps: cps, logger: cfg.Logger, signed: make(chan struct{})}
	cp, seq, err := l.loadLatest(ctx)
	if err != nil && !errors.Is(err, ErrCheckpointNotFound) {
		t.close()
		return nil, err
	}
	l.setLatest(cp, seq)
	if cp != nil && led.Size() < cp.Size {
		// Open caught the ledger up with the stream: the log itself holds
		// fewer events than were signed.
		l.stop(ctx, fmt.Errorf("%w: the log holds %d events, but checkpoint %d signed %d: the log lost events",
			ErrInconsistent, led.Size(), seq, cp.Size))
	}
	return l, nil
}

// Close closes the tree. Call it after Run has returned.
func (l *Log) Close() error { return l.tree.close() }

// Origin returns the log's origin.
func (l *Log) Origin() string { return l.cfg.Origin }

// VerifierKey returns the signed-note verifier key checkpoints are signed
// with (see crypto.LogSigner.VerifierKey).
func (l *Log) VerifierKey() string { return l.signer.VerifierKey() }

// Size returns the number of events in this node's tree.
func (l *Log) Size() uint64 {
	size, _ := l.tree.head()
	return size
}

// Root returns this node's tree size and root hash.
func (l *Log) Root() (uint64, []byte) { return l.tree.head() }

// Run follows the log into the tree and signs checkpoints of it until ctx is
// done; it then returns nil. It returns an error when the log cannot be
// followed (ledger.ErrUnavailable after the follower gave up, ledger.ErrCorrupt
// when a block does not continue the tree). When the tree disagrees with a
// signed checkpoint, Run keeps following but stops signing, logs the
// problem at ERROR level, and Stuck reports it. Run MUST be called at most
// once.
func (l *Log) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := l.tree.follow(gctx, l.led)
		if gctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("transparency: follow the log: %w", err)
	})
	g.Go(func() error { return l.checkpointer(gctx) })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Stuck returns why this node stopped signing checkpoints (an error
// wrapping ErrInconsistent), or nil while it signs.
func (l *Log) Stuck() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stuck
}

// loadLatest reads and verifies the latest checkpoint in the stream.
func (l *Log) loadLatest(ctx context.Context) (*tlog.Checkpoint, uint64, error) {
	seq, msg, err := l.cps.latest(ctx)
	if err != nil {
		return nil, 0, err
	}
	if seq == 0 {
		return nil, 0, ErrCheckpointNotFound
	}
	cp, err := l.open(msg, seq)
	return cp, seq, err
}

// open verifies a stored checkpoint under the ledger's own key and origin.
func (l *Log) open(msg []byte, seq uint64) (*tlog.Checkpoint, error) {
	cp, err := tlog.OpenCheckpoint(msg, l.cfg.Origin, l.signer.Verifier())
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint %d of stream %s does not verify under this ledger's key as origin %q (was the origin changed?): %w",
			ErrInconsistent, seq, l.cfg.StreamName, l.cfg.Origin, err)
	}
	return cp, nil
}

func (l *Log) setLatest(cp *tlog.Checkpoint, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cp == nil || (l.latest != nil && seq <= l.latestSeq) {
		return
	}
	l.latest, l.latestSeq = cp, seq
	close(l.signed)
	l.signed = make(chan struct{})
}

func (l *Log) known() (*tlog.Checkpoint, uint64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.latest, l.latestSeq, l.signed
}

// Checkpoint returns the latest signed checkpoint (size 0) or the one of
// tree size size. It returns ErrCheckpointNotFound when there is none, and
// ErrInconsistent when the stored note does not verify.
func (l *Log) Checkpoint(ctx context.Context, size uint64) (*piledgerv1.Checkpoint, error) {
	cp, seq, err := l.loadLatest(ctx)
	if err != nil {
		return nil, err
	}
	l.setLatest(cp, seq)
	if size != 0 && size != cp.Size {
		if cp, err = l.find(ctx, size, seq); err != nil {
			return nil, err
		}
		if cp == nil {
			return nil, fmt.Errorf("%w: no checkpoint of tree size %d", ErrCheckpointNotFound, size)
		}
	}
	return checkpointProto(cp), nil
}

func checkpointProto(cp *tlog.Checkpoint) *piledgerv1.Checkpoint {
	return &piledgerv1.Checkpoint{Note: string(cp.Note), Origin: cp.Origin, TreeSize: cp.Size, RootHash: cp.Hash}
}

// find returns the verified checkpoint of exactly size among checkpoints
// 1..last, or nil.
func (l *Log) find(ctx context.Context, size, last uint64) (*tlog.Checkpoint, error) {
	msg, ok, err := l.cps.find(ctx, size, last)
	if err != nil || !ok {
		return nil, err
	}
	return l.open(msg, 0)
}

// WaitCheckpoint waits until a signed checkpoint covers the first size
// events (its tree size is at least size) and returns it: the way to turn an
// append receipt of index i into a proof (wait for i+1, then InclusionProof).
// It watches this node's checkpointer and polls the checkpoint stream every
// CheckpointInterval for checkpoints other nodes signed.
func (l *Log) WaitCheckpoint(ctx context.Context, size uint64) (*tlog.Checkpoint, error) {
	for {
		cp, _, signed := l.known()
		if cp != nil && cp.Size >= size {
			return cp, nil
		}
		select {
		case <-signed:
		case <-time.After(l.cfg.CheckpointInterval):
			cp, seq, err := l.loadLatest(ctx)
			if err != nil && !errors.Is(err, ErrCheckpointNotFound) {
				return nil, err
			}
			l.setLatest(cp, seq)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// waitTree waits (at most Config.WaitForTree) for this node's tree to hold
// size events, which a checkpoint signed elsewhere may already cover.
func (l *Log) waitTree(ctx context.Context, size uint64) error {
	wctx, cancel := context.WithTimeout(ctx, l.cfg.WaitForTree)
	defer cancel()
	if err := l.tree.waitSize(wctx, size); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: this node's Merkle tree has not reached size %d yet", ledger.ErrUnavailable, size)
	}
	return nil
}

// InclusionProof proves that the event at log index index is a leaf of the
// tree of size size (0: the latest checkpoint's size). The result carries
// the envelope (its leaf), the audit path, and the signed checkpoint of that
// size when there is one (always for size 0).
//
// It returns a *RangeError matching ErrBeyondCheckpoint when size exceeds
// the latest checkpoint's, or (size 0) when no checkpoint covers index yet,
// and one matching ErrInvalidRange when index >= size.
func (l *Log) InclusionProof(ctx context.Context, index, size uint64) (*piledgerv1.InclusionProof, error) {
	latest, seq, err := l.loadLatest(ctx)
	if errors.Is(err, ErrCheckpointNotFound) {
		return nil, &RangeError{Field: "index", Description: "no checkpoint has been signed yet; retry after the first one", Err: ErrBeyondCheckpoint}
	}
	if err != nil {
		return nil, err
	}
	cp := latest
	switch {
	case size == 0 && index >= latest.Size:
		return nil, &RangeError{Field: "index", Err: ErrBeyondCheckpoint,
			Description: fmt.Sprintf("not covered by a signed checkpoint yet (the latest has tree size %d); retry after the next one", latest.Size)}
	case size == 0:
		size = latest.Size
	case size > latest.Size:
		return nil, &RangeError{Field: "treeSize", Err: ErrBeyondCheckpoint,
			Description: fmt.Sprintf("beyond the latest signed checkpoint (tree size %d)", latest.Size)}
	case index >= size:
		return nil, &RangeError{Field: "index", Err: ErrInvalidRange, Description: "must be less than treeSize"}
	case size != latest.Size:
		if cp, err = l.find(ctx, size, seq); err != nil {
			return nil, err
		}
	}
	if err := l.waitTree(ctx, size); err != nil {
		return nil, err
	}
	hashes, err := l.tree.inclusion(index, size)
	if err != nil {
		return nil, err
	}
	env, _, err := l.led.EnvelopeAt(ctx, index)
	if err != nil {
		return nil, err
	}
	p := &piledgerv1.InclusionProof{Index: index, TreeSize: size, Hashes: hashes, Envelope: env, LeafHash: tlog.LeafHash(env)}
	if cp != nil {
		p.Checkpoint = string(cp.Note)
	}
	return p, nil
}

// ConsistencyProof proves that the tree of size from is a prefix of the
// tree of size to (0: the latest checkpoint's size). The result carries the
// signed checkpoint of size to when there is one (always for to = 0).
//
// It returns a *RangeError matching ErrInvalidRange when from is 0 or above
// an explicit to, and one matching ErrBeyondCheckpoint when to (or, with
// to = 0, from) exceeds the latest checkpoint's size.
func (l *Log) ConsistencyProof(ctx context.Context, from, to uint64) (*piledgerv1.ConsistencyProof, error) {
	if from == 0 {
		return nil, &RangeError{Field: "from", Err: ErrInvalidRange, Description: "must be at least 1 (every tree extends the empty tree)"}
	}
	if to != 0 && from > to {
		return nil, &RangeError{Field: "from", Err: ErrInvalidRange, Description: "must not exceed to"}
	}
	latest, seq, err := l.loadLatest(ctx)
	if errors.Is(err, ErrCheckpointNotFound) {
		return nil, &RangeError{Field: "from", Description: "no checkpoint has been signed yet; retry after the first one", Err: ErrBeyondCheckpoint}
	}
	if err != nil {
		return nil, err
	}
	cp := latest
	switch {
	case to == 0 && from > latest.Size:
		return nil, &RangeError{Field: "from", Err: ErrBeyondCheckpoint,
			Description: fmt.Sprintf("beyond the latest signed checkpoint (tree size %d)", latest.Size)}
	case to == 0:
		to = latest.Size
	case to > latest.Size:
		return nil, &RangeError{Field: "to", Err: ErrBeyondCheckpoint,
			Description: fmt.Sprintf("beyond the latest signed checkpoint (tree size %d)", latest.Size)}
	case to != latest.Size:
		if cp, err = l.find(ctx, to, seq); err != nil {
			return nil, err
		}
	}
	if err := l.waitTree(ctx, to); err != nil {
		return nil, err
	}
	hashes, err := l.tree.consistency(from, to)
	if err != nil {
		return nil, err
	}
	p := &piledgerv1.ConsistencyProof{From: from, To: to, Hashes: hashes}
	if cp != nil {
		p.Checkpoint = string(cp.Note)
	}
	return p, nil
}
