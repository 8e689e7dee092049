package transparency_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/ledgertest"
	"github.com/piledger/piledger/ledger/tlog"
	"github.com/piledger/piledger/ledger/transparency"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

const fastInterval = 20 * time.Millisecond

// TestProofsVerifyWithStockLibraries checks every checkpoint, every
// inclusion proof and the consistency between successive checkpoints with
// the stock libraries only (note, formats/log, merkle/proof), never with
// piledger's verifier.
func TestProofsVerifyWithStockLibraries(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "n"), transparency.Config{CheckpointInterval: fastInterval})
	ctx := t.Context()
	v, err := note.NewVerifier(n.tl.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}

	var receipts []*piledgerv1.Receipt
	var cps []*log.Checkpoint
	for i, batch := range []int{1, 2, 5, 64, 1, 300} {
		receipts = append(receipts, n.appendN(t, ref(i), piledgerv1.Operation_OPERATION_COLLECT, batch)...)
		signed := n.waitSigned(t)
		cp, _, _, err := log.ParseCheckpoint(signed.Note, tlog.DefaultOrigin, v)
		if err != nil {
			t.Fatalf("log.ParseCheckpoint: %v\n%s", err, signed.Note)
		}
		if cp.Size != uint64(len(receipts)) {
			t.Fatalf("checkpoint size %d, want %d", cp.Size, len(receipts))
		}
		cps = append(cps, cp)
	}

	last := cps[len(cps)-1]
	for _, r := range receipts {
		p, err := n.tl.InclusionProof(ctx, r.GetIndex(), 0)
		if err != nil {
			t.Fatalf("InclusionProof(%d): %v", r.GetIndex(), err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(p.GetEnvelope())
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.GetIndex(), last.Size, leaf, p.GetHashes(), last.Hash); err != nil {
			t.Fatalf("proof.VerifyInclusion(%d, %d): %v", r.GetIndex(), last.Size, err)
		}
		// The leaf is the receipt's event: its clear header names it.
		var env piledgerv1.Envelope
		var h piledgerv1.EnvelopeHeader
		if proto.Unmarshal(p.GetEnvelope(), &env) != nil || proto.Unmarshal(env.GetHeader(), &h) != nil || h.GetEventId() != r.GetEventId() {
			t.Fatalf("the envelope at index %d is not event %s", r.GetIndex(), r.GetEventId())
		}
		if p.GetCheckpoint() != string(n.waitSigned(t).Note) {
			t.Errorf("the proof of %d does not carry the latest checkpoint", r.GetIndex())
		}
	}
	// Inclusion in every earlier checkpoint too.
	for _, cp := range cps {
		for i := uint64(0); i < cp.Size; i += max(1, cp.Size/7) {
			p, err := n.tl.InclusionProof(ctx, i, cp.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, rfc6962.DefaultHasher.HashLeaf(p.GetEnvelope()), p.GetHashes(), cp.Hash); err != nil {
				t.Fatalf("inclusion of %d in the checkpoint of size %d: %v", i, cp.Size, err)
			}
			if p.GetCheckpoint() == "" {
				t.Errorf("the proof against size %d carries no checkpoint, but one of that size was signed", cp.Size)
			}
		}
	}
	// Consistency between every pair of successive checkpoints.
	for i := 1; i < len(cps); i++ {
		a, b := cps[i-1], cps[i]
		p, err := n.tl.ConsistencyProof(ctx, a.Size, b.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, a.Size, b.Size, p.GetHashes(), a.Hash, b.Hash); err != nil {
			t.Fatalf("proof.VerifyConsistency(%d, %d): %v", a.Size, b.Size, err)
		}
	}
	// A wrong root does not verify: the check above is not vacuous.
	p, err := n.tl.ConsistencyProof(ctx, cps[1].Size, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(last.Hash)
	bad[0] ^= 1
	if proof.VerifyConsistency(rfc6962.DefaultHasher, cps[1].Size, last.Size, p.GetHashes(), cps[1].Hash, bad) == nil {
		t.Error("a consistency proof verified against a wrong root")
	}
}

func TestProofRangeErrors(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "n"), transparency.Config{CheckpointInterval: fastInterval})
	ctx := t.Context()
	if _, err := n.tl.InclusionProof(ctx, 0, 0); !errors.Is(err, transparency.ErrBeyondCheckpoint) {
		t.Errorf("inclusion before any checkpoint: %v, want ErrBeyondCheckpoint", err)
	}
	if _, err := n.tl.Checkpoint(ctx, 0); !errors.Is(err, transparency.ErrCheckpointNotFound) {
		t.Errorf("checkpoint of an empty log: %v, want ErrCheckpointNotFound", err)
	}
	n.appendN(t, ref(1), piledgerv1.Operation_OPERATION_COLLECT, 10)
	n.waitSigned(t)
	for _, test := range []struct {
		name      string
		inclusion bool
		a, b      uint64
		want      error
		wantField string
	}{
		{"index past the checkpoint", true, 10, 0, transparency.ErrBeyondCheckpoint, "index"},
		{"tree size past the checkpoint", true, 1, 11, transparency.ErrBeyondCheckpoint, "treeSize"},
		{"index not below the tree size", true, 5, 5, transparency.ErrInvalidRange, "index"},
		{"from zero", false, 0, 5, transparency.ErrInvalidRange, "from"},
		{"from above to", false, 6, 5, transparency.ErrInvalidRange, "from"},
		{"to past the checkpoint", false, 1, 11, transparency.ErrBeyondCheckpoint, "to"},
		{"from past the checkpoint", false, 11, 0, transparency.ErrBeyondCheckpoint, "from"},
	} {
		t.Run(test.name, func(t *testing.T) {
			var err error
			if test.inclusion {
				_, err = n.tl.InclusionProof(ctx, test.a, test.b)
			} else {
				_, err = n.tl.ConsistencyProof(ctx, test.a, test.b)
			}
			var re *transparency.RangeError
			if !errors.Is(err, test.want) || !errors.As(err, &re) || re.Field != test.wantField {
				t.Errorf("got %v, want %v on field %s", err, test.want, test.wantField)
			}
		})
	}
	if _, err := n.tl.Checkpoint(ctx, 3); !errors.Is(err, transparency.ErrCheckpointNotFound) {
		t.Errorf("checkpoint of a size never signed: %v, want ErrCheckpointNotFound", err)
	}
	if cp, err := n.tl.Checkpoint(ctx, 10); err != nil || cp.GetTreeSize() != 10 {
		t.Errorf("checkpoint of size 10: %v, %v", cp, err)
	}
}

