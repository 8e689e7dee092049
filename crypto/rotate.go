package crypto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// KEK rotation: every live key in the key stream is re-wrapped under the
// current KEK epoch, then the older epochs are destroyed, so that every copy
// of a wrapped key made before (backups, replicas, freed disk blocks) can no
// longer be unwrapped. See docs/KEK-ROTATION.md.
//
// A re-wrapped key is a new message on the subject of the key it replaces,
// with the same role, pseudonym, generation, creation time and keyset, the
// new epoch in its associated data, and the header
//
//	Piledger-Rewrap-Of: <key-stream sequence of the message it replaces>
//
// The old message is deleted (SecureDeleteMsg) only once the re-wrap is
// acknowledged and in the rotating node's index, so a crash at any point
// leaves every key readable, and running Rotate again finishes the work.
//
// Subject keys. A creation race leaves several messages for a (pseudonym,
// generation); the first in stream order is the key. A re-wrap is the
// explicit exception: when a node's follower indexes one, every message of
// its (pseudonym, generation) indexed before it (the old copy, creation-race
// losers, an earlier re-wrap) moves from the entries to the superseded set,
// and the re-wrap becomes the key. It holds the same keyset, because only the
// key itself is ever re-wrapped. A node that rebuilds its index after the old
// copy is gone sees the re-wrap win over any loser left.
//
//	's' | len(pseudonym) u8 | pseudonym | sequence u64 → empty: superseded, the rotation deletes it
//
// An erasure of the subject before the rotation deleted them shreds the
// superseded messages with the rest (applyErasure). Once a rotation has
// deleted every superseded message it publishes a marker on
// <prefix>.keys.rotated (payload: the epoch), and every follower empties its
// superseded set.
//
// The pseudonym PRF key and the ledger's signing key are the first message
// on their subjects: their re-wrap is published after the old message, then
// every message between the two is deleted, and the old message last, so
// that the first message is always the same keyset.
const (
	rewrapHeader = "Piledger-Rewrap-Of"
	rotatedToken = ".keys.rotated"
)

// Rotation tuning.
const (
	// rotateBatch is how many re-wrapped keys Rotate publishes before it
	// waits for their acknowledgements and deletes the old messages.
	rotateBatch = 256
	// rotatePasses bounds the passes over the key stream: the first
	// re-wraps, the next one normally finds nothing left to do.
	rotatePasses = 4
	// scanProbe is how long a scan waits for the next message before it
	// checks whether the rest was deleted.
	scanProbe = 200 * time.Millisecond
)

// RotatableKEK is a [KEK] whose epochs can be started and destroyed, as
// those of [LocalKEK] can. [Keyring.Rotate] uses it to start an epoch and to
// destroy the older ones.
type RotatableKEK interface {
	KEK
	// Epochs returns the epochs whose KEK is available, in increasing
	// order; the last one is the current epoch.
	Epochs() []uint32
	// NewEpoch makes a new epoch current and returns it.
	NewEpoch() (uint32, error)
	// DestroyEpoch destroys the KEK of an epoch older than the current one.
	// Destroying a destroyed epoch is not an error.
	DestroyEpoch(epoch uint32) error
}

var _ RotatableKEK = (*LocalKEK)(nil)

// RotateOptions configures [Keyring.Rotate].
type RotateOptions struct {
	// NewEpoch starts a new epoch before re-wrapping, unless an earlier
	// rotation has not finished (the KEK still holds an epoch older than the
	// current one), which Rotate then finishes instead. Without it, Rotate
	// re-wraps under the current epoch: nothing to do when every key is
	// already under it and no older epoch is left.
	NewEpoch bool

	// PlainDelete deletes the old copies of re-wrapped keys with DeleteMsg
	// instead of SecureDeleteMsg, which rewrites the message's whole block
	// file (up to 8 MB) for each key: several times faster on a large key
	// stream, but the old copies' bytes stay in the block files, wrapped
	// under the old epoch, until the server compacts those blocks. Once the
	// old epoch is destroyed they are as useless as any other remnant; until
	// then, and to anyone who kept a copy of the old KEK, they are copies of
	// the keys (including of subjects erased later). Destroyed keys are
	// always overwritten.
	PlainDelete bool

	// TokenKeyDir, if set, is the directory of the embedded token issuer's
	// key ([OpenTokenKey]), which is stored in a file, not in the key stream:
	// Rotate re-wraps it too before it destroys the older epochs.
	TokenKeyDir string

	// For tests: the number of keys re-wrapped per batch (default
	// rotateBatch), and a hook called after each batch of re-wraps is
	// acknowledged and indexed, before the old messages are deleted, with
	// the number re-wrapped so far; an error stops Rotate as a crash would.
	batch       int
	afterRewrap func(rewrapped int) error
}

