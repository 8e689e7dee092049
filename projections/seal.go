package projections

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/crypto"
)

// Sealed rows. A value that describes a person is stored as
//
//	uvarint(key generation) || Tink AEAD ciphertext
//
// under the person's own key (crypto.Keyring), with the row's Pebble key as
// associated data: a value copied to another row (another subject, another
// holding) does not open, and destroying the subject's key blinds every row
// of the subject, in this directory and in any copy of it.

// errRowShredded marks a row whose subject key was destroyed; callers skip
// or count such rows.
var errRowShredded = errors.New("projections: row key shredded")

var deterministic = proto.MarshalOptions{Deterministic: true}

// seal encrypts m for the row key under a subject key ("" is the ledger's
// own key): the generation, then the ciphertext.
func seal(k crypto.SubjectKey, key []byte, m proto.Message) ([]byte, error) {
	pt, err := deterministic.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("projections: marshal row: %w", err)
	}
	return sealBytes(k, key, pt)
}

func sealBytes(k crypto.SubjectKey, key, pt []byte) ([]byte, error) {
	ct, err := k.AEAD.Encrypt(pt, key)
	if err != nil {
		return nil, fmt.Errorf("projections: seal row: %w", err)
	}
	v := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen32+len(ct)), uint64(k.Generation))
	return append(v, ct...), nil
}

// open decrypts a sealed row into m. It returns errRowShredded when the key
// that sealed it is gone, and ErrCorrupt when the value does not open under
// it (altered, or moved from another row).
func open(ctx context.Context, keys *crypto.Keyring, pseudonym string, key, value []byte, m proto.Message) error {
	pt, err := openBytes(ctx, keys, pseudonym, key, value)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(pt, m); err != nil {
		return fmt.Errorf("%w: row does not decode: %w", ErrCorrupt, err)
	}
	return nil
}

func openBytes(ctx context.Context, keys *crypto.Keyring, pseudonym string, key, value []byte) ([]byte, error) {
	gen, n := binary.Uvarint(value)
	if n <= 0 || gen == 0 || gen > 1<<32-1 {
		return nil, fmt.Errorf("%w: sealed row header", ErrCorrupt)
	}
	aead, err := keys.OpeningKey(ctx, pseudonym, uint32(gen))
	switch {
	case errors.Is(err, crypto.ErrShredded), errors.Is(err, crypto.ErrKeyNotFound):
		return nil, errRowShredded
	case err != nil:
		return nil, fmt.Errorf("projections: row key: %w", err)
	}
	pt, err := aead.Decrypt(value[n:], key)
	if err != nil {
		return nil, fmt.Errorf("%w: row does not open under its subject's key", ErrCorrupt)
	}
	return pt, nil
}

// Tags. A tag is the first 8 bytes of the keyring's pseudonym PRF over a
// domain-separated name: "\x00piledger-projections\x00<kind>\x00<name>".
// Subject references never contain control characters (the ledger rejects
// them, and so does ResolveSubject), so no subject's pseudonym is a tag.
// Without the PRF key, which is stored wrapped by the KEK, tags cannot be
// computed or reversed; with it, anyone can check a guess, as with
// pseudonyms.
const (
	tagProcessor = "processor"
	tagPurpose   = "purpose"
)

// maxCachedTags bounds the tag cache. Processor and purpose names come from
// a small vocabulary and a bounded set of processors in practice; beyond the
// bound, tags are computed on every use.
const maxCachedTags = 1 << 16

type tagger struct {
	p     *crypto.Pseudonymizer
	mu    sync.RWMutex
	cache map[string]tag
}

func newTagger(p *crypto.Pseudonymizer) *tagger {
	return &tagger{p: p, cache: make(map[string]tag)}
}

func (t *tagger) tag(kind, name string) tag {
	in := "\x00piledger-projections\x00" + kind + "\x00" + name
	t.mu.RLock()
	v, ok := t.cache[in]
	t.mu.RUnlock()
	if ok {
		return v
	}
	full := t.p.Pseudonym(in)
	if _, err := hex.Decode(v[:], []byte(full[:2*tagLen])); err != nil {
		panic("projections: pseudonym is not hex") // unreachable: Pseudonym returns hex
	}
	t.mu.Lock()
	if len(t.cache) < maxCachedTags {
		t.cache[in] = v
	}
	t.mu.Unlock()
	return v
}
