package crypto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go/jetstream"
)

// Erasure (crypto-shredding) of a subject's keys.
//
// Destroy publishes an erasure marker on <prefix>.keys.erased (payload:
// "<pseudonym>:<latest generation known to the destroying node>") and then securely deletes every key message the marker covers.
// Every node's follower applies the marker in key-stream order: every key of
// the subject indexed before it (every generation, every creation-race
// loser) is dropped from the index and recorded as "to shred" (sequences
// only), the subject's tombstone records the highest destroyed generation,
// and the cached key is evicted. From then on:
//
//   - OpeningKey of a destroyed generation returns ErrShredded, on every node
//     that has applied the marker, even before the bytes are deleted;
//   - SealingKey creates generation tombstone+1: a destroyed generation is
//     never created again, so an old key is never resurrected.
//
// Index keys added for erasure:
//
//	'd' | len(pseudonym) u8 | pseudonym → highest destroyed generation u32 | marker sequence u64
//	'p' | len(pseudonym) u8 | pseudonym | sequence u64 → empty (key message still to SecureDelete)
const erasedToken = ".keys.erased"

// DestroyReport is what Destroy did, for the erasure receipt.
type DestroyReport struct {
	// Generations is the highest destroyed generation (every generation from 1
	// to it is destroyed).
	Generations uint32
	// MarkerSequence is the key-stream sequence of the erasure marker that
	// every node's follower applies (evicting the key from its cache and
	// index).
	MarkerSequence uint64
	// Overwritten is the number of key messages this call removed with
	// SecureDeleteMsg (the server overwrites their bytes before deleting);
	// AlreadyGone the number found already deleted (a repeated erasure).
	Overwritten, AlreadyGone int
}

// Destroy crypto-shreds every key generation of the subject: see the
// comment on erasedToken. It is idempotent: repeating it (after a crash, or
// on another node) deletes whatever key message is left and reports the
// ones already gone. It returns an error wrapping ErrInvalidPseudonym for an
// invalid pseudonym; the ledger's own key ("") cannot be destroyed.
func (k *Keyring) Destroy(ctx context.Context, pseudonym string) (DestroyReport, error) {
	if pseudonym == "" || !validPseudonym(pseudonym) {
		return DestroyReport{}, ErrInvalidPseudonym
	}
	// The marker names the latest generation known here, so that a node that
	// rebuilds its index after the key messages are gone still knows which
	// generations were destroyed.
	if err := k.refresh(ctx); err != nil {
		return DestroyReport{}, err
	}
	latest, _, _, err := k.idx.find(pseudonym, 0)
	if err != nil {
		return DestroyReport{}, err
	}
	if g, _, _, err := k.idx.tombstone(pseudonym); err != nil {
		return DestroyReport{}, err
	} else {
		latest = max(latest, g)
	}
	payload := pseudonym + ":" + strconv.FormatUint(uint64(latest), 10)
	ack, err := k.js.Publish(ctx, k.cfg.Prefix+erasedToken, []byte(payload), jetstream.WithExpectStream(k.cfg.StreamName))
	if err != nil {
		return DestroyReport{}, fmt.Errorf("crypto: publish erasure marker: %w", err)
	}
	if err := k.waitApplied(ctx, ack.Sequence, 0); err != nil {
		return DestroyReport{}, err
	}
	rep := DestroyReport{MarkerSequence: ack.Sequence}
	gen, _, _, err := k.idx.tombstone(pseudonym)
	if err != nil {
		return rep, err
	}
	rep.Generations = gen
	seqs, err := k.idx.toShred(shredPrefix(pseudonym))
	if err != nil {
		return rep, err
	}
	rep.Overwritten, rep.AlreadyGone, err = k.shred(ctx, seqs)
	if err != nil {
		return rep, err
	}
	k.evict(pseudonym)
	return rep, nil
}

// isNoMessageFound reports the server's answer to deleting a missing message
// (JetStream error code 10043, "sequence not found").
func isNoMessageFound(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound || apiErr.ErrorCode == 10043)
}

// gone reports whether the message at seq is no longer in the stream (the
// server's delete error does not wrap a typed error).
func gone(ctx context.Context, s jetstream.Stream, seq uint64) bool {
	_, err := s.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}

// parseMarker parses an erasure marker's payload "<pseudonym>:<generation>".
func parseMarker(data []byte) (pseudonym string, gen uint32, ok bool) {
	p, g, found := strings.Cut(string(data), ":")
	n, err := strconv.ParseUint(g, 10, 32)
	if !found || err != nil || p == "" || !validPseudonym(p) {
		return "", 0, false
	}
	return p, uint32(n), true
}

// LatestGeneration returns the subject's highest key generation, live or
// destroyed, as known once this node has applied the key stream so far (0:
// the subject never had a key). It creates nothing.
func (k *Keyring) LatestGeneration(ctx context.Context, pseudonym string) (uint32, error) {
	if err := k.refresh(ctx); err != nil {
		return 0, err
	}
	latest, _, _, err := k.idx.find(pseudonym, 0)
	if err != nil {
		return 0, err
	}
	g, _, _, err := k.idx.tombstone(pseudonym)
	if err != nil {
		return 0, err
	}
	return max(latest, g), nil
}