// RotateReport is what [Keyring.Rotate] did.
type RotateReport struct {
	// Epoch is the epoch every live key is wrapped under.
	Epoch uint32
	// NewEpoch reports whether this call started Epoch.
	NewEpoch bool
	// Live is the number of live keys in the key stream (subject keys of
	// every live generation, the ledger's own key, the pseudonym PRF key, the
	// signing key); Rewrapped how many of them this call re-wrapped.
	Live      int
	Rewrapped int
	// SkippedDestroyed is the number of erased subjects (their keys were
	// destroyed by an erasure): none of their keys is re-wrapped.
	SkippedDestroyed int
	// Overwritten is the number of key messages under an older epoch removed
	// with SecureDeleteMsg: the previous copies of the re-wrapped keys,
	// creation-race losers, and destroyed keys an interrupted erasure left.
	// AlreadyGone counts those found already deleted.
	Overwritten int
	AlreadyGone int
	// Deleted is the number of old key messages removed with DeleteMsg
	// (PlainDelete).
	Deleted int
	// TokenKeyRewrapped reports whether the token issuer's key file in
	// TokenKeyDir was re-wrapped.
	TokenKeyRewrapped bool
	// Retired lists the epochs whose KEK this call destroyed. It is empty
	// when the KEK is not a RotatableKEK: destroy them in the KMS.
	Retired []uint32
	// Duration is how long the rotation took.
	Duration time.Duration
}

