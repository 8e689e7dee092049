package crypto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// index is the node-local Pebble map from (pseudonym, generation) to the
// key-stream sequences of the wrapped keys. It holds no key bytes: the
// wrapped keyset stays in the key stream only, so that erasing it there
// (SecureDeleteMsg) erases it.
//
// Keys:
//
//	'k' | len(pseudonym) u8 | pseudonym | generation u32 | sequence u64 → empty
//	'd' | len(pseudonym) u8 | pseudonym → erasure tombstone (see erase.go)
//	'p' | len(pseudonym) u8 | pseudonym | sequence u64 → empty: a destroyed key message to SecureDelete
//	's' | len(pseudonym) u8 | pseudonym | sequence u64 → empty: a key message superseded by its re-wrap (rotate.go)
//	"m/applied" → last applied key-stream sequence, u64
//	"m/stream"  → identity of the key stream the index was built from
//
// All integers are big-endian, so entries sort by generation, then sequence.
// Every key message of a (pseudonym, generation) is kept, not only the first:
// the first in stream order is the subject's key, the others are keys that
// lost a creation race and must be erased with it. A re-wrap of the key (KEK
// rotation) is the exception: it supersedes every message of its generation
// before it and becomes the key.
//
// The index is disposable: it is rebuilt from the key stream when missing,
// and a batch of entries is committed together with the applied sequence, so
// it is always a prefix of the stream. Writes are not synced; a crash only
// loses a tail that the next open reads again.
type index struct {
	db *pebble.DB
}

var (
	appliedKey        = []byte("m/applied")
	streamIdentityKey = []byte("m/stream")
	entriesStart      = []byte{'k'}
	entriesEnd        = []byte{'k' + 1}
)

// keyIndexCacheBytes is the key index's block cache. An entry takes about
// 90 bytes, so 64 MiB holds the index of roughly 700k subjects' keys. With
// Pebble's default (8 MiB) nearly every key lookup of a node meeting
// hundreds of thousands of subjects read and decompressed blocks from disk:
// 72% of the decryption work of a 300k-subject rebuild (docs/BENCHMARKS.md).
const keyIndexCacheBytes = 64 << 20

// openIndex opens the index in dir, emptying it if it was built from another
// incarnation of the key stream than identity.
func openIndex(dir string, identity []byte) (*index, error) {
	cache := pebble.NewCache(keyIndexCacheBytes)
	defer cache.Unref()
	db, err := pebble.Open(dir, &pebble.Options{Cache: cache, Logger: quietLogger{pebble.DefaultLogger}})
	if err != nil {
		return nil, fmt.Errorf("crypto: open key index: %w", err)
	}
	x := &index{db: db}
	if err := x.checkIdentity(identity); err != nil {
		db.Close()
		return nil, err
	}
	return x, nil
}

func (x *index) checkIdentity(identity []byte) error {
	v, closer, err := x.db.Get(streamIdentityKey)
	switch {
	case err == nil:
		same := bytes.Equal(v, identity)
		closer.Close()
		if same {
			return nil
		}
	case !errors.Is(err, pebble.ErrNotFound):
		return fmt.Errorf("crypto: read key index: %w", err)
	}
	b := x.db.NewBatch()
	defer b.Close()
	_ = b.DeleteRange(entriesStart, entriesEnd, nil)
	_ = b.DeleteRange([]byte{'d'}, []byte{'d' + 1}, nil) // tombstones
	_ = b.DeleteRange([]byte{'p'}, []byte{'p' + 1}, nil) // keys to shred
	_ = b.DeleteRange([]byte{'s'}, []byte{'s' + 1}, nil) // superseded keys
	_ = b.Delete(appliedKey, nil)
	_ = b.Set(streamIdentityKey, identity, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("crypto: reset key index: %w", err)
	}
	return nil
}

func (x *index) close() error { return x.db.Close() }

