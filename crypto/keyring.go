package crypto

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

const (
	// DefaultPrefix is the default subject prefix: the key stream's subjects
	// are <prefix>.keys.subject and <prefix>.keys.prf.
	DefaultPrefix = "piledger"

	// DefaultKeyStreamName is the default name of the JetStream stream of
	// wrapped keys.
	DefaultKeyStreamName = "PILEDGER_KEYS"

	// DefaultKeyCacheSize is the default number of subjects whose unwrapped
	// keys a node keeps in memory. A cached key costs about 1.5 KiB (the
	// default about 150 MB); a miss costs an index lookup, a key-stream read
	// and an unwrap (tens of µs).
	DefaultKeyCacheSize = 100_000

	// DefaultKeyStreamReplicas is the default replication factor of a key
	// stream the keyring creates. Use 3 on a cluster.
	DefaultKeyStreamReplicas = 1
)

// KeyringConfig configures a [Keyring]. The zero value of every field except
// IndexDir means its default.
type KeyringConfig struct {
	// Prefix of the key stream's subjects: one or more NATS tokens of letters,
	// digits, '-' and '_', separated by dots. Default DefaultPrefix.
	Prefix string

	// StreamName is the JetStream stream of wrapped keys, shared by all nodes
	// (letters, digits, '-' and '_'). Default DefaultKeyStreamName.
	StreamName string

	// IndexDir is this node's Pebble directory for the key index. Required;
	// it MUST NOT be shared with another Keyring. It holds pseudonyms and
	// key-stream sequences, never key bytes, and may be deleted while the
	// keyring is closed: the next open rebuilds it from the key stream.
	IndexDir string

	// CacheSize bounds the number of subjects whose unwrapped keys are
	// cached in memory. Default DefaultKeyCacheSize.
	CacheSize int

	// Replicas is the replication factor used when the keyring creates the
	// key stream; an existing stream is not changed. Default
	// DefaultKeyStreamReplicas.
	Replicas int
}

func (c KeyringConfig) withDefaults() KeyringConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.StreamName == "" {
		c.StreamName = DefaultKeyStreamName
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultKeyCacheSize
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultKeyStreamReplicas
	}
	return c
}

// Validate reports, wrapping ErrInvalidConfig, the first invalid field of c
// once defaults are filled in.
func (c KeyringConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case !validPrefix(c.Prefix):
		return fmt.Errorf("%w: prefix must be dot-separated tokens of letters, digits, '-' and '_'", ErrInvalidConfig)
	case !validToken(c.StreamName):
		return fmt.Errorf("%w: stream name must be letters, digits, '-' and '_'", ErrInvalidConfig)
	case c.IndexDir == "":
		return fmt.Errorf("%w: index directory is required", ErrInvalidConfig)
	case c.CacheSize < 0:
		return fmt.Errorf("%w: cache size %d is negative", ErrInvalidConfig, c.CacheSize)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("%w: replicas %d, want 1 to 5", ErrInvalidConfig, c.Replicas)
	}
	return nil
}

