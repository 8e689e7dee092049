package tlog

import (
	"crypto/sha256"
	"hash"

	"github.com/transparency-dev/merkle/rfc6962"
)

// Hasher is the tree's hasher: RFC 6962 with SHA-256. Pass it to
// proof.VerifyInclusion and proof.VerifyConsistency.
var Hasher = rfc6962.DefaultHasher

// HashSize is the size of every hash in the tree.
const HashSize = sha256.Size

// LeafHash returns the Merkle leaf hash of a stored envelope:
// SHA-256(0x00 || envelope), the same as Hasher.HashLeaf(envelope).
// envelope MUST be the envelope's bytes exactly as stored in the log.
func LeafHash(envelope []byte) []byte {
	var h leafHasher
	return h.hash(envelope, nil)
}

// leafHasher computes leaf hashes with one reused SHA-256 state. It is not
// safe for concurrent use.
type leafHasher struct {
	d hash.Hash
}

// hash appends the leaf hash of envelope to dst and returns it.
func (h *leafHasher) hash(envelope, dst []byte) []byte {
	if h.d == nil {
		h.d = sha256.New()
	}
	h.d.Reset()
	h.d.Write([]byte{rfc6962.RFC6962LeafHashPrefix})
	h.d.Write(envelope)
	return h.d.Sum(dst)
}

// HashChildren returns the RFC 6962 interior node hash SHA-256(0x01 || l ||
// r): Hasher.HashChildren with one allocation instead of three. Use it as
// the compact.RangeFactory hash.
func HashChildren(l, r []byte) []byte {
	if len(l) != HashSize || len(r) != HashSize {
		return Hasher.HashChildren(l, r)
	}
	var buf [1 + 2*HashSize]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	copy(buf[1:], l)
	copy(buf[1+HashSize:], r)
	h := sha256.Sum256(buf[:])
	return h[:]
}