// TestRebuildGivesSameRoot deletes the tree's directory and restarts: the
// tree rebuilt from the log has the same root, the checkpointer finds it
// consistent with what it signed before and goes on signing.
func TestRebuildGivesSameRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	cfg := transparency.Config{CheckpointInterval: fastInterval}
	n := startNode(t, dir, cfg)
	for i := range 5 {
		n.appendN(t, ref(i), piledgerv1.Operation_OPERATION_COLLECT, 1+i*37)
	}
	before := n.waitSigned(t)
	size, root := n.tl.Root()
	n.stop(t)

	if err := os.RemoveAll(filepath.Join(dir, "tree")); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, dir, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for n.tl.Size() < size && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	gotSize, gotRoot := n.tl.Root()
	if gotSize != size || !bytes.Equal(gotRoot, root) || !bytes.Equal(gotRoot, before.Hash) {
		t.Fatalf("after a rebuild: size %d root %x, want %d %x", gotSize, gotRoot, size, root)
	}
	n.appendN(t, ref(9), piledgerv1.Operation_OPERATION_ACCESS, 3)
	after := n.waitSigned(t)
	if n.tl.Stuck() != nil {
		t.Fatalf("stuck after a rebuild: %v", n.tl.Stuck())
	}
	p, err := n.tl.ConsistencyProof(ctx, before.Size, after.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, before.Size, after.Size, p.GetHashes(), before.Hash, after.Hash); err != nil {
		t.Fatalf("the checkpoint after the rebuild is not consistent with the one before: %v", err)
	}
}