// Rotate re-wraps every live key of the key stream under the current KEK
// epoch (after starting a new one with opts.NewEpoch), deletes the copies
// under older epochs with SecureDeleteMsg (DeleteMsg with opts.PlainDelete),
// re-wraps the token key in opts.TokenKeyDir, and then destroys every older
// epoch of a [RotatableKEK]. The keys of erased subjects are not re-wrapped.
// Keysets do not change: everything sealed before opens after, on every node.
//
// Before it writes anything, Rotate reads the whole key stream and unwraps
// every live key; it refuses, with an error wrapping ErrUnknownEpoch, a key
// stream that holds keys of an epoch newer than this KEK's (another node
// rotated: copy its KEK files here first), and stops with the KEK's error on
// a live key that does not unwrap. It destroys no epoch unless a full pass
// over the stream finds every live key under the current epoch
// (ErrRotationIncomplete otherwise: a node still wraps new keys under an
// old epoch).
//
// Rotate is idempotent and crash-safe: an old message is deleted only once
// its re-wrap is acknowledged (on disk) and indexed, so at every point every
// key opens; calling Rotate again finishes an interrupted rotation. Other
// nodes keep working during a rotation provided their KEK holds the new
// epoch (they must be able to unwrap the re-wrapped keys and must no longer
// wrap new keys under the old one). Calls on one Keyring are serialized.
func (k *Keyring) Rotate(ctx context.Context, opts RotateOptions) (RotateReport, error) {
	k.rotateMu.Lock()
	defer k.rotateMu.Unlock()
	start := time.Now()
	if opts.batch <= 0 {
		opts.batch = rotateBatch
	}
	rk, rotatable := k.kek.(RotatableKEK)
	if opts.NewEpoch && !rotatable {
		return RotateReport{}, fmt.Errorf("%w: the KEK cannot start an epoch (rotate it in its KMS)", ErrInvalidConfig)
	}
	if err := k.refresh(ctx); err != nil {
		return RotateReport{}, err
	}
	if err := k.checkKeys(ctx); err != nil {
		return RotateReport{}, err
	}
	var rep RotateReport
	if opts.NewEpoch && len(rk.Epochs()) == 1 {
		if _, err := rk.NewEpoch(); err != nil {
			return rep, err
		}
		rep.NewEpoch = true
	}
	rep.Epoch = k.kek.CurrentEpoch()

	work := 0
	for pass := 1; ; pass++ {
		if pass > rotatePasses {
			return rep, fmt.Errorf("%w: keys under an older epoch keep appearing in the key stream: a node still wraps new keys under it (give every node the KEK of epoch %d and restart it)",
				ErrRotationIncomplete, rep.Epoch)
		}
		p := &rotation{k: k, opts: opts, rep: &rep, epoch: rep.Epoch, singles: map[string][]keyMsg{}}
		if err := k.scanKeys(ctx, func(m keyMsg) error { return p.visit(ctx, m) }); err != nil {
			return rep, err
		}
		if err := p.flush(ctx); err != nil {
			return rep, err
		}
		if err := p.rotateSingletons(ctx); err != nil {
			return rep, err
		}
		work += p.work
		if p.work == 0 {
			rep.Live = p.live
			break
		}
	}
	var err error
	if rep.SkippedDestroyed, err = k.idx.countTombstones(); err != nil {
		return rep, err
	}
	if opts.TokenKeyDir != "" {
		if rep.TokenKeyRewrapped, err = rewrapTokenKey(ctx, k.kek, opts.TokenKeyDir); err != nil {
			return rep, err
		}
	}

	var older []uint32
	if rotatable {
		for _, e := range rk.Epochs() {
			if e < rep.Epoch {
				older = append(older, e)
			}
		}
	}
	if work > 0 || len(older) > 0 {
		// Every superseded message is deleted: followers drop their
		// superseded sets.
		ack, err := k.js.Publish(ctx, k.rotated, []byte(strconv.FormatUint(uint64(rep.Epoch), 10)), jetstream.WithExpectStream(k.cfg.StreamName))
		if err != nil {
			return rep, fmt.Errorf("crypto: publish rotation marker: %w", err)
		}
		if err := k.waitApplied(ctx, ack.Sequence, 0); err != nil {
			return rep, err
		}
	}
	for _, e := range older {
		if err := rk.DestroyEpoch(e); err != nil {
			return rep, err
		}
		rep.Retired = append(rep.Retired, e)
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// keyMsg is a message of the key stream as a rotation reads it.
type keyMsg struct {
	seq     uint64
	subject string
	wk      *piledgerv1.WrappedKey // nil if the message is not a wrapped key
	rewrap  bool                   // it carries rewrapHeader
}

// isKey reports whether m is a subject key the index indexes.
func (m keyMsg) isKey() bool {
	return m.wk != nil && validPseudonym(m.wk.GetPseudonym()) && m.wk.GetGeneration() > 0
}

// singletonRole returns the role of the keys stored as the first message on
// subject (the pseudonym PRF key, the signing key).
func (k *Keyring) singletonRole(subject string) (string, bool) {
	switch subject {
	case k.cfg.Prefix + prfToken:
		return rolePRF, true
	case k.cfg.Prefix + signerToken:
		return roleLogSigner, true
	}
	return "", false
}

// scanKeys calls fn for every message of the key stream, in stream order, up
// to the stream's last sequence when the scan starts.
func (k *Keyring) scanKeys(ctx context.Context, fn func(keyMsg) error) error {
	info, err := k.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("crypto: key stream: %w", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := k.js.OrderedConsumer(ctx, k.cfg.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{k.allKeys}})
	if err != nil {
		return fmt.Errorf("crypto: read key stream: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("crypto: read key stream: %w", err)
	}
	defer it.Stop()
	var seen uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		msg, err := it.Next(jetstream.NextMaxWait(scanProbe))
		if errors.Is(err, nats.ErrTimeout) {
			// The rest up to last may have been deleted since the scan began.
			next, err := k.stream.GetMsg(ctx, seen+1, jetstream.WithGetMsgSubject(k.allKeys))
			if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && next.Sequence > last {
				return nil
			}
			if err != nil {
				return fmt.Errorf("crypto: read key stream: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("crypto: read key stream: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("crypto: key stream message: %w", err)
		}
		seq := meta.Sequence.Stream
		if seq > last {
			return nil
		}
		seen = seq
		m := keyMsg{seq: seq, subject: msg.Subject(), rewrap: msg.Headers().Get(rewrapHeader) != ""}
		if m.subject != k.erased && m.subject != k.rotated {
			var wk piledgerv1.WrappedKey
			if proto.Unmarshal(msg.Data(), &wk) == nil {
				m.wk = &wk
			}
		}
		if err := fn(m); err != nil {
			return err
		}
		if seq >= last || meta.NumPending == 0 {
			return nil
		}
	}
}

// isWinner reports whether m is the key of its (pseudonym, generation) in the
// index.
func (k *Keyring) isWinner(m keyMsg) (bool, error) {
	_, seq, ok, err := k.idx.find(m.wk.GetPseudonym(), m.wk.GetGeneration())
	return ok && seq == m.seq, err
}

// checkKeys reads the key stream and unwraps every live key, before Rotate
// changes anything. It fails if a key is wrapped under an epoch newer than
// the KEK's current one, if a live key does not unwrap, or if the stream
// holds messages this version cannot re-wrap.
func (k *Keyring) checkKeys(ctx context.Context) error {
	current := k.kek.CurrentEpoch()
	seen := map[string]bool{} // singleton subjects whose first message was seen
	return k.scanKeys(ctx, func(m keyMsg) error {
		var role string
		var live bool
		switch single, isSingle := k.singletonRole(m.subject); {
		case m.subject == k.erased || m.subject == k.rotated:
			return nil
		case m.subject == k.subjectKeys:
			if !m.isKey() {
				return nil // not a key: the index ignores it too
			}
			var err error
			if live, err = k.isWinner(m); err != nil {
				return err
			}
			role = roleSubjectKey
		case isSingle:
			if m.wk == nil {
				return fmt.Errorf("%w: %s at key-stream sequence %d is not a wrapped key", ErrInvalidKey, m.subject, m.seq)
			}
			live, role = !seen[m.subject], single
			seen[m.subject] = true
		default:
			return fmt.Errorf("%w: key-stream subject %s (sequence %d) is unknown to this version, which cannot re-wrap it",
				ErrRotationIncomplete, m.subject, m.seq)
		}
		if e := m.wk.GetKekEpoch(); e > current {
			return fmt.Errorf("%w: key-stream sequence %d is wrapped under KEK epoch %d, newer than this KEK's current epoch %d: copy the KEK files of the node that rotated into this KEK directory",
				ErrUnknownEpoch, m.seq, e, current)
		}
		if !live {
			return nil
		}
		if _, err := unwrapKey(ctx, k.kek, role, m.wk); err != nil {
			return fmt.Errorf("%w: live key at key-stream sequence %d: %w", ErrRotationIncomplete, m.seq, err)
		}
		return nil
	})
}

// rotation is one pass of Rotate over the key stream.
type rotation struct {
	k       *Keyring
	opts    RotateOptions
	rep     *RotateReport
	epoch   uint32
	batch   []keyMsg            // live subject keys to re-wrap
	singles map[string][]keyMsg // messages on the PRF and signer subjects
	work    int                 // messages published or deleted
	live    int                 // live keys seen
	// deleted holds the messages other than re-wrapped keys' old copies
	// that this pass deleted (creation-race losers, mostly), so that each
	// is deleted and counted once.
	deleted map[uint64]bool
}

func (r *rotation) visit(ctx context.Context, m keyMsg) error {
	k := r.k
	if _, ok := k.singletonRole(m.subject); ok {
		if m.wk != nil {
			r.singles[m.subject] = append(r.singles[m.subject], m)
		}
		return nil
	}
	if m.subject != k.subjectKeys || !m.isKey() {
		return nil
	}
	win, err := k.isWinner(m)
	switch {
	case err != nil:
		return err
	case win && m.wk.GetKekEpoch() == r.epoch:
		r.live++
	case win:
		r.live++
		r.batch = append(r.batch, m)
		if len(r.batch) >= r.opts.batch {
			return r.flush(ctx)
		}
	case m.wk.GetKekEpoch() < r.epoch && !r.deleted[m.seq]:
		// Not the key (a previous copy, a creation-race loser, a destroyed
		// key): it never opens anything again. A destroyed key is always
		// overwritten.
		destroyed, _, _, err := k.idx.tombstone(m.wk.GetPseudonym())
		if err != nil {
			return err
		}
		r.markDeleted(m.seq)
		return r.delete(ctx, m.seq, !r.opts.PlainDelete || m.wk.GetGeneration() <= destroyed)
	}
	return nil
}

// flush publishes the re-wraps of the batch, waits until they are
// acknowledged and indexed, and then deletes the messages they supersede.
func (r *rotation) flush(ctx context.Context) error {
	if len(r.batch) == 0 {
		return nil
	}
	k := r.k
	acks := make([]jetstream.PubAckFuture, 0, len(r.batch))
	for _, m := range r.batch {
		data, err := rewrapKey(ctx, k.kek, roleSubjectKey, m.wk, r.epoch)
		if err != nil {
			return fmt.Errorf("crypto: re-wrap key-stream sequence %d: %w", m.seq, err)
		}
		msg := nats.NewMsg(k.subjectKeys)
		msg.Data = data
		msg.Header.Set(rewrapHeader, strconv.FormatUint(m.seq, 10))
		f, err := k.js.PublishMsgAsync(msg, jetstream.WithExpectStream(k.cfg.StreamName))
		if err != nil {
			return fmt.Errorf("crypto: store re-wrapped key: %w", err)
		}
		acks = append(acks, f)
	}
	var last uint64
	for _, f := range acks {
		select {
		case ack := <-f.Ok():
			last = max(last, ack.Sequence)
		case err := <-f.Err():
			return fmt.Errorf("crypto: store re-wrapped key: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := k.waitApplied(ctx, last, 0); err != nil {
		return err
	}
	r.rep.Rewrapped += len(r.batch)
	r.work += len(r.batch)
	if r.opts.afterRewrap != nil {
		if err := r.opts.afterRewrap(r.rep.Rewrapped); err != nil {
			return err
		}
	}
	for _, m := range r.batch {
		if err := r.deleteSuperseded(ctx, m); err != nil {
			return err
		}
	}
	r.batch = r.batch[:0]
	return nil
}

// deleteSuperseded deletes the old message m, now that its re-wrap is
// indexed, and every other message its re-wrap superseded (creation-race
// losers). m goes last: until it is gone it is the first message of its
// generation in the stream, so an index rebuilt meanwhile never takes a loser
// for the key.
func (r *rotation) deleteSuperseded(ctx context.Context, m keyMsg) error {
	k := r.k
	p, g := m.wk.GetPseudonym(), m.wk.GetGeneration()
	_, seq, ok, err := k.idx.find(p, g)
	switch {
	case err != nil:
		return err
	case ok && seq == m.seq:
		return fmt.Errorf("crypto: the re-wrap of key-stream sequence %d did not replace it in the index", m.seq)
	case !ok:
		// Erased meanwhile: the re-wrap may have arrived after the erasure
		// deleted the subject's keys; shred everything left of the subject,
		// as Destroy does.
		r.live--
		entries, err := k.idx.toShred(shredPrefix(p))
		if err != nil {
			return err
		}
		n, gone, err := k.shred(ctx, entries)
		r.rep.Overwritten += n
		r.rep.AlreadyGone += gone
		r.work += n + gone
		if err != nil {
			return err
		}
		return r.delete(ctx, m.seq, true)
	}
	entries, err := k.idx.toShred(supersededPrefix(p))
	if err != nil {
		return err
	}
	var losers []uint64
	for _, e := range entries {
		if e.seq != m.seq && !r.deleted[e.seq] {
			losers = append(losers, e.seq)
		}
	}
	for _, seq := range append(losers, m.seq) {
		if seq != m.seq {
			r.markDeleted(seq)
		}
		if err := r.delete(ctx, seq, !r.opts.PlainDelete); err != nil {
			return err
		}
	}
	return k.idx.forget(entries)
}

func (r *rotation) markDeleted(seq uint64) {
	if r.deleted == nil {
		r.deleted = map[uint64]bool{}
	}
	r.deleted[seq] = true
}

// delete removes an old key message, with SecureDeleteMsg if secure.
func (r *rotation) delete(ctx context.Context, seq uint64, secure bool) error {
	var err error
	if secure {
		err = r.k.stream.SecureDeleteMsg(ctx, seq)
	} else {
		err = r.k.stream.DeleteMsg(ctx, seq)
	}
	switch {
	case err == nil:
		if secure {
			r.rep.Overwritten++
		} else {
			r.rep.Deleted++
		}
	case isNoMessageFound(err) || gone(ctx, r.k.stream, seq):
		r.rep.AlreadyGone++
	default:
		return fmt.Errorf("crypto: delete key message %d: %w", seq, err)
	}
	r.work++
	return nil
}

// rotateSingletons re-wraps the PRF and signing keys, each the first message
// on its subject.
func (r *rotation) rotateSingletons(ctx context.Context) error {
	for subject, msgs := range r.singles {
		if err := r.rotateSingleton(ctx, subject, msgs); err != nil {
			return err
		}
	}
	return nil
}

// rotateSingleton makes a message under the current epoch with the keyset of
// the first message on subject (msgs, in stream order) the first one: it
// publishes the re-wrap (or reuses one an interrupted rotation published),
// deletes every message between the two, then the old first one. Messages
// under an older epoch after the re-wrap are deleted too.
func (r *rotation) rotateSingleton(ctx context.Context, subject string, msgs []keyMsg) error {
	k := r.k
	role, _ := k.singletonRole(subject)
	first := msgs[0]
	keep := first.seq
	if first.wk.GetKekEpoch() != r.epoch {
		keep = 0
		for _, m := range msgs[1:] {
			if m.rewrap && m.wk.GetKekEpoch() == r.epoch {
				keep = m.seq
				break
			}
		}
		if keep == 0 {
			data, err := rewrapKey(ctx, k.kek, role, first.wk, r.epoch)
			if err != nil {
				return fmt.Errorf("crypto: re-wrap key-stream sequence %d: %w", first.seq, err)
			}
			msg := nats.NewMsg(subject)
			msg.Data = data
			msg.Header.Set(rewrapHeader, strconv.FormatUint(first.seq, 10))
			ack, err := k.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(k.cfg.StreamName))
			if err != nil {
				return fmt.Errorf("crypto: store re-wrapped %s keyset: %w", role, err)
			}
			keep = ack.Sequence
			r.rep.Rewrapped++
			r.work++
		}
	}
	r.live++
	for _, m := range msgs[1:] {
		if m.seq < keep || m.seq > keep && m.wk.GetKekEpoch() < r.epoch {
			if err := r.delete(ctx, m.seq, !r.opts.PlainDelete); err != nil {
				return err
			}
		}
	}
	if keep != first.seq {
		return r.delete(ctx, first.seq, !r.opts.PlainDelete)
	}
	return nil
}

// rewrapKey returns the keyset of wk (wrapped for role) wrapped under the KEK
// of epoch instead, as a marshaled WrappedKey with wk's pseudonym,
// generation and creation time.
func rewrapKey(ctx context.Context, kek KEK, role string, wk *piledgerv1.WrappedKey, epoch uint32) ([]byte, error) {
	h, err := unwrapKey(ctx, kek, role, wk)
	if err != nil {
		return nil, err
	}
	kekAEAD, err := kek.AEAD(ctx, epoch)
	if err != nil {
		return nil, fmt.Errorf("crypto: wrap key: %w", err)
	}
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), kekAEAD, associatedData(role, wk.GetPseudonym(), wk.GetGeneration(), epoch)); err != nil {
		return nil, fmt.Errorf("crypto: wrap key: %w", err)
	}
	return proto.Marshal(&piledgerv1.WrappedKey{
		Pseudonym:  wk.GetPseudonym(),
		Generation: wk.GetGeneration(),
		KekEpoch:   epoch,
		Keyset:     buf.Bytes(),
		CreateTime: wk.GetCreateTime(),
	})
}

// rewrapTokenKey re-wraps the token issuer's key file in dir under the
// current epoch, replacing the file atomically (a private temporary file,
// synced, renamed over it, directory synced). It reports false when there
// is no such file or it is already under the current epoch.
func rewrapTokenKey(ctx context.Context, kek KEK, dir string) (bool, error) {
	path := filepath.Join(dir, TokenKeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("crypto: read token key: %w", err)
	}
	var wk piledgerv1.WrappedKey
	if err := proto.Unmarshal(data, &wk); err != nil {
		return false, fmt.Errorf("%w: token key %s: %v", ErrInvalidKey, path, err)
	}
	epoch := kek.CurrentEpoch()
	if wk.GetKekEpoch() == epoch {
		return false, nil
	}
	data, err = rewrapKey(ctx, kek, roleTokenSigner, &wk, epoch)
	if err != nil {
		return false, fmt.Errorf("crypto: re-wrap token key %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, ".token-signer-*.tmp") // mode 0600
	if err != nil {
		return false, fmt.Errorf("crypto: re-wrap token key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return false, fmt.Errorf("crypto: write token key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, fmt.Errorf("crypto: sync token key: %w", err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("crypto: close token key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("crypto: install token key: %w", err)
	}
	return true, syncDir(dir)
}

// rewrapped reports the sequence of the key of (pseudonym, gen) after the
// message at seq was found deleted: a rotation deletes a key's old message
// once its re-wrap is in the stream, which this node may not have indexed
// yet. ok is false if the key is not elsewhere (it was erased).
func (k *Keyring) rewrapped(ctx context.Context, pseudonym string, gen uint32, seq uint64) (uint64, bool, error) {
	if err := k.refresh(ctx); err != nil {
		return 0, false, err
	}
	_, s, ok, err := k.idx.find(pseudonym, gen)
	if err != nil || !ok || s == seq {
		return 0, false, err
	}
	return s, true, nil
}

// applyRotated applies a rotation marker from the key stream: the rotation
// deleted every superseded message, so the superseded set is dropped.
func (k *Keyring) applyRotated(msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("crypto: key stream message: %w", err)
	}
	b := k.idx.db.NewBatch()
	defer b.Close()
	_ = b.DeleteRange([]byte{'s'}, []byte{'s' + 1}, nil)
	if err := k.idx.commit(b, meta.Sequence.Stream); err != nil {
		return err
	}
	k.advance(meta.Sequence.Stream, nil)
	return nil
}

// supersede moves every entry of (pseudonym, gen) in b (an indexed batch)
// and the index to the superseded set: a re-wrap replaces them.
func (x *index) supersede(b *pebble.Batch, pseudonym string, gen uint32) error {
	prefix := binary.BigEndian.AppendUint32(entryPrefix(pseudonym), gen)
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("crypto: read key index: %w", err)
	}
	var keys [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, bytes.Clone(it.Key()))
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("crypto: read key index: %w", err)
	}
	for _, key := range keys {
		_, seq := parseEntryKey(key, len(pseudonym))
		if err := b.Delete(key, nil); err != nil {
			return err
		}
		if err := b.Set(supersededKey(pseudonym, seq), nil, nil); err != nil {
			return err
		}
	}
	return nil
}

// shredSuperseded adds to b, for an erasure of the subject, the moves of its
// superseded messages to the set of messages to shred.
func (x *index) shredSuperseded(b *pebble.Batch, pseudonym string) error {
	prefix := supersededPrefix(pseudonym)
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("crypto: read key index: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		key := it.Key()
		_ = b.Set(shredKey(pseudonym, binary.BigEndian.Uint64(key[len(key)-8:])), nil, nil)
		_ = b.Delete(key, nil)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("crypto: read key index: %w", err)
	}
	return nil
}

// forget removes index entries of messages already deleted.
func (x *index) forget(entries []shredEntry) error {
	if len(entries) == 0 {
		return nil
	}
	b := x.db.NewBatch()
	defer b.Close()
	for _, e := range entries {
		_ = b.Delete(e.key, nil)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("crypto: write key index: %w", err)
	}
	return nil
}

// countTombstones returns the number of erased subjects the index knows.
func (x *index) countTombstones() (int, error) {
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{'d'}, UpperBound: []byte{'d' + 1}})
	if err != nil {
		return 0, fmt.Errorf("crypto: read key index: %w", err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("crypto: read key index: %w", err)
	}
	return n, nil
}

func supersededPrefix(pseudonym string) []byte {
	return append([]byte{'s', byte(len(pseudonym))}, pseudonym...)
}

func supersededKey(pseudonym string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(supersededPrefix(pseudonym), seq)
}
