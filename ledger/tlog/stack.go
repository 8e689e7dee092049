package tlog

import (
	"crypto/sha256"
	"math/bits"

	"github.com/transparency-dev/merkle/rfc6962"
)

// stackRange is the RFC 6962 compact range [0, n) — the roots of the
// perfect subtrees that cover the first n leaves, largest first — kept in
// fixed arrays, so appending a leaf allocates nothing. It computes the same
// roots as compact.Range (the tests check it); the verifier uses it because
// it runs once per event.
type stackRange struct {
	n      uint64
	hashes [64][HashSize]byte // hashes[:bits.OnesCount64(n)]
}

// size returns the number of leaves.
func (r *stackRange) size() uint64 { return r.n }

// append adds a leaf hash: the subtrees it completes merge with it, one per
// trailing 1 bit of n.
func (r *stackRange) append(leaf []byte) {
	var h [HashSize]byte
	copy(h[:], leaf)
	k := bits.OnesCount64(r.n)
	for n := r.n; n&1 == 1; n >>= 1 {
		k--
		h = nodeHash(&r.hashes[k], &h)
	}
	r.hashes[k] = h
	r.n++
}

// root returns the tree's root hash: SHA-256("") for an empty tree,
// otherwise the subtrees folded from the right.
func (r *stackRange) root() []byte {
	k := bits.OnesCount64(r.n)
	if k == 0 {
		return Hasher.EmptyRoot()
	}
	h := r.hashes[k-1]
	for i := k - 2; i >= 0; i-- {
		h = nodeHash(&r.hashes[i], &h)
	}
	return h[:]
}

// nodeHash returns SHA-256(0x01 || l || r).
func nodeHash(l, r *[HashSize]byte) [HashSize]byte {
	var buf [1 + 2*HashSize]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	copy(buf[1:], l[:])
	copy(buf[1+HashSize:], r[:])
	return sha256.Sum256(buf[:])
}