// TestExportVerifies exports a log of several blocks and checkpoints and
// verifies it offline.
func TestExportVerifies(t *testing.T) {
	n := startNode(t, filepath.Join(t.TempDir(), "n"), transparency.Config{CheckpointInterval: fastInterval})
	n.appendN(t, ref(1), piledgerv1.Operation_OPERATION_COLLECT, 3)
	n.waitSigned(t)
	n.appendN(t, ref(2), piledgerv1.Operation_OPERATION_ACCESS, 2)
	n.appendN(t, ref(3), piledgerv1.Operation_OPERATION_COLLECT, 1)
	latest := n.waitSigned(t)

	rep, err := tlog.Verify(bytes.NewReader(n.export(t)), tlog.Options{VerifierKey: n.tl.VerifierKey(), Origin: tlog.DefaultOrigin})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Events != 6 || rep.Blocks != 3 || rep.Checkpoints < 2 || rep.Erased != 0 ||
		rep.Operations["OPERATION_COLLECT"] != 4 || rep.Operations["OPERATION_ACCESS"] != 2 ||
		!bytes.Equal(rep.Root, latest.Hash) || rep.KeyFromBundle {
		t.Errorf("report %+v", rep)
	}
}

// TestErasedEventsStillVerify destroys a subject's key message in the key
// stream (SecureDeleteMsg, as erasure will): its events still verify and are
// counted as erased.
func TestErasedEventsStillVerify(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	cfg := transparency.Config{CheckpointInterval: fastInterval}
	n := startNode(t, dir, cfg)
	n.appendN(t, ref(1), piledgerv1.Operation_OPERATION_COLLECT, 4)
	n.appendN(t, ref(2), piledgerv1.Operation_OPERATION_COLLECT, 3)
	n.appendN(t, ref(1), piledgerv1.Operation_OPERATION_ACCESS, 2)
	signed := n.waitSigned(t)
	n.shred(t, ref(1))
	// Caches would still hold the key until the real erasure drops them:
	// restart so that no node knows it any more.
	n.stop(t)
	n = startNode(t, dir, cfg)

	rep, err := tlog.Verify(bytes.NewReader(n.export(t)), tlog.Options{VerifierKey: n.tl.VerifierKey()})
	if err != nil {
		t.Fatalf("Verify after erasure: %v", err)
	}
	if rep.Events != 9 || rep.Erased != 6 || !bytes.Equal(rep.Root, signed.Hash) {
		t.Errorf("report: %d events, %d erased, root %x; want 9, 6, %x", rep.Events, rep.Erased, rep.Root, signed.Hash)
	}
	// And an erased event's inclusion proof still verifies.
	p, err := n.tl.InclusionProof(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 0, signed.Size, rfc6962.DefaultHasher.HashLeaf(p.GetEnvelope()), p.GetHashes(), signed.Hash); err != nil {
		t.Errorf("inclusion of an erased event: %v", err)
	}
}