func validPrefix(s string) bool {
	for tok := range strings.SplitSeq(s, ".") {
		if !validToken(tok) {
			return false
		}
	}
	return true
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// SubjectKey is a data subject's key for sealing: its generation (recorded in
// the envelope, so that [Keyring.OpeningKey] finds the key again) and its
// AEAD (a Tink AES256-GCM keyset, TINK output prefix).
type SubjectKey struct {
	Generation uint32
	AEAD       tink.AEAD
}

// Keyring holds one Tink AEAD keyset per data subject, identified by the
// subject's pseudonym; the pseudonym "" is the ledger's own key, for events
// that concern no subject.
//
// Every key is stored wrapped by the KEK, as a [piledgerv1.WrappedKey] on
// the single subject <prefix>.keys.subject of the key stream, which all
// nodes share. When two nodes create a subject's key concurrently, the first
// key in stream order is the subject's key on every node; a creator reads
// the stream up to its own key before using either, so a losing key never
// seals anything. Each node keeps a local index from (pseudonym, generation)
// to key-stream sequence, follows the key stream to keep it fresh, and
// caches unwrapped keys in a bounded LRU.
//
// Wrapped key bytes live only in the key stream, so that erasing a subject
// ([Keyring.Destroy]: an erasure marker, then SecureDeleteMsg of its key
// messages) erases them.
//
// A Keyring is safe for concurrent use. It MUST NOT be used after Close.
type Keyring struct {
	js          jetstream.JetStream
	stream      jetstream.Stream
	kek         KEK
	cfg         KeyringConfig
	subjectKeys string // <prefix>.keys.subject
	allKeys     string // <prefix>.keys.>
	pseudo      *Pseudonymizer
	idx         *index
	cache       *lru.Cache[string, SubjectKey] // pseudonym → latest key
	flight      singleflight.Group
	cacheMu     sync.Mutex // orders cache additions with erasure evictions
	erased      string     // <prefix>.keys.erased
	rotated     string     // <prefix>.keys.rotated
	rotateMu    sync.Mutex // serializes Rotate

	writer    *keyWriter
	follower  jetstream.MessagesContext
	done      chan struct{} // closed when follow returns
	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	applied  uint64        // last key-stream sequence in the index
	advanced chan struct{} // closed and replaced when applied or stopErr changes
	stopErr  error         // why follow stopped, if it did
}

// OpenKeyring opens the keyring on the key stream cfg.StreamName, creating
// the stream (and the pseudonym PRF key) if missing, and catches its index
// up with the stream. When it returns, every key in the stream at the time of
// the call is in the index, and every key message an erasure destroyed
// but did not delete (a crash between its marker and its deletions) is
// deleted.
//
// It returns an error wrapping ErrUnsafeKeyStream if the stream exists with
// a configuration that could lose keys or keep erased ones, and one wrapping
// ErrInvalidConfig for an invalid cfg. The caller keeps ownership of js and
// kek, and must Close the keyring.
func OpenKeyring(ctx context.Context, js jetstream.JetStream, kek KEK, cfg KeyringConfig) (*Keyring, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil || kek == nil {
		return nil, fmt.Errorf("%w: nil JetStream or KEK", ErrInvalidConfig)
	}
	stream, err := ensureKeyStream(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	pseudo, err := openPseudonymizer(ctx, js, stream, kek, cfg.Prefix+prfToken)
	if err != nil {
		return nil, err
	}
	cache, err := lru.New[string, SubjectKey](cfg.CacheSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	idx, err := openIndex(cfg.IndexDir, streamIdentity(stream.CachedInfo()))
	if err != nil {
		return nil, err
	}
	applied, err := idx.applied()
	if err != nil {
		idx.close()
		return nil, err
	}
	k := &Keyring{
		js:          js,
		stream:      stream,
		kek:         kek,
		cfg:         cfg,
		subjectKeys: cfg.Prefix + subjectKeyToken,
		allKeys:     cfg.Prefix + keysToken + ".>",
		erased:      cfg.Prefix + erasedToken,
		rotated:     cfg.Prefix + rotatedToken,
		pseudo:      pseudo,
		idx:         idx,
		cache:       cache,
		applied:     applied,
		advanced:    make(chan struct{}),
		done:        make(chan struct{}),
	}
	k.writer = newKeyWriter(js, cfg.StreamName, k.subjectKeys, stream.CachedInfo().Config.AllowAtomicPublish)
	cons, err := js.OrderedConsumer(ctx, cfg.StreamName, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   applied + 1,
	})
	if err == nil {
		k.follower, err = cons.Messages()
	}
	if err != nil {
		k.writer.close()
		idx.close()
		return nil, fmt.Errorf("crypto: follow key stream: %w", err)
	}
	go k.follow()
	if err := k.refresh(ctx); err != nil {
		k.Close()
		return nil, err
	}
	if err := k.completeErasures(ctx); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// streamIdentity identifies one incarnation of the key stream: a stream
// deleted and created again under the same name has other sequences.
func streamIdentity(info *jetstream.StreamInfo) []byte {
	return []byte(info.Config.Name + "/" + strconv.FormatInt(info.Created.UnixNano(), 10))
}

// Close stops following the key stream and closes the index. It does not
// close the JetStream connection. Keys in the stream are not affected.
// Calls after the first return its result.
func (k *Keyring) Close() error {
	k.closeOnce.Do(func() {
		k.writer.close()
		k.follower.Stop()
		<-k.done
		k.closeErr = k.idx.close()
	})
	return k.closeErr
}

// Pseudonym returns the pseudonym of a subject reference. See
// [Pseudonymizer.Pseudonym].
func (k *Keyring) Pseudonym(ref string) string { return k.pseudo.Pseudonym(ref) }

// Pseudonymizer returns the keyring's pseudonymizer, for code that needs
// pseudonyms but no keys.
func (k *Keyring) Pseudonymizer() *Pseudonymizer { return k.pseudo }

// SealingKey returns the subject's current key, creating generation 1 when
// the subject has none. A cached key is returned without I/O.
//
// A created key is acknowledged by JetStream before SealingKey returns it
// (on disk when the server syncs every write, as piledger runs it; on a
// quorum of an R3 stream), and it is the key every node returns for the
// subject and generation. Concurrent calls for the same new subject on one
// Keyring create one key; calls on several nodes may each store one, but
// all of them return the first in stream order.
//
// It returns an error wrapping ErrInvalidPseudonym if pseudonym is neither
// "" nor a pseudonym, ErrInvalidKey if the stored key does not unwrap, and
// ErrShredded if the subject's key was deleted from the key stream (no new
// key is created then). Concurrent callers for the same subject share one
// lookup, which runs under the first caller's ctx.
func (k *Keyring) SealingKey(ctx context.Context, pseudonym string) (SubjectKey, error) {
	if sk, ok := k.cache.Get(pseudonym); ok {
		return sk, nil
	}
	if !validPseudonym(pseudonym) {
		return SubjectKey{}, ErrInvalidPseudonym
	}
	v, err, _ := k.flight.Do(pseudonym, func() (any, error) {
		return k.sealingKey(ctx, pseudonym)
	})
	if err != nil {
		return SubjectKey{}, err
	}
	return v.(SubjectKey), nil
}

// SealingKeys is SealingKey for many subjects at once: keys[i] is the key
// of pseudonyms[i]. Missing keys are created concurrently, so that the key
// stream stores them together (see keyWriter) instead of one fsync after
// another. On error no key is returned; keys created before it stay in the
// key stream and are used by later calls.
func (k *Keyring) SealingKeys(ctx context.Context, pseudonyms []string) ([]SubjectKey, error) {
	keys := make([]SubjectKey, len(pseudonyms))
	var missing map[string][]int // pseudonym → positions in pseudonyms
	for i, p := range pseudonyms {
		if sk, ok := k.cache.Get(p); ok {
			keys[i] = sk
			continue
		}
		if missing == nil {
			missing = make(map[string][]int)
		}
		missing[p] = append(missing[p], i)
	}
	if len(missing) == 0 {
		return keys, nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxKeyBatch)
	for p, at := range missing {
		g.Go(func() error {
			sk, err := k.SealingKey(gctx, p)
			if err != nil {
				return err
			}
			for _, i := range at {
				keys[i] = sk // distinct positions per goroutine
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return keys, nil
}

func (k *Keyring) sealingKey(ctx context.Context, pseudonym string) (SubjectKey, error) {
	if sk, ok := k.cache.Peek(pseudonym); ok {
		return sk, nil // loaded by a flight that ended while this one was starting
	}
	// An erasure applied between the lookup and caching makes the loaded key
	// stale: look again (the next lookup sees the tombstone).
	for attempt := 0; ; attempt++ {
		// Only the local index is asked, with no round trip to the server
		// for every new subject: a key another node created moments ago and
		// this node has not followed yet is found by create, which reads the
		// stream up to its own key and keeps the first (the cost is one
		// unused key message).
		gen, seq, found, err := k.idx.find(pseudonym, 0)
		if err == nil && !found {
			err = fmt.Errorf("%w: no key yet", ErrKeyNotFound)
		}
		var a tink.AEAD
		switch {
		case errors.Is(err, ErrKeyNotFound):
			// A destroyed generation is never created again.
			var destroyed uint32
			if destroyed, _, _, err = k.idx.tombstone(pseudonym); err == nil {
				gen = destroyed + 1
				a, err = k.create(ctx, pseudonym, gen)
			}
		case err == nil:
			a, err = k.load(ctx, pseudonym, gen, seq)
		}
		if err != nil {
			return SubjectKey{}, err
		}
		sk := SubjectKey{Generation: gen, AEAD: a}
		live, err := k.cacheIfLive(pseudonym, sk, true)
		if err != nil {
			return SubjectKey{}, err
		}
		if live {
			return sk, nil
		}
		if attempt == 2 {
			return SubjectKey{}, fmt.Errorf("%w: generation %d", ErrShredded, gen)
		}
	}
}

// OpeningKey returns the subject's key of one generation, to open what it
// sealed. It returns an error wrapping ErrKeyNotFound when the key stream
// holds no such key (it first catches up with the stream, so a key another
// node just created is found), ErrShredded when the key was deleted from the
// key stream, ErrInvalidPseudonym if pseudonym is neither "" nor a
// pseudonym, and ErrInvalidKey if the stored key does not unwrap.
func (k *Keyring) OpeningKey(ctx context.Context, pseudonym string, generation uint32) (tink.AEAD, error) {
	if sk, ok := k.cache.Get(pseudonym); ok && sk.Generation == generation {
		return sk.AEAD, nil
	}
	if !validPseudonym(pseudonym) {
		return nil, ErrInvalidPseudonym
	}
	if generation == 0 {
		return nil, fmt.Errorf("%w: generation 0", ErrKeyNotFound)
	}
	v, err, _ := k.flight.Do(pseudonym+"/"+strconv.FormatUint(uint64(generation), 10), func() (any, error) {
		return k.openingKey(ctx, pseudonym, generation)
	})
	if err != nil {
		return nil, err
	}
	return v.(tink.AEAD), nil
}

func (k *Keyring) openingKey(ctx context.Context, pseudonym string, generation uint32) (tink.AEAD, error) {
	_, seq, err := k.lookup(ctx, pseudonym, generation)
	if err != nil {
		return nil, err
	}
	a, err := k.load(ctx, pseudonym, generation, seq)
	if err != nil {
		return nil, err
	}
	// Cache only the subject's latest key: it is the one SealingKey returns.
	latest, _, ok, err := k.idx.find(pseudonym, 0)
	add := err == nil && ok && latest == generation
	if sk, ok := k.cache.Peek(pseudonym); ok && sk.Generation >= generation {
		add = false
	}
	live, err := k.cacheIfLive(pseudonym, SubjectKey{Generation: generation, AEAD: a}, add)
	if err != nil {
		return nil, err
	}
	if !live {
		return nil, fmt.Errorf("%w: generation %d", ErrShredded, generation)
	}
	return a, nil
}

// lookup returns the generation and key-stream sequence of the subject's key
// of generation gen (0: the latest generation). If the index has none, it
// catches up with the key stream once before returning an error wrapping
// ErrKeyNotFound.
func (k *Keyring) lookup(ctx context.Context, pseudonym string, gen uint32) (uint32, uint64, error) {
	for refreshed := false; ; refreshed = true {
		g, seq, ok, err := k.idx.find(pseudonym, gen)
		if err != nil || ok {
			return g, seq, err
		}
		if gen != 0 {
			if destroyed, _, _, err := k.idx.tombstone(pseudonym); err != nil {
				return 0, 0, err
			} else if gen <= destroyed {
				return 0, 0, fmt.Errorf("%w: generation %d", ErrShredded, gen)
			}
		}
		if refreshed {
			return 0, 0, fmt.Errorf("%w: generation %d", ErrKeyNotFound, gen)
		}
		if err := k.refresh(ctx); err != nil {
			return 0, 0, err
		}
	}
}

// create stores a new key of the given generation and returns the subject's
// key of that generation: the new one, or one stored before it by another
// node.
func (k *Keyring) create(ctx context.Context, pseudonym string, gen uint32) (tink.AEAD, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("crypto: new subject key: %w", err)
	}
	data, err := wrapKey(ctx, k.kek, roleSubjectKey, pseudonym, gen, h)
	if err != nil {
		return nil, err
	}
	stored, err := k.writer.write(ctx, data)
	if err != nil {
		return nil, err
	}
	// The first key in stream order wins: read up to ours to see which it is.
	if err := k.waitApplied(ctx, stored, 0); err != nil {
		return nil, err
	}
	_, seq, ok, err := k.idx.find(pseudonym, gen)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: generation %d gone from the key stream", ErrShredded, gen)
	}
	if seq != stored {
		return k.load(ctx, pseudonym, gen, seq)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("crypto: subject key: %w", err)
	}
	return a, nil
}

// load reads the wrapped key at seq and unwraps it.
func (k *Keyring) load(ctx context.Context, pseudonym string, gen uint32, seq uint64) (tink.AEAD, error) {
	msg, err := retryNotFound(ctx, func() (*jetstream.RawStreamMsg, error) {
		return k.stream.GetMsg(ctx, seq)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// Only erasure and KEK rotation delete key messages; a rotation
		// deletes one once its re-wrap is in the stream.
		if s, ok, err := k.rewrapped(ctx, pseudonym, gen, seq); err != nil {
			return nil, err
		} else if ok {
			return k.load(ctx, pseudonym, gen, s)
		}
		return nil, fmt.Errorf("%w: generation %d", ErrShredded, gen)
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: read subject key: %w", err)
	}
	var wk piledgerv1.WrappedKey
	if msg.Subject != k.subjectKeys || proto.Unmarshal(msg.Data, &wk) != nil ||
		wk.GetPseudonym() != pseudonym || wk.GetGeneration() != gen {
		return nil, fmt.Errorf("%w: key-stream sequence %d does not hold the indexed key", ErrInvalidKey, seq)
	}
	h, err := unwrapKey(ctx, k.kek, roleSubjectKey, &wk)
	if err != nil {
		return nil, fmt.Errorf("crypto: key-stream sequence %d: %w", seq, err)
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("%w: key-stream sequence %d: %v", ErrInvalidKey, seq, err)
	}
	return a, nil
}

// retryNotFound calls get until it finds the message, a few times. Direct
// gets may be answered by a replica that has not yet stored a message the
// stream leader acknowledged.
func retryNotFound(ctx context.Context, get func() (*jetstream.RawStreamMsg, error)) (*jetstream.RawStreamMsg, error) {
	wait := 5 * time.Millisecond
	for attempt := 1; ; attempt++ {
		msg, err := get()
		if !errors.Is(err, jetstream.ErrMsgNotFound) || attempt == 5 {
			return msg, err
		}
		select {
		case <-time.After(wait):
			wait *= 2
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Following the key stream.
const (
	// followBatch is the most key messages applied to the index in one write.
	followBatch = 1024
	// followFlushWait is how long the follower waits for the rest of a batch
	// the server said was pending before it writes what it has.
	followFlushWait = 50 * time.Millisecond
	// refreshProbe is how long refresh waits for the follower before it
	// checks whether the messages it waits for were deleted (the follower
	// never sees those).
	refreshProbe = 100 * time.Millisecond
)

// follow applies the key stream to the index, in stream order, until the
// follower stops. Messages that arrive together are applied in one batch.
func (k *Keyring) follow() {
	defer close(k.done)
	b := k.idx.db.NewIndexedBatch() // a re-wrap reads the entries before it
	defer b.Close()
	var n int       // messages in b
	var last uint64 // sequence of the last message in b
	flush := func() error {
		if n == 0 {
			return nil
		}
		if err := k.idx.commit(b, last); err != nil {
			return err
		}
		n = 0
		k.advance(last, nil)
		return nil
	}
	for {
		var opts []jetstream.NextOpt
		if n > 0 {
			opts = append(opts, jetstream.NextMaxWait(followFlushWait))
		}
		msg, err := k.follower.Next(opts...)
		switch {
		case errors.Is(err, nats.ErrTimeout):
			err = flush()
		case err == nil && msg.Subject() == k.erased:
			// An erasure marker: apply what precedes it, then it alone.
			if err = flush(); err == nil {
				err = k.applyMarker(msg)
			}
		case err == nil && msg.Subject() == k.rotated:
			if err = flush(); err == nil {
				err = k.applyRotated(msg)
			}
		case err == nil:
			var pending uint64
			last, pending, err = k.idx.add(b, msg, k.subjectKeys)
			if n++; err == nil && (pending == 0 || n >= followBatch) {
				err = flush()
			}
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			if ferr := flush(); ferr != nil {
				err = ferr
			} else {
				err = ErrClosed
			}
		}
		if err != nil {
			k.follower.Stop()
			k.advance(0, err)
			return
		}
	}
}

// applyMarker applies an erasure marker from the key stream.
func (k *Keyring) applyMarker(msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("crypto: key stream message: %w", err)
	}
	seq := meta.Sequence.Stream
	if p, gen, ok := parseMarker(msg.Data()); ok {
		err = k.idx.applyErasure(k, p, gen, seq)
	} else {
		b := k.idx.db.NewBatch()
		defer b.Close()
		err = k.idx.commit(b, seq) // malformed: only advance
	}
	if err != nil {
		return err
	}
	k.advance(seq, nil)
	return nil
}

// advance records that the index holds the key stream up to seq, or that
// following stopped with err, and wakes the waiters.
func (k *Keyring) advance(seq uint64, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.stopErr = err
	} else {
		k.applied = seq
	}
	close(k.advanced)
	k.advanced = make(chan struct{})
}

// waitApplied waits until the index holds the key stream up to seq. It
// returns errBehind if that takes longer than timeout (0: no limit).
func (k *Keyring) waitApplied(ctx context.Context, seq uint64, timeout time.Duration) error {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	for {
		k.mu.Lock()
		applied, advanced, stopErr := k.applied, k.advanced, k.stopErr
		k.mu.Unlock()
		if applied >= seq {
			return nil
		}
		if errors.Is(stopErr, ErrClosed) {
			return stopErr
		}
		if stopErr != nil {
			return fmt.Errorf("%w: following the key stream: %w", ErrClosed, stopErr)
		}
		select {
		case <-advanced:
		case <-expired:
			return errBehind
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var errBehind = errors.New("crypto: key index behind the key stream")

// refresh waits until the index holds every message the key stream held
// when refresh was called.
func (k *Keyring) refresh(ctx context.Context) error {
	info, err := k.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("crypto: key stream: %w", err)
	}
	last := info.State.LastSeq
	for {
		err := k.waitApplied(ctx, last, refreshProbe)
		if !errors.Is(err, errBehind) {
			return err
		}
		// The last messages may have been deleted before the follower read
		// them: the index is complete if nothing up to last is left.
		k.mu.Lock()
		applied := k.applied
		k.mu.Unlock()
		next, err := k.stream.GetMsg(ctx, applied+1, jetstream.WithGetMsgSubject(k.allKeys))
		if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && next.Sequence > last {
			return nil
		}
		if err != nil {
			return fmt.Errorf("crypto: key stream: %w", err)
		}
	}
}