// applied returns the last key-stream sequence applied to the index.
func (x *index) applied() (uint64, error) {
	v, closer, err := x.db.Get(appliedKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("crypto: read key index: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("crypto: key index: corrupt applied sequence")
	}
	return binary.BigEndian.Uint64(v), nil
}

// add adds a key-stream message to b, an indexed batch. Subject keys are
// indexed; every other message (the PRF keyset, malformed keys) only
// advances the sequence.
func (x *index) add(b *pebble.Batch, msg jetstream.Msg, subjectKeys string) (seq, pending uint64, err error) {
	meta, err := msg.Metadata()
	if err != nil {
		return 0, 0, fmt.Errorf("crypto: key stream message: %w", err)
	}
	seq = meta.Sequence.Stream
	if msg.Subject() == subjectKeys {
		var wk piledgerv1.WrappedKey
		if proto.Unmarshal(msg.Data(), &wk) == nil && validPseudonym(wk.Pseudonym) && wk.Generation > 0 {
			// A key of a generation an erasure already destroyed (created
			// by a node that had not applied the marker yet) never seals
			// anything: it is only to be shredded.
			destroyed, _, _, err := x.tombstone(wk.Pseudonym)
			if err != nil {
				return 0, 0, err
			}
			key := entryKey(wk.Pseudonym, wk.Generation, seq)
			if wk.Generation <= destroyed {
				key = shredKey(wk.Pseudonym, seq)
			} else if msg.Headers().Get(rewrapHeader) != "" {
				if err := x.supersede(b, wk.Pseudonym, wk.Generation); err != nil {
					return 0, 0, err
				}
			}
			if err := b.Set(key, nil, nil); err != nil {
				return 0, 0, err
			}
		}
	}
	return seq, meta.NumPending, nil
}

// commit records applied as the last applied sequence in b and commits it.
func (x *index) commit(b *pebble.Batch, applied uint64) error {
	if err := b.Set(appliedKey, binary.BigEndian.AppendUint64(nil, applied), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("crypto: write key index: %w", err)
	}
	b.Reset()
	return nil
}

// find returns the generation and the winning (first) key-stream sequence of
// the subject's key of generation gen, or of its latest generation when gen is
// 0. ok is false when the index has none.
func (x *index) find(pseudonym string, gen uint32) (g uint32, seq uint64, ok bool, err error) {
	prefix := entryPrefix(pseudonym)
	if gen != 0 {
		prefix = binary.BigEndian.AppendUint32(prefix, gen)
	}
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, 0, false, fmt.Errorf("crypto: read key index: %w", err)
	}
	defer it.Close()
	if gen == 0 {
		// The latest generation sorts last; its winner is its first entry.
		if !it.Last() {
			return 0, 0, false, it.Error()
		}
		g, _ = parseEntryKey(it.Key(), len(pseudonym))
		if !it.SeekGE(binary.BigEndian.AppendUint32(prefix, g)) {
			return 0, 0, false, it.Error()
		}
	} else if !it.First() {
		return 0, 0, false, it.Error()
	}
	g, seq = parseEntryKey(it.Key(), len(pseudonym))
	return g, seq, true, it.Error()
}

func entryPrefix(pseudonym string) []byte {
	b := make([]byte, 0, 2+len(pseudonym)+4+8)
	b = append(b, 'k', byte(len(pseudonym)))
	return append(b, pseudonym...)
}

func entryKey(pseudonym string, gen uint32, seq uint64) []byte {
	b := binary.BigEndian.AppendUint32(entryPrefix(pseudonym), gen)
	return binary.BigEndian.AppendUint64(b, seq)
}

func parseEntryKey(key []byte, pseudonymLen int) (gen uint32, seq uint64) {
	rest := key[2+pseudonymLen:]
	return binary.BigEndian.Uint32(rest), binary.BigEndian.Uint64(rest[4:])
}

// prefixEnd returns the smallest key greater than every key with the prefix.
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // all 0xff: no upper bound
}

// quietLogger drops Pebble's informational messages (such as the WALs found
// at open) and keeps its errors.
type quietLogger struct{ pebble.Logger }

func (quietLogger) Infof(string, ...any) {}