// TestTamperedBlockOnDisk rewrites one byte of a stored block in the NATS
// file store with the server stopped, recomputing NATS's own record checksum
// as an operator with disk access could. The exported bundle fails
// verification at the checkpoint covering the event, naming its block and
// index range; its inclusion proof fails; and after the tree is rebuilt from
// the altered log, the node refuses to sign any further checkpoint.
func TestTamperedBlockOnDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	cfg := transparency.Config{CheckpointInterval: fastInterval}
	n := startNode(t, dir, cfg)
	var target *piledgerv1.Receipt
	for i := range 4 {
		rs := n.appendN(t, ref(i), piledgerv1.Operation_OPERATION_COLLECT, 5)
		if i == 2 {
			target = rs[3]
		}
		n.waitSigned(t)
	}
	env, _, err := n.led.EnvelopeAt(t.Context(), target.GetIndex())
	if err != nil {
		t.Fatal(err)
	}
	n.stop(t)

	tail := env[len(env)-24:] // the end of the ciphertext: unique in the store
	seq, err := ledgertest.RewriteMessage(filepath.Join(dir, "nats"), ledger.DefaultStreamName, tail, true, func(payload []byte) {
		payload[bytes.Index(payload, tail)+7] ^= 0x20
	})
	if err != nil {
		t.Fatal(err)
	}
	if seq != target.GetBlockSequence() {
		t.Fatalf("rewrote block %d, want %d", seq, target.GetBlockSequence())
	}

	n = startNode(t, dir, cfg)
	_, verr := tlog.Verify(bytes.NewReader(n.export(t)), tlog.Options{VerifierKey: n.tl.VerifierKey()})
	var te *tlog.TamperError
	if !errors.As(verr, &te) {
		t.Fatalf("Verify of the tampered log: %v, want a TamperError", verr)
	}
	if i := target.GetIndex(); i < te.Start || i >= te.End || seq < te.FirstBlock || seq > te.LastBlock || te.Checkpoint == 0 {
		t.Errorf("%v does not locate index %d in block %d", te, i, seq)
	}
	t.Logf("found: %v", te)

	// The tampered event's proof no longer verifies with the stock library.
	p, err := n.tl.InclusionProof(t.Context(), target.GetIndex(), 0)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.ParseCheckpointBody([]byte(p.GetCheckpoint()))
	if err != nil {
		t.Fatal(err)
	}
	if proof.VerifyInclusion(rfc6962.DefaultHasher, target.GetIndex(), cp.Size, rfc6962.DefaultHasher.HashLeaf(p.GetEnvelope()), p.GetHashes(), cp.Hash) == nil {
		t.Error("the inclusion proof of the tampered event verifies")
	}

	// Rebuild the tree from the altered log: it disagrees with the signed
	// checkpoints, and the node signs nothing more.
	n.stop(t)
	if err := os.RemoveAll(filepath.Join(dir, "tree")); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, dir, cfg)
	signedBefore := n.waitSigned(t)
	n.appendN(t, ref(7), piledgerv1.Operation_OPERATION_COLLECT, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 20*fastInterval+time.Second)
	defer cancel()
	if cp, err := n.tl.WaitCheckpoint(ctx, signedBefore.Size+1); err == nil {
		t.Fatalf("signed checkpoint of size %d over an altered log", cp.Size)
	}
	if err := n.tl.Stuck(); !errors.Is(err, transparency.ErrInconsistent) {
		t.Errorf("Stuck() = %v, want ErrInconsistent", err)
	}
}

// TestTwoNodesSignOneChain runs two nodes on one NATS server, appending and
// signing concurrently: the checkpoint stream stays one chain of growing,
// consistent checkpoints.
func TestTwoNodesSignOneChain(t *testing.T) {
	dir := t.TempDir()
	cfg := transparency.Config{CheckpointInterval: fastInterval}
	a := startNode(t, filepath.Join(dir, "a"), cfg)
	b := joinNode(t, a.srv, filepath.Join(dir, "b"), cfg)
	if a.tl.VerifierKey() != b.tl.VerifierKey() {
		t.Fatal("the nodes sign with different keys")
	}
	done := make(chan struct{})
	for _, nd := range []*node{a, b} {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 20 {
				nd.appendN(t, ref(i), piledgerv1.Operation_OPERATION_COLLECT, 1+i%3)
				time.Sleep(fastInterval / 3)
			}
		}()
	}
	<-done
	<-done
	// Both nodes' trees reach the whole log; then a checkpoint covers it.
	total := a.led.Size()
	if bs := b.led.Size(); bs > total {
		total = bs
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := a.tl.WaitCheckpoint(ctx, total); err != nil {
		t.Fatal(err)
	}
	rep, err := tlog.Verify(bytes.NewReader(b.export(t)), tlog.Options{VerifierKey: a.tl.VerifierKey()})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Events != total || rep.Checkpoints < 2 {
		t.Errorf("%d events in %d checkpoints, want %d events", rep.Events, rep.Checkpoints, total)
	}
	if a.tl.Stuck() != nil || b.tl.Stuck() != nil {
		t.Errorf("stuck: %v / %v", a.tl.Stuck(), b.tl.Stuck())
	}
}

