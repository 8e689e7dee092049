package projections_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// scenarioLog appends a varied log for n residents: cameras, accesses,
// provisions, destructions (some reported out of order), epidemic data and
// its end, consents and transfers abroad. It returns the residents'
// references.
func scenarioLog(s *stack, n int) []string {
	var refs []string
	var batch []*piledgerv1.Event
	flush := func() {
		if len(batch) > 0 {
			s.append(batch...)
			batch = nil
		}
	}
	for i := range n {
		r := ref("resident", i)
		refs = append(refs, r)
		d := float64(i % 50)
		batch = append(batch, cameraFace(r, "city-police", d), policeAccess(r, "city-police", d+1))
		switch i % 5 {
		case 0:
			batch = append(batch, provide(r, "city-police", "district-office", d+2), destroy(r, "city-police", d+10, "face"))
		case 1:
			batch = append(batch, destroy(r, "city-police", d+45, "face"))
		case 2:
			batch = append(batch, epidemicCollect(r, "health-commission", d), destroy(r, "health-commission", d+60, "travel-history"))
		case 3:
			batch = append(batch, consent(r, "shop-42", piledgerv1.Operation_OPERATION_CONSENT_GRANTED, d), marketingCollect(r, "shop-42", d+1),
				consent(r, "shop-42", piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, d+20))
		case 4:
			batch = append(batch, transferAbroad(r, "shop-42", d), epidemicCollect(r, "health-commission", d+3))
		}
		if len(batch) >= 64 {
			flush()
		}
	}
	flush()
	s.append(purposeEnded("", "health-commission", "epidemic-prevention", 70))
	return refs
}

// answers reads every query of the read models for the given subjects —
// data maps, every timeline page, exports, every page of due holdings and
// the holders of each purpose — and returns their deterministic encodings.
// Page tokens are dropped: they are sealed with a fresh nonce each time.
func answers(t testing.TB, st *projections.Store, pseudonyms []string) [][]byte {
	return readAnswers(t, st, pseudonyms, true)
}

// readAnswers is answers; without withSize, log sizes and the position are
// left out, for comparing read models of logs that differ only by
// duplicates.
func readAnswers(t testing.TB, st *projections.Store, pseudonyms []string, withSize bool) [][]byte {
	t.Helper()
	ctx := context.Background()
	var out [][]byte
	add := func(m proto.Message, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if !withSize {
			clearLogSize(m.ProtoReflect())
		}
		out = append(out, marshal(t, m))
	}
	for _, p := range pseudonyms {
		add(st.DataMap(ctx, p, nil))
		add(st.Export(ctx, p, nil))
		token := ""
		for {
			resp, err := st.SubjectEvents(ctx, p, 3, token, nil)
			if err != nil {
				t.Fatal(err)
			}
			token, resp.NextPageToken = resp.GetNextPageToken(), ""
			add(resp, nil)
			if token == "" {
				break
			}
		}
	}
	for _, q := range []projections.DueQuery{{Before: day(200), PageSize: 25}, {Before: day(60), Processor: "city-police", PageSize: 7}} {
		for {
			resp, err := st.DueHoldings(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			q.PageToken, resp.NextPageToken = resp.GetNextPageToken(), ""
			add(resp, nil)
			if q.PageToken == "" {
				break
			}
		}
	}
	for _, purpose := range []string{"public-safety", "epidemic-prevention", "marketing", "contract-performance"} {
		add(st.PurposeHoldings(ctx, purpose, 0, "", nil))
	}
	if withSize {
		out = append(out, fmt.Appendf(nil, "%+v %+v", st.Counts(), st.Position()))
	}
	return out
}

// clearLogSize clears every log_size field in m.
func clearLogSize(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Name() == "log_size":
			m.Clear(fd)
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			clearLogSize(v.Message())
		}
		return true
	})
}

func compareAnswers(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d answers, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("%s: answer %d differs:\n got %q\nwant %q", what, i, got[i], want[i])
			return
		}
	}
}