// Destroyed returns the highest destroyed generation of the subject (0: none)
// as this node's index knows it.
func (k *Keyring) Destroyed(pseudonym string) (uint32, error) {
	g, _, _, err := k.idx.tombstone(pseudonym)
	return g, err
}

// evict removes the subject's key from the cache under cacheMu, so that a
// lookup that loaded a destroyed key cannot put it back afterwards.
func (k *Keyring) evict(pseudonym string) {
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	k.cache.Remove(pseudonym)
}

// cacheIfLive caches sk as the subject's latest key unless its generation
// was destroyed; it reports whether the generation is live.
func (k *Keyring) cacheIfLive(pseudonym string, sk SubjectKey, add bool) (bool, error) {
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	g, _, _, err := k.idx.tombstone(pseudonym)
	if err != nil {
		return false, err
	}
	if sk.Generation <= g {
		return false, nil
	}
	if add {
		k.cache.Add(pseudonym, sk)
	}
	return true, nil
}

// applyErasure applies an erasure marker at seq to the index (committing it
// with seq as the applied sequence) and evicts the subject's cached key.
func (x *index) applyErasure(k *Keyring, pseudonym string, markerGen uint32, seq uint64) error {
	prefix := entryPrefix(pseudonym)
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("crypto: read key index: %w", err)
	}
	b := x.db.NewBatch()
	defer b.Close()
	maxGen, _, _, err := x.tombstone(pseudonym)
	if err != nil {
		it.Close()
		return err
	}
	maxGen = max(maxGen, markerGen)
	for ok := it.First(); ok; ok = it.Next() {
		g, s := parseEntryKey(it.Key(), len(pseudonym))
		maxGen = max(maxGen, g)
		_ = b.Set(shredKey(pseudonym, s), nil, nil)
		_ = b.Delete(it.Key(), nil)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("crypto: read key index: %w", err)
	}
	if err := x.shredSuperseded(b, pseudonym); err != nil { // copies a KEK rotation has not deleted yet
		return err
	}
	v := binary.BigEndian.AppendUint32(nil, maxGen)
	v = binary.BigEndian.AppendUint64(v, seq)
	_ = b.Set(tombstoneKey(pseudonym), v, nil)
	k.cacheMu.Lock()
	defer k.cacheMu.Unlock()
	if err := x.commit(b, seq); err != nil {
		return err
	}
	k.cache.Remove(pseudonym)
	return nil
}

// tombstone returns the subject's highest destroyed generation and the
// sequence of the last erasure marker; ok is false if it was never erased.
func (x *index) tombstone(pseudonym string) (gen uint32, seq uint64, ok bool, err error) {
	v, closer, err := x.db.Get(tombstoneKey(pseudonym))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("crypto: read key index: %w", err)
	}
	defer closer.Close()
	if len(v) != 12 {
		return 0, 0, false, errors.New("crypto: key index: corrupt tombstone")
	}
	return binary.BigEndian.Uint32(v), binary.BigEndian.Uint64(v[4:]), true, nil
}

// toShred returns the index keys of the destroyed key messages under prefix
// (one subject's, or every subject's) not yet deleted by this node, with
// their key-stream sequences.
func (x *index) toShred(prefix []byte) ([]shredEntry, error) {
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("crypto: read key index: %w", err)
	}
	defer it.Close()
	var out []shredEntry
	for ok := it.First(); ok; ok = it.Next() {
		key := it.Key()
		if len(key) < 8 {
			continue
		}
		out = append(out, shredEntry{key: bytes.Clone(key), seq: binary.BigEndian.Uint64(key[len(key)-8:])})
	}
	return out, it.Error()
}

type shredEntry struct {
	key []byte
	seq uint64
}

// shred removes the key messages with SecureDeleteMsg (counting those
// already gone) and then their entries from the index.
func (k *Keyring) shred(ctx context.Context, entries []shredEntry) (overwritten, alreadyGone int, err error) {
	b := k.idx.db.NewBatch()
	defer b.Close()
	for _, e := range entries {
		err := k.stream.SecureDeleteMsg(ctx, e.seq)
		switch {
		case err == nil:
			overwritten++
		case isNoMessageFound(err) || gone(ctx, k.stream, e.seq):
			alreadyGone++
		default:
			return overwritten, alreadyGone, fmt.Errorf("crypto: secure-delete key message %d: %w", e.seq, err)
		}
		_ = b.Delete(e.key, nil)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return overwritten, alreadyGone, fmt.Errorf("crypto: write key index: %w", err)
	}
	return overwritten, alreadyGone, nil
}

// completeErasures deletes every destroyed key message this node's index
// still lists: it finishes, on open, an erasure a crash interrupted between
// its marker and its deletions (on this node or another).
func (k *Keyring) completeErasures(ctx context.Context) error {
	entries, err := k.idx.toShred([]byte{'p'})
	if err != nil {
		return err
	}
	_, _, err = k.shred(ctx, entries)
	return err
}

func tombstoneKey(pseudonym string) []byte {
	return append([]byte{'d', byte(len(pseudonym))}, pseudonym...)
}

func shredPrefix(pseudonym string) []byte {
	return append([]byte{'p', byte(len(pseudonym))}, pseudonym...)
}

func shredKey(pseudonym string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(shredPrefix(pseudonym), seq)
}