// TestBlockWithBrokenChecksum flips one byte of a stored block without
// fixing NATS's record checksum: the server then no longer delivers that
// block, and verification reports it missing.
func TestBlockWithBrokenChecksum(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	cfg := transparency.Config{CheckpointInterval: fastInterval}
	n := startNode(t, dir, cfg)
	var target *piledgerv1.Receipt
	for i := range 4 {
		rs := n.appendN(t, ref(i), piledgerv1.Operation_OPERATION_COLLECT, 5)
		if i == 2 {
			target = rs[3]
		}
		n.waitSigned(t)
	}
	env, _, err := n.led.EnvelopeAt(t.Context(), target.GetIndex())
	if err != nil {
		t.Fatal(err)
	}
	n.stop(t)
	tail := env[len(env)-24:]
	if _, err := ledgertest.RewriteMessage(filepath.Join(dir, "nats"), ledger.DefaultStreamName, tail, false, func(payload []byte) {
		payload[bytes.Index(payload, tail)+7] ^= 0x20
	}); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, dir, cfg)
	_, verr := tlog.Verify(bytes.NewReader(n.export(t)), tlog.Options{VerifierKey: n.tl.VerifierKey()})
	var te *tlog.TamperError
	if !errors.As(verr, &te) || te.FirstBlock != target.GetBlockSequence() {
		t.Fatalf("Verify = %v, want a TamperError naming block %d", verr, target.GetBlockSequence())
	}
	t.Logf("found: %v", te)
}

// TestReorderedEventsOnDisk swaps two events of one stored block in the NATS
// file store (same length, NATS checksum recomputed): verification finds
// the checkpoint whose root no longer matches, with the events' indexes.
func TestReorderedEventsOnDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	cfg := transparency.Config{CheckpointInterval: fastInterval}
	n := startNode(t, dir, cfg)
	n.appendN(t, ref(1), piledgerv1.Operation_OPERATION_COLLECT, 3)
	n.waitSigned(t)
	rs := n.appendN(t, ref(2), piledgerv1.Operation_OPERATION_COLLECT, 4) // indexes 3..6, one block
	n.waitSigned(t)
	n.appendN(t, ref(3), piledgerv1.Operation_OPERATION_COLLECT, 2)
	n.waitSigned(t)
	a, _, err := n.led.EnvelopeAt(t.Context(), rs[1].GetIndex())
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := n.led.EnvelopeAt(t.Context(), rs[2].GetIndex())
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("envelopes of %d and %d bytes: cannot swap them in place", len(a), len(b))
	}
	n.stop(t)
	a, b = bytes.Clone(a), bytes.Clone(b)
	if _, err := ledgertest.RewriteMessage(filepath.Join(dir, "nats"), ledger.DefaultStreamName, a, true, func(payload []byte) {
		i, j := bytes.Index(payload, a), bytes.Index(payload, b)
		copy(payload[i:], b)
		copy(payload[j:], a)
	}); err != nil {
		t.Fatal(err)
	}

	n = startNode(t, dir, cfg)
	_, verr := tlog.Verify(bytes.NewReader(n.export(t)), tlog.Options{VerifierKey: n.tl.VerifierKey()})
	var te *tlog.TamperError
	if !errors.As(verr, &te) || te.Start > rs[1].GetIndex() || te.End <= rs[2].GetIndex() || te.FirstBlock != rs[1].GetBlockSequence() {
		t.Fatalf("Verify = %v, want a TamperError covering indexes %d and %d in block %d", verr, rs[1].GetIndex(), rs[2].GetIndex(), rs[1].GetBlockSequence())
	}
	t.Logf("found: %v", te)
}