// TestRebuildGivesIdenticalAnswers builds the read models live, while the
// log is written, then deletes the directory and rebuilds them from the log
// in one catch-up, and compares every answer byte for byte.
func TestRebuildGivesIdenticalAnswers(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	refs := scenarioLog(s, 60)
	s.sync()
	s.clock.set(day(120))
	var ps []string
	for _, r := range refs {
		ps = append(ps, s.pseudonym(r))
	}
	live := answers(t, s.store, ps)
	if c := s.store.Counts(); c.Applied != s.led.Size() || c.Duplicates != 0 || c.Shredded != 0 {
		t.Errorf("counts %+v after %d events", c, s.led.Size())
	}

	s.stopProjector()
	if err := os.RemoveAll(filepath.Join(s.dir, "projections")); err != nil {
		t.Fatal(err)
	}
	// Small batches, so that the rebuild commits many times.
	st := s.startProjector(projections.Config{Dir: filepath.Join(s.dir, "projections"), BatchEvents: 16})
	s.sync()
	compareAnswers(t, "rebuilt", answers(t, st, ps), live)

	// A restart on the same directory applies nothing twice.
	s.stopProjector()
	st = s.startProjector(projections.Config{Dir: filepath.Join(s.dir, "projections")})
	s.append(cameraFace(refs[0], "city-police", 99))
	s.sync()
	if c := st.Counts(); c.Applied != s.led.Size() {
		t.Errorf("after a restart and one more event: %d applied, log size %d", c.Applied, s.led.Size())
	}
}

// TestDuplicateEventIDsCountOnce puts an event id in the log twice (a
// block with a copy of a stored envelope, as a faulty writer could publish)
// and checks that every read model counts it once.
func TestDuplicateEventIDsCountOnce(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	r := "resident-dup"
	s.append(cameraFace(r, "city-police", 1), epidemicCollect(r, "health-commission", 2))
	s.append(destroy(r, "city-police", 40, "face"))
	s.sync()
	before := readAnswers(t, s.store, []string{s.pseudonym(r)}, false)

	// Publish the first two envelopes again, as one new block.
	publishCopies(t, s, 0, 2)
	s.waitFor(s.store, 5)
	c := s.store.Counts()
	if c.Applied != 3 || c.Duplicates != 2 {
		t.Errorf("counts %+v, want 3 applied and 2 duplicates", c)
	}
	after := answers(t, s.store, []string{s.pseudonym(r)})
	// Only log sizes, the position and the counts may differ.
	compareAnswers(t, "after duplicates", readAnswers(t, s.store, []string{s.pseudonym(r)}, false), before)
	dm := s.dataMap(r)
	if len(dm.GetHoldings()) != 3 {
		t.Errorf("%d holdings, want 3 (face, and two epidemic categories)", len(dm.GetHoldings()))
	}

	// A new event three times in one block: applied once.
	env := sealElsewhere(t, s, cameraFace(r, "city-police", 50))
	publishBlock(t, s, [][]byte{env, env, env})
	s.waitFor(s.store, 8)
	if c := s.store.Counts(); c.Applied != 4 || c.Duplicates != 4 {
		t.Errorf("counts %+v, want 4 applied and 4 duplicates", c)
	}
	if dm := s.dataMap(r); len(dm.GetHoldings()) != 4 {
		t.Errorf("%d holdings after a new event thrice in one block, want 4", len(dm.GetHoldings()))
	}
	after = answers(t, s.store, []string{s.pseudonym(r)})

	// And a rebuild counts them the same way.
	s.stopProjector()
	if err := os.RemoveAll(filepath.Join(s.dir, "projections")); err != nil {
		t.Fatal(err)
	}
	st := s.startProjector(projections.Config{Dir: filepath.Join(s.dir, "projections")})
	s.waitFor(st, 8)
	compareAnswers(t, "rebuilt with duplicates", answers(t, st, []string{s.pseudonym(r)}), after)
}

