package projections

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Log is what the projector needs of the ledger. *ledger.Ledger implements
// it. Implementations must be safe for concurrent use.
type Log interface {
	// Follow calls fn for every block after stream sequence after, in log
	// order, then for each new block, until ctx is done or fn fails.
	Follow(ctx context.Context, after uint64, fn func(ledger.Block) error) error
	// OpenEnvelope decrypts one stored envelope; Shredded is set when the
	// subject's key is gone.
	OpenEnvelope(ctx context.Context, envelope []byte) (*piledgerv1.LogEntry, error)
	// StreamIdentity identifies the incarnation of the log stream.
	StreamIdentity() []byte
	// CompleteErasure finishes an erasure recorded in the log whose keys
	// survived a crash, destroying key generation gen of the subject if it
	// is still the latest and live; it reports whether it destroyed anything.
	CompleteErasure(ctx context.Context, pseudonym string, gen uint32) (bool, error)
}

// Position is how far the read models have applied the log.
type Position struct {
	// Seq is the stream sequence of the last block applied (0: none).
	Seq uint64
	// Size is the number of log entries applied: indexes 0 to Size-1.
	Size uint64
}

// Counts counts the log entries the projector has seen, each event id once.
// They are stored with the position, atomically with the rows they
// describe, so they survive crashes and restarts without double counting.
type Counts struct {
	// Applied is the number of distinct events applied to the read models.
	Applied uint64
	// Duplicates is the number of log entries skipped because their event
	// id had been applied before (an id that reached the log twice).
	Duplicates uint64
	// Shredded is the number of events that could not be applied because
	// their subject's key was destroyed (crypto-shredded).
	Shredded uint64
	// Ignored is the number of events the read models have no use for: a
	// subjectless event other than purpose ended, or an operation this
	// version does not know.
	Ignored uint64
	// Findings is the number of findings stored: rules an applied event
	// or a holding it destroyed broke (findings computed at query time are
	// not counted).
	Findings uint64
}

// Store holds the read models in one Pebble database: the projector that
// builds them from the log (Run) and the queries that read them.
//
// Queries are safe for concurrent use with each other and with Run; each
// reads one consistent snapshot, so its answer reflects exactly the log
// entries 0 to log_size-1. Open the Store, call Run once (in its own
// goroutine), and Close it after Run returned and no query is in flight.
type Store struct {
	cfg    Config
	log    Log
	keys   *crypto.Keyring
	db     *pebble.DB
	tags   *tagger
	vocab  *ledger.Vocabulary
	logger *slog.Logger

	running atomic.Bool
	names   sync.Map                       // tag -> struct{}: dictionary rows known to be stored
	swept   atomic.Pointer[map[string]int] // the last Sweep's counts

	mu       sync.Mutex
	pos      Position
	counts   Counts
	advanced chan struct{} // closed and replaced when pos or stopErr change
	stopErr  error
}

