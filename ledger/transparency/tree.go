package transparency

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/tlog"
)

// The tree's Pebble layout:
//
//	'n' | level u8 | index u64     → 32-byte hash of the perfect subtree node
//	"m/applied"                    → last applied log-stream sequence u64 | tree size u64
//	"m/log"                        → identity of the log stream the tree was built from
//	"m/version"                    → treeFormat u32
//
// Integers are big-endian. Leaves are the level-0 nodes. A node, once
// written, never changes: the tree of any size up to the applied size can
// be read from the same keys.
var (
	keyApplied  = []byte("m/applied")
	keyLog      = []byte("m/log")
	keyVersion  = []byte("m/version")
	nodesStart  = []byte{'n'}
	nodesEnd    = []byte{'n' + 1}
	allKeysEnd  = []byte{0xff}
	factory     = &compact.RangeFactory{Hash: tlog.HashChildren}
	errTreeNode = errors.New("transparency: tree node missing or malformed")
)

// treeFormat is the version of the layout above; a tree of another version
// is rebuilt.
const treeFormat = 1

// Commit policy: the follower commits a synced batch whenever it has caught
// up with the log, after commitLeaves leaves, or when the oldest uncommitted
// block waited commitAfter, so that checkpoints keep up under sustained load.
const (
	commitLeaves = 1 << 16
	commitAfter  = 50 * time.Millisecond
)

func nodeKey(id compact.NodeID) []byte {
	k := make([]byte, 10)
	k[0] = 'n'
	k[1] = byte(id.Level)
	binary.BigEndian.PutUint64(k[2:], id.Index)
	return k
}

// tree is the Merkle tree read model. One goroutine runs follow; any number
// read.
type tree struct {
	db *pebble.DB

	mu      sync.Mutex
	size    uint64   // committed tree size
	applied uint64   // committed last applied block sequence
	hashes  [][]byte // committed compact range [0, size)
	root    []byte   // root of the committed tree
	grew    chan struct{}
}

// openTree opens the tree in dir. It rebuilds it from scratch (empties it)
// when it was built from another incarnation of the log (identity), has
// another format, or holds more events than the log (logSize): the log is
// the source of truth.
func openTree(dir, identity string, logSize uint64) (*tree, bool, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{pebble.DefaultLogger}})
	if err != nil {
		return nil, false, fmt.Errorf("transparency: open tree: %w", err)
	}
	t := &tree{db: db, grew: make(chan struct{})}
	rebuilt, err := t.load(identity, logSize)
	if err != nil {
		db.Close()
		return nil, false, err
	}
	return t, rebuilt, nil
}

func (t *tree) load(identity string, logSize uint64) (rebuilt bool, err error) {
	var version, built, appliedV []byte
	for _, m := range []struct {
		key []byte
		v   *[]byte
	}{{keyVersion, &version}, {keyLog, &built}, {keyApplied, &appliedV}} {
		if *m.v, err = t.getMeta(m.key); err != nil && !errors.Is(err, pebble.ErrNotFound) {
			return false, fmt.Errorf("transparency: read tree: %w", err)
		}
	}
	var applied, size uint64
	if len(appliedV) == 16 {
		applied, size = binary.BigEndian.Uint64(appliedV), binary.BigEndian.Uint64(appliedV[8:])
	}
	if !bytes.Equal(built, []byte(identity)) || len(version) != 4 || binary.BigEndian.Uint32(version) != treeFormat || size > logSize {
		rebuilt = built != nil // an empty directory is a first start, not a rebuild
		if err := t.reset(identity); err != nil {
			return false, err
		}
		applied, size = 0, 0
	}
	hashes, err := t.hashesAt(size)
	if err != nil {
		return false, err
	}
	t.size, t.applied, t.hashes = size, applied, hashes
	t.root, err = rootOf(size, hashes)
	return rebuilt, err
}

func (t *tree) reset(identity string) error {
	b := t.db.NewBatch()
	defer b.Close()
	_ = b.DeleteRange([]byte{0}, allKeysEnd, nil)
	_ = b.Set(keyLog, []byte(identity), nil)
	_ = b.Set(keyVersion, binary.BigEndian.AppendUint32(nil, treeFormat), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("transparency: reset tree: %w", err)
	}
	return nil
}

