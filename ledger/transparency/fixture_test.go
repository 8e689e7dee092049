package transparency_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/piledger/piledger/ledger/tlog"
	"github.com/piledger/piledger/ledger/transparency"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

var update = flag.Bool("update", false, "regenerate the committed ledger fixture in ../tlog/testdata")

// fixtureDir holds the committed ledger fixture: a small real ledger that
// `piledger verify` must accept, its verifier key, and tampered variants it
// must reject. Regenerate with
//
//	go test ./ledger/transparency -run TestFixture -update
//
// (a new fixture has new keys: commit the whole directory together).
const fixtureDir = "../tlog/testdata"

// Fixture files. The tampered variants are derived from ledger.bundle by
// tlog.TamperedFixtures' rules (see tamperFixture below).
const (
	fixtureBundle = "ledger.bundle"
	fixtureKey    = "ledger.vkey"
)

// TestFixture builds the fixture with a real node when -update is set, and
// otherwise checks that the committed fixture verifies under its key and
// that its tampered variants are exactly the ones derived from it now.
func TestFixture(t *testing.T) {
	bundlePath, keyPath := filepath.Join(fixtureDir, fixtureBundle), filepath.Join(fixtureDir, fixtureKey)
	if *update {
		bundle, vkey := buildFixture(t)
		if err := os.MkdirAll(fixtureDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bundlePath, bundle, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyPath, []byte(vkey+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bundle, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatalf("%v (regenerate: go test ./ledger/transparency -run TestFixture -update)", err)
	}
	vkey, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := tlog.Verify(bytes.NewReader(bundle), tlog.Options{VerifierKey: string(vkey)})
	if err != nil {
		t.Fatalf("the committed fixture does not verify: %v", err)
	}
	if rep.Erased == 0 || rep.Checkpoints < 3 || rep.Blocks < 4 || len(rep.Operations) < 3 {
		t.Errorf("the fixture is too small to exercise verify: %+v", rep)
	}
	for name, variant := range tamperedFixtures(t, bundle) {
		path := filepath.Join(fixtureDir, name)
		if *update {
			if err := os.WriteFile(path, variant, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		committed, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(committed, variant) {
			t.Errorf("%s is not the variant derived from %s: regenerate with -update", name, fixtureBundle)
		}
	}
}

// buildFixture runs a real node: four subjects, several operations, blocks
// and checkpoints, and one subject erased (its key message destroyed).
func buildFixture(t *testing.T) (bundle []byte, vkey string) {
	dir := filepath.Join(t.TempDir(), "n")
	cfg := transparency.Config{CheckpointInterval: 10 * time.Millisecond}
	n := startNode(t, dir, cfg)
	ops := []struct {
		subject int
		op      piledgerv1.Operation
		count   int
	}{
		{1, piledgerv1.Operation_OPERATION_COLLECT, 3},
		{2, piledgerv1.Operation_OPERATION_COLLECT, 2},
		{1, piledgerv1.Operation_OPERATION_ACCESS, 2},
		{3, piledgerv1.Operation_OPERATION_COLLECT, 4},
		{2, piledgerv1.Operation_OPERATION_ACCESS, 1},
		{3, piledgerv1.Operation_OPERATION_STORE, 2},
		{4, piledgerv1.Operation_OPERATION_COLLECT, 1},
		{1, piledgerv1.Operation_OPERATION_DESTROY, 1},
	}
	for i, o := range ops {
		n.appendN(t, ref(o.subject), o.op, o.count)
		if i%2 == 1 {
			n.waitSigned(t)
		}
	}
	n.waitSigned(t)
	n.shred(t, ref(2))
	n.stop(t)
	n = startNode(t, dir, cfg)
	return n.export(t), n.tl.VerifierKey()
}

// tamperedFixtures derives the tampered variants of a fixture bundle, each
// one way an operator could alter the log. It is deterministic.
func tamperedFixtures(t *testing.T, bundle []byte) map[string][]byte {
	t.Helper()
	recs := readRecords(t, bundle)
	blocks := func() []*piledgerv1.BundleBlock {
		var bs []*piledgerv1.BundleBlock
		for _, r := range recs {
			if b := r.GetBlock(); b != nil {
				bs = append(bs, b)
			}
		}
		return bs
	}
	variants := map[string][]byte{}

	// One byte of one event's ciphertext changed (block 3, second event).
	recs = readRecords(t, bundle)
	env := blocks()[2].Envelopes[1]
	env[len(env)-5] ^= 0x01
	variants["tampered-byte.bundle"] = writeRecords(t, recs)

	// One event dropped, later indexes shifted to hide the gap.
	recs = readRecords(t, bundle)
	bs := blocks()
	b := bs[1]
	b.Envelopes = append(b.Envelopes[:0:0], b.Envelopes[1:]...)
	b.ErasedOffsets = nil
	for _, later := range bs[2:] {
		later.FirstIndex--
	}
	for _, r := range recs {
		if e := r.GetEnd(); e != nil {
			e.Events--
		}
	}
	variants["tampered-dropped.bundle"] = writeRecords(t, recs)

	// Two events of one block swapped.
	recs = readRecords(t, bundle)
	b = blocks()[3]
	b.Envelopes[0], b.Envelopes[1] = b.Envelopes[1], b.Envelopes[0]
	variants["tampered-reordered.bundle"] = writeRecords(t, recs)

	// The signature lines of two checkpoints swapped.
	recs = readRecords(t, bundle)
	var cps []*piledgerv1.BundleCheckpoint
	for _, r := range recs {
		if c := r.GetCheckpoint(); c != nil {
			cps = append(cps, c)
		}
	}
	body1, sig1, _ := bytes.Cut([]byte(cps[1].Note), []byte("\n\n"))
	body2, sig2, _ := bytes.Cut([]byte(cps[2].Note), []byte("\n\n"))
	cps[1].Note = string(body1) + "\n\n" + string(sig2)
	cps[2].Note = string(body2) + "\n\n" + string(sig1)
	variants["tampered-signature.bundle"] = writeRecords(t, recs)
	return variants
}

func readRecords(t *testing.T, bundle []byte) []*piledgerv1.BundleRecord {
	t.Helper()
	br, err := tlog.NewBundleReader(bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	recs := []*piledgerv1.BundleRecord{{Record: &piledgerv1.BundleRecord_Header{Header: br.Header()}}}
	for {
		r, err := br.Next()
		if err != nil {
			break
		}
		recs = append(recs, r)
	}
	return recs
}

func writeRecords(t *testing.T, recs []*piledgerv1.BundleRecord) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tlog.NewBundleWriter(&buf)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