// Open opens (or creates) the read models in cfg.Dir for the log. A
// directory built from another incarnation of the log stream, or by another
// layout version, is emptied and rebuilt by Run. keys must be the keyring
// the log was sealed with. The caller must Close the Store.
func Open(cfg Config, log Log, keys *crypto.Keyring) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil || keys == nil {
		return nil, fmt.Errorf("%w: a log and a keyring are required", ErrInvalidConfig)
	}
	cfg = cfg.withDefaults()
	cache := pebble.NewCache(cfg.CacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		Cache:              cache,
		MemTableSize:       16 << 20,
		FormatMajorVersion: pebble.FormatNewest,
		Logger:             quietLogger{pebble.DefaultLogger},
	}
	// Most point reads of the projector miss (a new event id, a subject
	// without records): bloom filters answer those without reading blocks.
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	db, err := pebble.Open(cfg.Dir, opts)
	if err != nil {
		return nil, fmt.Errorf("projections: open %s: %w", cfg.Dir, err)
	}
	s := &Store{
		cfg:      cfg,
		log:      log,
		keys:     keys,
		db:       db,
		tags:     newTagger(keys.Pseudonymizer()),
		vocab:    ledger.DefaultVocabulary(),
		logger:   cfg.Logger,
		advanced: make(chan struct{}),
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// quietLogger drops Pebble's informational messages and keeps its errors.
type quietLogger struct{ pebble.Logger }

func (quietLogger) Infof(string, ...any) {}

// load checks that the directory belongs to this log and layout, emptying
// it otherwise, and reads the position and counts.
func (s *Store) load() error {
	version, err := s.getMeta(metaVersion)
	if err != nil {
		return err
	}
	identity, err := s.getMeta(metaIdentity)
	if err != nil {
		return err
	}
	want := layoutVersion + "\x00" + s.cfg.Policy.Digest()
	if string(version) != want || !bytes.Equal(identity, s.log.StreamIdentity()) {
		if version != nil || identity != nil {
			s.logger.Info("read models belong to another log, layout or policy; rebuilding them from the log",
				slog.String("policy", s.cfg.Policy.Version()))
		}
		if err := s.reset(); err != nil {
			return err
		}
		b := s.db.NewBatch()
		defer b.Close()
		_ = b.Set(metaVersion, []byte(want), nil)
		_ = b.Set(metaIdentity, s.log.StreamIdentity(), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("projections: %w", err)
		}
	}
	pos, counts, err := readPosition(s.db)
	if err != nil {
		return err
	}
	s.pos, s.counts = pos, counts
	return nil
}

// reset deletes every row and compacts the range, so that no old value
// lingers in the LSM (a range deletion alone leaves the values in older
// tables until a compaction drops them).
func (s *Store) reset() error {
	if err := s.db.DeleteRange([]byte{0}, []byte{0xff}, pebble.Sync); err != nil {
		return fmt.Errorf("projections: reset: %w", err)
	}
	if err := s.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
		return fmt.Errorf("projections: reset: compact: %w", err)
	}
	return nil
}

func (s *Store) getMeta(key []byte) ([]byte, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// reader is a Pebble view: the database, a snapshot or an indexed batch.
type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

// readPosition reads the position and counts as r sees them.
func readPosition(r reader) (Position, Counts, error) {
	var pos Position
	var c Counts
	v, closer, err := r.Get(metaPosition)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		return pos, c, nil
	case err != nil:
		return pos, c, fmt.Errorf("projections: %w", err)
	}
	defer closer.Close()
	if len(v) != 56 {
		return pos, c, fmt.Errorf("%w: position record", ErrCorrupt)
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(v[8*i:]) }
	return Position{Seq: u(0), Size: u(1)}, Counts{Applied: u(2), Duplicates: u(3), Shredded: u(4), Ignored: u(5), Findings: u(6)}, nil
}

func encodePosition(pos Position, c Counts) []byte {
	v := make([]byte, 0, 56)
	for _, x := range []uint64{pos.Seq, pos.Size, c.Applied, c.Duplicates, c.Shredded, c.Ignored, c.Findings} {
		v = binary.BigEndian.AppendUint64(v, x)
	}
	return v
}

// Position returns how far the read models have applied the log.
func (s *Store) Position() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos
}

// Counts returns the counts stored with the current position.
func (s *Store) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// advance publishes a committed position, or the error Run stopped with,
// and wakes the queries waiting for a position.
func (s *Store) advance(pos Position, c Counts, stopErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stopErr != nil {
		s.stopErr = stopErr
	} else {
		s.pos, s.counts = pos, c
	}
	close(s.advanced)
	s.advanced = make(chan struct{})
}

// Wait waits until the read models have applied the log entry at index
// (read your writes: pass an append's receipt index). It returns ErrBehind
// after Config.MaxConsistencyWait, ErrStopped if the projector stopped, or
// ctx's error.
func (s *Store) Wait(ctx context.Context, index uint64) error { return s.await(ctx, &index) }

// await waits until the read models applied the log entry at minIndex (nil:
// no wait). It returns ErrBehind after cfg.MaxConsistencyWait, ErrStopped if
// the projector stopped, or ctx's error.
func (s *Store) await(ctx context.Context, minIndex *uint64) error {
	if minIndex == nil {
		return nil
	}
	timer := time.NewTimer(s.cfg.MaxConsistencyWait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		size, advanced, stopErr := s.pos.Size, s.advanced, s.stopErr
		s.mu.Unlock()
		switch {
		case size > *minIndex:
			return nil
		case stopErr != nil:
			return ErrStopped
		}
		select {
		case <-advanced:
		case <-timer.C:
			return fmt.Errorf("%w: index %d, applied %d entries", ErrBehind, *minIndex, size)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close closes the database. Call it after Run returned and no query is in
// flight; everything Run committed is on disk already.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("projections: close: %w", err)
	}
	return nil
}