func (t *tree) getMeta(key []byte) ([]byte, error) {
	v, closer, err := t.db.Get(key)
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

func (t *tree) close() error { return t.db.Close() }

// node returns the hash of a perfect subtree node.
func (t *tree) node(id compact.NodeID) ([]byte, error) {
	v, closer, err := t.db.Get(nodeKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("%w: level %d index %d", errTreeNode, id.Level, id.Index)
	}
	if err != nil {
		return nil, fmt.Errorf("transparency: read tree: %w", err)
	}
	defer closer.Close()
	if len(v) != tlog.HashSize {
		return nil, fmt.Errorf("%w: level %d index %d", errTreeNode, id.Level, id.Index)
	}
	return bytes.Clone(v), nil
}

func (t *tree) nodes(ids []compact.NodeID) ([][]byte, error) {
	hashes := make([][]byte, len(ids))
	for i, id := range ids {
		h, err := t.node(id)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return hashes, nil
}

// hashesAt returns the compact range [0, size): the perfect subtrees that
// cover it, left to right.
func (t *tree) hashesAt(size uint64) ([][]byte, error) {
	return t.nodes(compact.RangeNodes(0, size, nil))
}

// rootOf returns the root of the tree whose compact range is hashes.
func rootOf(size uint64, hashes [][]byte) ([]byte, error) {
	if size == 0 {
		return tlog.Hasher.EmptyRoot(), nil
	}
	r, err := factory.NewRange(0, size, hashes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errTreeNode, err)
	}
	return r.GetRootHash(nil)
}

// head returns the committed tree size and root.
func (t *tree) head() (size uint64, root []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.size, t.root
}

// changed returns a channel closed at the next commit.
func (t *tree) changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.grew
}

// rootAt returns the root of the tree of size size, which must not exceed
// the committed size.
func (t *tree) rootAt(size uint64) ([]byte, error) {
	hashes, err := t.hashesAt(size)
	if err != nil {
		return nil, err
	}
	return rootOf(size, hashes)
}

// waitSize waits until the committed tree has at least size leaves.
func (t *tree) waitSize(ctx context.Context, size uint64) error {
	for {
		t.mu.Lock()
		have, grew := t.size, t.grew
		t.mu.Unlock()
		if have >= size {
			return nil
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// inclusion returns the RFC 6962 audit path of leaf index in the tree of
// size size (committed).
func (t *tree) inclusion(index, size uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	hashes, err := t.nodes(nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, tlog.HashChildren)
}

// consistency returns the RFC 6962 consistency proof from size a to size b.
func (t *tree) consistency(a, b uint64) ([][]byte, error) {
	nodes, err := proof.Consistency(a, b)
	if err != nil {
		return nil, err
	}
	hashes, err := t.nodes(nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, tlog.HashChildren)
}

// follow applies the log to the tree from the block after the committed one
// until ctx is done (then it returns ctx.Err()) or the log is inconsistent
// with the tree (a block that does not start where the tree ends: the
// error wraps ledger.ErrCorrupt).
func (t *tree) follow(ctx context.Context, led *ledger.Ledger) error {
	t.mu.Lock()
	after, size := t.applied, t.size
	rng, err := factory.NewRange(0, size, append([][]byte(nil), t.hashes...))
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %v", errTreeNode, err)
	}
	b := t.db.NewBatch()
	defer func() { b.Close() }()
	var leaves int
	var pendingSince time.Time
	visit := func(id compact.NodeID, hash []byte) {
		_ = b.Set(nodeKey(id), hash, nil)
	}
	return led.Follow(ctx, after, func(blk ledger.Block) error {
		if blk.FirstIndex != rng.End() {
			return fmt.Errorf("%w: block at sequence %d starts at log index %d, the tree holds %d events", ledger.ErrCorrupt, blk.Seq, blk.FirstIndex, rng.End())
		}
		for _, env := range blk.Envelopes {
			if err := rng.Append(tlog.LeafHash(env), visit); err != nil {
				return fmt.Errorf("%w: %v", errTreeNode, err)
			}
		}
		if leaves == 0 {
			pendingSince = time.Now()
		}
		leaves += len(blk.Envelopes)
		if blk.Pending > 0 && leaves < commitLeaves && time.Since(pendingSince) < commitAfter {
			return nil
		}
		if err := t.commit(b, blk.Seq, rng); err != nil {
			return err
		}
		b.Close()
		b, leaves = t.db.NewBatch(), 0
		return nil
	})
}

// commit writes b with the applied sequence and tree size in one synced
// batch, then publishes the new head to readers.
func (t *tree) commit(b *pebble.Batch, seq uint64, rng *compact.Range) error {
	v := binary.BigEndian.AppendUint64(nil, seq)
	v = binary.BigEndian.AppendUint64(v, rng.End())
	if err := b.Set(keyApplied, v, nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("transparency: write tree: %w", err)
	}
	hashes := append([][]byte(nil), rng.Hashes()...)
	root, err := rootOf(rng.End(), hashes)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.size, t.applied, t.hashes, t.root = rng.End(), seq, hashes, root
	close(t.grew)
	t.grew = make(chan struct{})
	t.mu.Unlock()
	return nil
}

// quietLogger drops Pebble's informational messages and keeps its errors.
type quietLogger struct{ pebble.Logger }

func (quietLogger) Infof(string, ...any) {}
