package tlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"

	"golang.org/x/mod/sumdb/note"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Options configure [Verify].
type Options struct {
	// VerifierKey is the signed-note verifier key every checkpoint must be
	// signed with: the key the operator published. When empty, the key
	// written in the bundle's header is used, which only proves that the
	// events match checkpoints signed by that key; compare
	// Report.VerifierKey with the published one.
	VerifierKey string

	// Origin, when set, must be the bundle's origin.
	Origin string

	// Progress, when set, is called after every block with the number of
	// events verified so far and the bundle bytes read. It runs on the
	// verifying goroutine and should return quickly.
	Progress func(events uint64, bytesRead int64)

	// Workers is how many goroutines hash the leaves of a block in
	// parallel; 0 means runtime.GOMAXPROCS(0). Building the tree and every
	// check stay sequential, so the result does not depend on it.
	Workers int
}

// Report is what [Verify] found. After an error it holds what was read up
// to the error.
type Report struct {
	// Origin is the bundle's origin.
	Origin string
	// VerifierKey is the key the checkpoints were checked against.
	VerifierKey string
	// KeyFromBundle is true when VerifierKey came from the bundle itself
	// rather than from Options.VerifierKey.
	KeyFromBundle bool
	// Events, Blocks and Checkpoints count what the bundle holds.
	Events, Blocks, Checkpoints uint64
	// Erased counts the events whose subject key no longer existed when the
	// bundle was written (as recorded by the exporting server; erasure does
	// not change the tree, so these events verify like any other).
	Erased uint64
	// Operations counts the events per operation, by the name of the
	// piledgerv1.Operation value ("OPERATION_COLLECT", ...), read from the
	// envelopes' clear headers.
	Operations map[string]uint64
	// Root is the recomputed root hash of the tree of all Events.
	Root []byte
	// Latest is the checkpoint of the largest tree size; nil when the bundle
	// holds none.
	Latest *Checkpoint
}