// publishCopies appends a block holding copies of the stored envelopes at
// log indexes first..first+n-1, straight to the stream.
func publishCopies(t *testing.T, s *stack, first, n int) {
	t.Helper()
	var envs [][]byte
	blocks := storedBlocks(t, s.js, ledger.DefaultStreamName)
	for _, blk := range blocks {
		for i, e := range blk.GetEnvelopes() {
			if idx := int(blk.GetFirstIndex()) + i; idx >= first && idx < first+n {
				envs = append(envs, e)
			}
		}
	}
	publishBlock(t, s, envs)
}

// storedBlocks reads every block of a stream.
func storedBlocks(t *testing.T, js jetstream.JetStream, name string) []*piledgerv1.Block {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*piledgerv1.Block
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		blk := &piledgerv1.Block{}
		if err := proto.Unmarshal(msg.Data, blk); err != nil {
			t.Fatal(err)
		}
		out = append(out, blk)
	}
	return out
}

// publishBlock appends a block of the given envelopes to the log stream,
// straight to JetStream, as a faulty or foreign writer could.
func publishBlock(t *testing.T, s *stack, envs [][]byte) {
	t.Helper()
	ctx := context.Background()
	blocks := storedBlocks(t, s.js, ledger.DefaultStreamName)
	last := blocks[len(blocks)-1]
	next := last.GetFirstIndex() + uint64(len(last.GetEnvelopes()))
	data, err := proto.Marshal(&piledgerv1.Block{Version: 1, FirstIndex: next, Envelopes: envs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.js.Publish(ctx, ledger.DefaultPrefix+".log", data, jetstream.WithExpectLastSequence(uint64(len(blocks)))); err != nil {
		t.Fatal(err)
	}
}

// sealElsewhere seals an event with the stack's keyring through a second
// ledger on a side stream, and returns its envelope: an event the main log
// has never held.
func sealElsewhere(t *testing.T, s *stack, ev *piledgerv1.Event) []byte {
	t.Helper()
	ctx := context.Background()
	side, err := ledger.Open(ctx, s.js, s.keys, ledger.Config{IndexDir: filepath.Join(t.TempDir(), "side"), StreamName: "SIDE", Prefix: "side"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- side.Run(runCtx) }()
	_, err = side.Append(ctx, []*piledgerv1.Event{ev})
	cancel()
	<-done
	side.Close()
	if err != nil {
		t.Fatal(err)
	}
	blocks := storedBlocks(t, s.js, "SIDE")
	return blocks[len(blocks)-1].GetEnvelopes()[0]
}

// TestShreddedSubjects destroys one subject's key (as erasure will) and
// checks that the projector counts its events without failing, that the
// rows built before are blinded, and that due holdings still show their
// pseudonymous metadata.
func TestShreddedSubjects(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	kept, gone := "resident-kept", "resident-gone"
	s.append(cameraFace(kept, "city-police", 1), cameraFace(gone, "city-police", 2), policeAccess(gone, "city-police", 3))
	s.sync()
	pGone := s.pseudonym(gone)
	s.stopProjector()
	shred(t, s, pGone)

	// A fresh keyring (caches hold no key) for everything that follows.
	s.stopLedger()
	s.stopLedger = nil
	if err := os.RemoveAll(filepath.Join(s.dir, "keyring")); err != nil {
		t.Fatal(err)
	}
	s.connect(s.ns.Connect)
	s.clock.set(day(200))

	// The old read models: the erased subject's rows no longer open.
	old := s.openStore(projections.Config{Dir: filepath.Join(s.dir, "projections")})
	dm, err := old.DataMap(context.Background(), pGone, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(dm.GetHoldings()) != 0 || dm.GetShreddedHoldingCount() != 1 {
		t.Errorf("erased subject's data map: %d holdings, %d shredded; want 0 and 1", len(dm.GetHoldings()), dm.GetShreddedHoldingCount())
	}
	if ev, err := old.SubjectEvents(context.Background(), pGone, 10, "", nil); err != nil || len(ev.GetSubjectEvents()) != 0 {
		t.Errorf("erased subject's timeline: %v, %v; want empty", ev, err)
	}
	due, err := old.DueHoldings(context.Background(), projections.DueQuery{})
	if err != nil {
		t.Fatal(err)
	}
	shredded := 0
	for _, h := range due.GetHoldings() {
		if h.GetShredded() {
			shredded++
			if h.GetProcessor() != "city-police" || h.GetDestroyDueTime() == nil || h.GetState() != overdue || h.GetDataCategory() != "" {
				t.Errorf("shredded due holding shows %v", h)
			}
		}
	}
	if len(due.GetHoldings()) != 2 || shredded != 1 {
		t.Errorf("due: %d holdings, %d shredded; want 2 and 1", len(due.GetHoldings()), shredded)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	// A rebuild counts the erased subject's events as shredded.
	if err := os.RemoveAll(filepath.Join(s.dir, "projections")); err != nil {
		t.Fatal(err)
	}
	st := s.startProjector(projections.Config{Dir: filepath.Join(s.dir, "projections")})
	s.waitFor(st, 3)
	if c := st.Counts(); c.Applied != 1 || c.Shredded != 2 {
		t.Errorf("rebuild counts %+v, want 1 applied and 2 shredded", c)
	}
	// The rebuilt read models know the subject had entries (counted from the
	// clear headers) and show nothing of them.
	if dm, err := st.DataMap(context.Background(), pGone, nil); err != nil || len(dm.GetHoldings()) != 0 {
		t.Errorf("erased subject after the rebuild: %v, %v; want an empty data map", dm, err)
	}
	if dm := s.dataMap(kept); len(dm.GetHoldings()) != 1 {
		t.Errorf("kept subject: %d holdings, want 1", len(dm.GetHoldings()))
	}
}

// shred securely deletes every key message of a pseudonym from the key
// stream, which is what erasure does to the key store.
func shred(t *testing.T, s *stack, pseudonym string) {
	t.Helper()
	ctx := context.Background()
	stream, err := s.js.Stream(ctx, crypto.DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		wk := &piledgerv1.WrappedKey{}
		if proto.Unmarshal(msg.Data, wk) != nil || wk.GetPseudonym() != pseudonym {
			continue
		}
		if err := stream.SecureDeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
		deleted++
	}
	if deleted == 0 {
		t.Fatal("no key message of the subject found")
	}
}

// TestNewLogStreamRebuilds deletes the log stream and starts a new one
// under the same name (a new incarnation of the log): read models built
// from the old stream are emptied and rebuilt from the new one, not mixed.
func TestNewLogStreamRebuilds(t *testing.T) {
	s := startStack(t, filepath.Join(t.TempDir(), "node"))
	s.append(cameraFace("resident-old", "city-police", 1), cameraFace("resident-old", "city-police", 2))
	s.sync()
	s.stopProjector()
	s.stopLedger()
	nc, err := s.ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), ledger.DefaultStreamName); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	s.connect(s.ns.Connect) // the ledger creates the new stream (and rebuilds its own index)
	s.append(cameraFace("resident-new", "city-police", 3))
	st := s.startProjector(projections.Config{Dir: filepath.Join(s.dir, "projections")})
	s.waitFor(st, 1)
	if c := st.Counts(); c.Applied != 1 || st.Position().Size != 1 {
		t.Errorf("after a new log stream: counts %+v at %+v, want one event", c, st.Position())
	}
	if _, err := st.DataMap(context.Background(), s.pseudonym("resident-old"), nil); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("a subject of the old stream: %v, want ErrNotFound", err)
	}
	if dm := s.dataMap("resident-new"); len(dm.GetHoldings()) != 1 {
		t.Errorf("subject of the new stream: %d holdings", len(dm.GetHoldings()))
	}
}
