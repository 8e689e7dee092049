package tlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/transparency-dev/merkle/compact"
)

// TestStackRangeMatchesCompactRange checks the verifier's allocation-free
// range against the stock compact.Range at every size up to 1100.
func TestStackRangeMatchesCompactRange(t *testing.T) {
	var sr stackRange
	cr := (&compact.RangeFactory{Hash: Hasher.HashChildren}).NewEmptyRange(0)
	if !bytes.Equal(sr.root(), Hasher.EmptyRoot()) {
		t.Fatal("empty root")
	}
	for i := range 1100 {
		leaf := sha256.Sum256(binary.BigEndian.AppendUint64(nil, uint64(i)))
		sr.append(leaf[:])
		if err := cr.Append(leaf[:], nil); err != nil {
			t.Fatal(err)
		}
		want, err := cr.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := sr.root(); !bytes.Equal(got, want) || sr.size() != cr.End() {
			t.Fatalf("size %d: root %x, compact.Range says %x", i+1, got, want)
		}
	}
}

func TestHashChildrenIsRFC6962(t *testing.T) {
	l, r := sha256.Sum256([]byte("left")), sha256.Sum256([]byte("right"))
	if got, want := HashChildren(l[:], r[:]), Hasher.HashChildren(l[:], r[:]); !bytes.Equal(got, want) {
		t.Errorf("HashChildren = %x, want %x", got, want)
	}
	if got, want := HashChildren([]byte("short"), r[:]), Hasher.HashChildren([]byte("short"), r[:]); !bytes.Equal(got, want) {
		t.Errorf("HashChildren of a short input = %x, want %x", got, want)
	}
	if got, want := LeafHash([]byte("envelope")), Hasher.HashLeaf([]byte("envelope")); !bytes.Equal(got, want) {
		t.Errorf("LeafHash = %x, want %x", got, want)
	}
}