// Verify reads a bundle from r, recomputes the Merkle tree from the stored
// envelopes and checks it against every checkpoint in the bundle:
//
//   - every checkpoint carries a valid signature by the verifier key, with the
//     bundle's origin;
//   - checkpoints come in checkpoint-stream order with no sequence missing,
//     and their tree sizes never decrease (equal sizes must have equal roots);
//   - blocks come in log-stream order with no sequence missing, each starting
//     at the log index after the previous one, and every envelope decodes;
//   - the root of the first n events equals the root of every checkpoint of
//     size n. As every checkpoint is matched against the same recomputed
//     tree, each one is consistent with every earlier one;
//   - the bundle holds exactly the events of its latest checkpoint: none
//     missing at the end, none that no checkpoint covers;
//   - the end record's counts match what was read.
//
// It returns a *TamperError (errors.Is ErrTampered) at the first problem,
// saying where it is, and an error wrapping ErrUnreadable when r is not a
// readable bundle. Memory use is O(log n), plus one block and the
// checkpoints read before the tree reached their size (a few, in bundles
// piledger writes).
func Verify(r io.Reader, opts Options) (*Report, error) {
	rep := &Report{Operations: make(map[string]uint64)}
	br, err := NewBundleReader(r)
	if err != nil {
		return rep, err
	}
	h := br.Header()
	rep.Origin = h.GetOrigin()
	if opts.Origin != "" && opts.Origin != rep.Origin {
		return rep, fmt.Errorf("%w: the bundle's origin is %q, want %q", ErrBadCheckpoint, rep.Origin, opts.Origin)
	}
	rep.VerifierKey, rep.KeyFromBundle = opts.VerifierKey, opts.VerifierKey == ""
	if rep.KeyFromBundle {
		rep.VerifierKey = h.GetVerifierKey()
	}
	v, err := NewVerifier(rep.VerifierKey)
	if err != nil {
		return rep, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	vf := &verifier{
		workers:   workers,
		rep:       rep,
		origin:    rep.Origin,
		v:         v,
		nextCheck: math.MaxUint64,
	}
	defer vf.countOperations()
	var blk blockView
	for {
		rec, err := br.nextView(&blk)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, err
		}
		if rec == nil {
			if err := vf.block(&blk); err != nil {
				return rep, err
			}
			if opts.Progress != nil {
				opts.Progress(rep.Events, br.BytesRead())
			}
			continue
		}
		switch rec := rec.GetRecord().(type) {
		case *piledgerv1.BundleRecord_Block: // a block record nextView could not view (unknown fields)
			b := rec.Block
			err = vf.block(&blockView{seq: b.GetSequence(), first: b.GetFirstIndex(), envs: b.GetEnvelopes(), erased: b.GetErasedOffsets()})
		case *piledgerv1.BundleRecord_Checkpoint:
			err = vf.checkpoint(rec.Checkpoint)
		case *piledgerv1.BundleRecord_End:
			err = vf.end(rec.End)
		}
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// verifier is the state of one Verify call.
type verifier struct {
	workers int
	opBuf   []int32 // per envelope of the current block: its operation, or -1
	rep     *Report
	origin  string
	v       note.Verifier
	rng     stackRange
	lh      leafHasher

	lastBlock uint64 // sequence of the last block read
	lastCP    uint64 // sequence of the last checkpoint read
	prev      *Checkpoint
	pending   []pendingCheckpoint // read, tree not yet at their size
	nextCheck uint64              // pending[0].size, or MaxUint64

	matched      uint64 // size of the last checkpoint that matched the tree
	matchedBlock uint64 // block holding log index matched

	ops      [32]uint64 // events per operation number below 32
	otherOps map[piledgerv1.Operation]uint64
}

// countOperations fills Report.Operations from the counters.
func (vf *verifier) countOperations() {
	for op, n := range vf.ops {
		if n > 0 {
			vf.rep.Operations[piledgerv1.Operation(op).String()] += n
		}
	}
	for op, n := range vf.otherOps {
		vf.rep.Operations[op.String()] += n
	}
}

type pendingCheckpoint struct {
	seq uint64
	cp  *Checkpoint
}

func (vf *verifier) block(b *blockView) error {
	seq, first, envs := b.seq, b.first, b.envs
	switch {
	case seq <= vf.lastBlock:
		return &TamperError{Reason: fmt.Sprintf("block %d comes after block %d: blocks are repeated or out of order", seq, vf.lastBlock), FirstBlock: seq}
	case seq != vf.lastBlock+1:
		return &TamperError{Reason: "blocks are missing from the log", FirstBlock: vf.lastBlock + 1, LastBlock: seq - 1}
	case first > vf.rep.Events:
		return &TamperError{Reason: fmt.Sprintf("block %d starts at log index %d: events are missing before it", seq, first), Start: vf.rep.Events, End: first, FirstBlock: seq}
	case first < vf.rep.Events:
		return &TamperError{Reason: fmt.Sprintf("block %d starts at log index %d, inside events already read", seq, first), Start: first, End: vf.rep.Events, FirstBlock: seq}
	case len(envs) == 0:
		return &TamperError{Reason: "an empty block (the ledger never writes one)", FirstBlock: seq}
	}
	erased := b.erased
	for i, off := range erased {
		if int(off) >= len(envs) || i > 0 && off <= erased[i-1] {
			return fmt.Errorf("%w: block %d: erased offsets out of range or not increasing", ErrUnreadable, seq)
		}
	}
	vf.lastBlock = seq
	vf.rep.Blocks++
	vf.rep.Erased += uint64(len(erased))
	leaves, ops := vf.hashBlock(envs)
	for i, op := range ops {
		index := first + uint64(i)
		if op < 0 {
			return &TamperError{Reason: "the envelope does not decode", Start: index, End: index + 1, FirstBlock: seq}
		}
		if int(op) < len(vf.ops) {
			vf.ops[op]++
		} else {
			if vf.otherOps == nil {
				vf.otherOps = make(map[piledgerv1.Operation]uint64)
			}
			vf.otherOps[piledgerv1.Operation(op)]++
		}
		if index == vf.matched {
			vf.matchedBlock = seq
		}
		vf.rng.append(leaves[i*HashSize : (i+1)*HashSize])
		vf.rep.Events++
		if vf.rep.Events == vf.nextCheck {
			if err := vf.checkPending(seq); err != nil {
				return err
			}
		}
	}
	return nil
}

// parallelMin is the smallest block whose leaves are hashed in parallel.
const parallelMin = 128

// hashBlock returns the leaf hashes of envs, concatenated, and their
// operations (-1 for an envelope that does not decode), hashing on
// vf.workers goroutines.
func (vf *verifier) hashBlock(envs [][]byte) ([]byte, []int32) {
	n := len(envs)
	leaves := make([]byte, n*HashSize)
	if cap(vf.opBuf) < n {
		vf.opBuf = make([]int32, n)
	}
	ops := vf.opBuf[:n]
	if n < parallelMin || vf.workers == 1 {
		hashLeaves(&vf.lh, envs, leaves, ops)
		return leaves, ops
	}
	var wg sync.WaitGroup
	chunk := (n + vf.workers - 1) / vf.workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Go(func() {
			var lh leafHasher
			hashLeaves(&lh, envs[lo:hi], leaves[lo*HashSize:hi*HashSize], ops[lo:hi])
		})
	}
	wg.Wait()
	return leaves, ops
}

// hashLeaves writes the leaf hash of envs[i] at leaves[32i:] and its
// operation at ops[i].
func hashLeaves(lh *leafHasher, envs [][]byte, leaves []byte, ops []int32) {
	for i, env := range envs {
		lh.hash(env, leaves[i*HashSize:i*HashSize])
		op, err := envelopeOperation(env)
		if err != nil || op < 0 {
			ops[i] = -1
			continue
		}
		ops[i] = int32(op)
	}
}

func (vf *verifier) checkpoint(c *piledgerv1.BundleCheckpoint) error {
	seq := c.GetSequence()
	switch {
	case seq <= vf.lastCP:
		return &TamperError{Reason: fmt.Sprintf("checkpoint %d comes after checkpoint %d: checkpoints are repeated or out of order", seq, vf.lastCP), Checkpoint: seq}
	case seq != vf.lastCP+1:
		return &TamperError{Reason: fmt.Sprintf("checkpoints %d..%d are missing", vf.lastCP+1, seq-1), Checkpoint: seq}
	}
	vf.lastCP = seq
	vf.rep.Checkpoints++
	cp, err := OpenCheckpoint([]byte(c.GetNote()), vf.origin, vf.v)
	if err != nil {
		return &TamperError{Reason: fmt.Sprintf("the checkpoint's signature does not verify under %s (%v)", vf.v.Name(), errors.Unwrap(err)), Checkpoint: seq}
	}
	if p := vf.prev; p != nil {
		switch {
		case cp.Size < p.Size:
			return &TamperError{Reason: fmt.Sprintf("the tree size went down from %d to %d: a signed rollback", p.Size, cp.Size), Checkpoint: seq}
		case cp.Size == p.Size && !bytes.Equal(cp.Hash, p.Hash):
			return &TamperError{Reason: fmt.Sprintf("two checkpoints of size %d have different roots: a signed fork", cp.Size), Checkpoint: seq}
		}
	}
	vf.prev = cp
	if vf.rep.Latest == nil || cp.Size > vf.rep.Latest.Size {
		vf.rep.Latest = cp
	}
	if cp.Size < vf.rep.Events {
		return &TamperError{
			Reason: fmt.Sprintf("the checkpoint of size %d comes after event %d: events were inserted before it, or records were moved", cp.Size, vf.rep.Events-1),
			Start:  cp.Size, End: vf.rep.Events, FirstBlock: vf.lastBlock, Checkpoint: seq,
		}
	}
	vf.pending = append(vf.pending, pendingCheckpoint{seq: seq, cp: cp})
	vf.nextCheck = vf.pending[0].cp.Size
	if cp.Size == vf.rep.Events {
		return vf.checkPending(vf.lastBlock)
	}
	return nil
}

// checkPending compares the tree with every pending checkpoint of its
// current size. block is the block holding the last event read.
func (vf *verifier) checkPending(block uint64) error {
	size := vf.rep.Events
	var root []byte
	for len(vf.pending) > 0 && vf.pending[0].cp.Size == size {
		p := vf.pending[0]
		if root == nil {
			root = vf.root()
		}
		if !bytes.Equal(root, p.cp.Hash) {
			e := &TamperError{
				Reason: fmt.Sprintf("the events do not match the root signed for tree size %d: events after the last matching checkpoint (size %d) were altered, removed, inserted or reordered",
					size, vf.matched),
				Start: vf.matched, End: size,
				FirstBlock: vf.matchedBlock, LastBlock: block,
				Checkpoint: p.seq,
			}
			if size == vf.matched { // nothing between: the root itself is wrong
				e.Start, e.End, e.FirstBlock, e.LastBlock = 0, size, 0, 0
			}
			return e
		}
		vf.pending = vf.pending[1:]
		vf.matched, vf.matchedBlock = size, block
	}
	vf.nextCheck = math.MaxUint64
	if len(vf.pending) > 0 {
		vf.nextCheck = vf.pending[0].cp.Size
	}
	return nil
}

func (vf *verifier) root() []byte { return vf.rng.root() }

func (vf *verifier) end(e *piledgerv1.BundleEnd) error {
	rep := vf.rep
	if e.GetBlocks() != rep.Blocks || e.GetEvents() != rep.Events || e.GetCheckpoints() != rep.Checkpoints {
		return &TamperError{Reason: fmt.Sprintf("the end record counts %d blocks, %d events and %d checkpoints, the bundle holds %d, %d and %d: records were removed or added",
			e.GetBlocks(), e.GetEvents(), e.GetCheckpoints(), rep.Blocks, rep.Events, rep.Checkpoints)}
	}
	if len(vf.pending) > 0 {
		p := vf.pending[0]
		return &TamperError{Reason: fmt.Sprintf("a checkpoint signs %d events but the bundle holds %d: events at the end were removed", p.cp.Size, rep.Events),
			Start: rep.Events, End: p.cp.Size, Checkpoint: p.seq}
	}
	if rep.Events > vf.matched {
		return &TamperError{Reason: fmt.Sprintf("events after the latest checkpoint (size %d) are covered by no signed checkpoint", vf.matched),
			Start: vf.matched, End: rep.Events, FirstBlock: vf.matchedBlock, LastBlock: vf.lastBlock}
	}
	rep.Root = vf.root()
	return nil
}
