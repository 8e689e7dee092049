package tlog_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/ledger/tlog"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// synthetic is a bundle built in memory: real envelope and checkpoint
// formats, random ciphertexts, a fresh signing key.
type synthetic struct {
	signer note.Signer
	vkey   string
	recs   []*piledgerv1.BundleRecord
}

// newSynthetic builds a bundle of blocks of the given sizes, with a
// checkpoint after each block listed in signAfter (block numbers from 0),
// and event i of the log erased when erased(i).
func newSynthetic(t testing.TB, sizes []int, signAfter []int, erased func(i int) bool, cipherLen int) *synthetic {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, tlog.DefaultOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	s := &synthetic{signer: signer, vkey: vkey}
	total := 0
	for _, n := range sizes {
		total += n
	}
	s.recs = append(s.recs, &piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_Header{Header: &piledgerv1.BundleHeader{
		FormatVersion: tlog.BundleFormatVersion, Origin: tlog.DefaultOrigin, VerifierKey: vkey, CreateTime: timestamppb.Now(),
	}}})
	rng := (&compact.RangeFactory{Hash: tlog.Hasher.HashChildren}).NewEmptyRange(0)
	var end piledgerv1.BundleEnd
	index := 0
	for bi, n := range sizes {
		b := &piledgerv1.BundleBlock{Sequence: uint64(bi + 1), FirstIndex: uint64(index)}
		for j := range n {
			env := envelope(t, index, piledgerv1.Operation(1+index%3), cipherLen)
			b.Envelopes = append(b.Envelopes, env)
			if erased != nil && erased(index) {
				b.ErasedOffsets = append(b.ErasedOffsets, uint32(j))
			}
			if err := rng.Append(tlog.LeafHash(env), nil); err != nil {
				t.Fatal(err)
			}
			index++
		}
		s.recs = append(s.recs, &piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_Block{Block: b}})
		end.Blocks++
		end.Events += uint64(n)
		for _, k := range signAfter {
			if k != bi {
				continue
			}
			root, err := rng.GetRootHash(nil)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := tlog.SignCheckpoint(signer, tlog.DefaultOrigin, rng.End(), root)
			if err != nil {
				t.Fatal(err)
			}
			end.Checkpoints++
			s.recs = append(s.recs, &piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_Checkpoint{Checkpoint: &piledgerv1.BundleCheckpoint{
				Sequence: end.Checkpoints, Note: string(msg),
			}}})
		}
	}
	s.recs[0].GetHeader().TreeSize = uint64(total)
	s.recs = append(s.recs, &piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_End{End: &end}})
	return s
}

// envelope returns a marshaled Envelope like the ledger writes, with a
// random ciphertext of n bytes.
func envelope(t testing.TB, i int, op piledgerv1.Operation, n int) []byte {
	h, err := proto.Marshal(&piledgerv1.EnvelopeHeader{
		Version: 1, EventId: fmt.Sprintf("019a0000-0000-7000-8000-%012d", i), Operation: op,
		Processor: "city-police", RecordedAt: timestamppb.Now(), KeyGeneration: 1,
		Pseudonym: strings.Repeat("ab", 32),
	})
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, n)
	rand.Read(ct)
	env, err := proto.Marshal(&piledgerv1.Envelope{Header: h, Ciphertext: ct})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// clone returns a deep copy of the records, to mutate.
func (s *synthetic) clone() []*piledgerv1.BundleRecord {
	out := make([]*piledgerv1.BundleRecord, len(s.recs))
	for i, r := range s.recs {
		out[i] = proto.Clone(r).(*piledgerv1.BundleRecord)
	}
	return out
}

func encode(t testing.TB, recs []*piledgerv1.BundleRecord) []byte {
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

func blocksOf(recs []*piledgerv1.BundleRecord) []*piledgerv1.BundleBlock {
	var bs []*piledgerv1.BundleBlock
	for _, r := range recs {
		if b := r.GetBlock(); b != nil {
			bs = append(bs, b)
		}
	}
	return bs
}

func checkpointsOf(recs []*piledgerv1.BundleRecord) []*piledgerv1.BundleCheckpoint {
	var cs []*piledgerv1.BundleCheckpoint
	for _, r := range recs {
		if c := r.GetCheckpoint(); c != nil {
			cs = append(cs, c)
		}
	}
	return cs
}

func endOf(recs []*piledgerv1.BundleRecord) *piledgerv1.BundleEnd { return recs[len(recs)-1].GetEnd() }

func TestVerifySynthetic(t *testing.T) {
	s := newSynthetic(t, []int{1, 3, 4, 7, 1, 2}, []int{0, 2, 3, 5}, func(i int) bool { return i%5 == 0 }, 200)
	rep, err := tlog.Verify(bytes.NewReader(encode(t, s.recs)), tlog.Options{VerifierKey: s.vkey, Origin: tlog.DefaultOrigin})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Events != 18 || rep.Blocks != 6 || rep.Checkpoints != 4 || rep.Erased != 4 || rep.KeyFromBundle ||
		rep.Operations["OPERATION_COLLECT"] != 6 || rep.Operations["OPERATION_STORE"] != 6 || rep.Operations["OPERATION_USE"] != 6 ||
		rep.Latest == nil || rep.Latest.Size != 18 || !bytes.Equal(rep.Root, rep.Latest.Hash) {
		t.Errorf("report %+v", rep)
	}
	// Without a pinned key, the bundle's own key is used and said so.
	rep, err = tlog.Verify(bytes.NewReader(encode(t, s.recs)), tlog.Options{})
	if err != nil || !rep.KeyFromBundle || rep.VerifierKey != s.vkey {
		t.Errorf("Verify with the bundle's key: %v, %+v", err, rep)
	}
}

// TestVerifyFindsTampering alters a valid bundle in every way an operator
// could and checks that Verify says what and where.
func TestVerifyFindsTampering(t *testing.T) {
	// Blocks of 1, 3, 4, 7, 1, 2 events (indexes 0 | 1-3 | 4-7 | 8-14 | 15 |
	// 16-17), checkpoints after blocks 1, 3 and 5 (sizes 4, 15, 18).
	s := newSynthetic(t, []int{1, 3, 4, 7, 1, 2}, []int{1, 3, 5}, nil, 100)
	other := newSynthetic(t, []int{1}, []int{0}, nil, 10)
	for _, test := range []struct {
		name   string
		tamper func(recs []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord
		want   tlog.TamperError // the fields that must match; Reason must contain want.Reason
	}{
		{"one ciphertext byte", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			env := blocksOf(r)[3].Envelopes[2] // index 10
			env[len(env)-1] ^= 1
			return r
		}, tlog.TamperError{Reason: "do not match the root", Start: 4, End: 15, FirstBlock: 3, LastBlock: 4, Checkpoint: 2}},
		{"one header byte", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			env := blocksOf(r)[2].Envelopes[1] // index 5
			env[1] = 0xff                      // the header's length
			return r
		}, tlog.TamperError{Reason: "does not decode", Start: 5, End: 6, FirstBlock: 3}},
		{"an event dropped", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			b := blocksOf(r)[3]
			b.Envelopes = b.Envelopes[1:]
			return r
		}, tlog.TamperError{Reason: "events are missing", Start: 14, End: 15, FirstBlock: 5}},
		{"an event dropped, indexes shifted", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			bs := blocksOf(r)
			bs[3].Envelopes = bs[3].Envelopes[1:]
			bs[4].FirstIndex--
			bs[5].FirstIndex--
			endOf(r).Events--
			return r
		}, tlog.TamperError{Reason: "do not match the root", Start: 4, End: 15, FirstBlock: 3, LastBlock: 5, Checkpoint: 2}},
		{"an event inserted", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			bs := blocksOf(r)
			bs[0].Envelopes = append(bs[0].Envelopes, envelope(t, 99, 1, 100))
			for _, b := range bs[1:] {
				b.FirstIndex++
			}
			endOf(r).Events++
			return r
		}, tlog.TamperError{Reason: "events were inserted before it", Start: 4, End: 5, FirstBlock: 2, Checkpoint: 1}},
		{"two events reordered", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			b := blocksOf(r)[5]
			b.Envelopes[0], b.Envelopes[1] = b.Envelopes[1], b.Envelopes[0]
			return r
		}, tlog.TamperError{Reason: "do not match the root", Start: 15, End: 18, FirstBlock: 5, LastBlock: 6, Checkpoint: 3}},
		{"a block dropped", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			return append(r[:2:2], r[3:]...) // block 2
		}, tlog.TamperError{Reason: "blocks are missing", FirstBlock: 2, LastBlock: 2}},
		{"blocks swapped", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			bs := blocksOf(r)
			bs[4].Envelopes, bs[5].Envelopes = bs[5].Envelopes, bs[4].Envelopes
			return r
		}, tlog.TamperError{Reason: "inside events already read", Start: 16, End: 17, FirstBlock: 6}},
		{"the last block dropped", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			n := len(r)
			// ... block 6, checkpoint 3, end
			r = append(r[:n-3:n-3], r[n-2:]...)
			endOf(r).Blocks--
			endOf(r).Events -= 2
			return r
		}, tlog.TamperError{Reason: "signs 18 events but the bundle holds 16", Start: 16, End: 18, Checkpoint: 3}},
		{"an unsigned block appended", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			n := len(r)
			extra := &piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_Block{Block: &piledgerv1.BundleBlock{
				Sequence: 7, FirstIndex: 18, Envelopes: [][]byte{envelope(t, 18, 2, 100)}}}}
			r = append(r[:n-1:n-1], extra, r[n-1])
			endOf(r).Blocks++
			endOf(r).Events++
			return r
		}, tlog.TamperError{Reason: "covered by no signed checkpoint", Start: 18, End: 19, FirstBlock: 7, LastBlock: 7}},
		{"checkpoint signatures swapped", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			cs := checkpointsOf(r)
			b1, s1, _ := strings.Cut(cs[0].Note, "\n\n")
			b2, s2, _ := strings.Cut(cs[1].Note, "\n\n")
			cs[0].Note, cs[1].Note = b1+"\n\n"+s2, b2+"\n\n"+s1
			return r
		}, tlog.TamperError{Reason: "signature does not verify", Checkpoint: 1}},
		{"a checkpoint signed by another key", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			checkpointsOf(r)[1].Note = checkpointsOf(other.recs)[0].Note
			return r
		}, tlog.TamperError{Reason: "signature does not verify", Checkpoint: 2}},
		{"a checkpoint dropped", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			for i, rec := range r {
				if rec.GetCheckpoint().GetSequence() == 2 {
					r = append(r[:i:i], r[i+1:]...)
					break
				}
			}
			endOf(r).Checkpoints--
			return r
		}, tlog.TamperError{Reason: "checkpoints 2..2 are missing", Checkpoint: 3}},
		{"the end record miscounts", func(r []*piledgerv1.BundleRecord) []*piledgerv1.BundleRecord {
			endOf(r).Events++
			return r
		}, tlog.TamperError{Reason: "the end record counts"}},
	} {
		t.Run(test.name, func(t *testing.T) {
			_, err := tlog.Verify(bytes.NewReader(encode(t, test.tamper(s.clone()))), tlog.Options{VerifierKey: s.vkey})
			var got *tlog.TamperError
			if !errors.As(err, &got) || !errors.Is(err, tlog.ErrTampered) {
				t.Fatalf("Verify = %v, want a TamperError", err)
			}
			w := test.want
			if !strings.Contains(got.Reason, w.Reason) || got.Start != w.Start || got.End != w.End ||
				got.FirstBlock != w.FirstBlock || got.LastBlock != w.LastBlock || got.Checkpoint != w.Checkpoint {
				t.Errorf("got  %+v\nwant %+v", *got, w)
			}
		})
	}
}

func TestVerifyUnreadable(t *testing.T) {
	s := newSynthetic(t, []int{2, 2}, []int{1}, nil, 50)
	good := encode(t, s.recs)
	future := s.clone()
	future[0].GetHeader().FormatVersion = 2
	for name, input := range map[string][]byte{
		"empty":          nil,
		"not a bundle":   []byte("this is a text file, not a bundle\n"),
		"truncated":      good[:len(good)-7],
		"no end record":  noEnd(t, s.recs),
		"future version": encode(t, future),
		"huge length":    append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, good...),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tlog.Verify(bytes.NewReader(input), tlog.Options{VerifierKey: s.vkey})
			if !errors.Is(err, tlog.ErrUnreadable) {
				t.Errorf("Verify = %v, want ErrUnreadable", err)
			}
		})
	}
	if _, err := tlog.Verify(bytes.NewReader(good), tlog.Options{VerifierKey: "not a key"}); !errors.Is(err, tlog.ErrUnreadable) {
		t.Errorf("a malformed verifier key: %v, want ErrUnreadable", err)
	}
	if _, err := tlog.Verify(bytes.NewReader(good), tlog.Options{VerifierKey: s.vkey, Origin: "other.example/log"}); !errors.Is(err, tlog.ErrBadCheckpoint) {
		t.Errorf("another origin: %v, want ErrBadCheckpoint", err)
	}
}

// noEnd encodes recs without their end record.
func noEnd(t *testing.T, recs []*piledgerv1.BundleRecord) []byte {
	var buf bytes.Buffer
	w := tlog.NewBundleWriter(&buf)
	for _, r := range recs[:len(recs)-1] {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err == nil {
		t.Fatal("BundleWriter.Close accepted a bundle without an end record")
	}
	return buf.Bytes()
}

func TestEmptyLogVerifies(t *testing.T) {
	s := newSynthetic(t, nil, nil, nil, 0)
	rep, err := tlog.Verify(bytes.NewReader(encode(t, s.recs)), tlog.Options{VerifierKey: s.vkey})
	if err != nil || rep.Events != 0 || !bytes.Equal(rep.Root, tlog.Hasher.EmptyRoot()) {
		t.Errorf("empty bundle: %v %+v", err, rep)
	}
}

// The committed fixture is a real ledger exported by a real server (see
// ../transparency/fixture_test.go).
func TestFixtureVerifies(t *testing.T) {
	vkey, err := os.ReadFile(filepath.Join("testdata", "ledger.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join("testdata", "ledger.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := tlog.Verify(f, tlog.Options{VerifierKey: string(vkey), Origin: tlog.DefaultOrigin})
	if err != nil {
		t.Fatalf("the fixture does not verify: %v", err)
	}
	if rep.Erased == 0 || rep.Events == 0 {
		t.Errorf("report %+v", rep)
	}
	for _, name := range []string{"tampered-byte.bundle", "tampered-dropped.bundle", "tampered-reordered.bundle", "tampered-signature.bundle"} {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = tlog.Verify(f, tlog.Options{VerifierKey: string(vkey)})
			var te *tlog.TamperError
			if !errors.As(err, &te) {
				t.Fatalf("Verify = %v, want a TamperError", err)
			}
			t.Log(te)
		})
	}
}

func TestCheckConsistency(t *testing.T) {
	s := newSynthetic(t, []int{3, 4, 5}, []int{0, 1, 2}, nil, 20)
	v, err := tlog.NewVerifier(s.vkey)
	if err != nil {
		t.Fatal(err)
	}
	var cps []*tlog.Checkpoint
	for _, c := range checkpointsOf(s.recs) {
		cp, err := tlog.OpenCheckpoint([]byte(c.Note), tlog.DefaultOrigin, v)
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, cp)
	}
	// A fork: same size as cps[2], another root, signed by the same key.
	forkRoot := bytes.Clone(cps[2].Hash)
	forkRoot[3] ^= 1
	msg, err := tlog.SignCheckpoint(s.signer, tlog.DefaultOrigin, cps[2].Size, forkRoot)
	if err != nil {
		t.Fatal(err)
	}
	fork, err := tlog.OpenCheckpoint(msg, tlog.DefaultOrigin, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckConsistency(cps[1], cps[1], nil); err != nil {
		t.Errorf("a checkpoint against itself: %v", err)
	}
	if err := tlog.CheckConsistency(cps[2], cps[1], nil); !errors.Is(err, tlog.ErrTampered) {
		t.Errorf("a rollback: %v, want ErrTampered", err)
	}
	if err := tlog.CheckConsistency(cps[2], fork, nil); !errors.Is(err, tlog.ErrTampered) {
		t.Errorf("a fork of the same size: %v, want ErrTampered", err)
	}
	// A wrong proof for a larger tree.
	if err := tlog.CheckConsistency(cps[0], fork, [][]byte{make([]byte, 32), make([]byte, 32)}); !errors.Is(err, tlog.ErrTampered) {
		t.Errorf("a bogus proof: %v, want ErrTampered", err)
	}
}

func TestOpenCheckpointRejects(t *testing.T) {
	s := newSynthetic(t, []int{2}, []int{0}, nil, 20)
	other := newSynthetic(t, []int{2}, []int{0}, nil, 20)
	v, _ := tlog.NewVerifier(s.vkey)
	good := checkpointsOf(s.recs)[0].Note
	for name, msg := range map[string]string{
		"another key":     checkpointsOf(other.recs)[0].Note,
		"edited size":     strings.Replace(good, "\n2\n", "\n3\n", 1),
		"no signature":    strings.SplitN(good, "\n\n", 2)[0] + "\n",
		"extension lines": "",
	} {
		if name == "extension lines" {
			body, _, _ := strings.Cut(good, "\n\n")
			n, err := note.Sign(&note.Note{Text: body + "\nextra line\n"}, s.signer)
			if err != nil {
				t.Fatal(err)
			}
			msg = string(n)
		}
		if _, err := tlog.OpenCheckpoint([]byte(msg), tlog.DefaultOrigin, v); !errors.Is(err, tlog.ErrBadCheckpoint) {
			t.Errorf("%s: %v, want ErrBadCheckpoint", name, err)
		}
	}
	if _, err := tlog.OpenCheckpoint([]byte(good), "other.example/log", v); !errors.Is(err, tlog.ErrBadCheckpoint) {
		t.Errorf("another origin: %v", err)
	}
}

// FuzzVerify: Verify takes files from outside; it must never panic, and it
// must either accept or say why (tampered, unreadable, bad checkpoint).
func FuzzVerify(f *testing.F) {
	s := newSynthetic(f, []int{2, 3}, []int{0, 1}, func(i int) bool { return i == 1 }, 16)
	good := encode(f, s.recs)
	f.Add(good)
	f.Add(good[:len(good)/2])
	if fixture, err := os.ReadFile(filepath.Join("testdata", "ledger.bundle")); err == nil {
		f.Add(fixture)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := tlog.Verify(bytes.NewReader(data), tlog.Options{})
		if err != nil && !errors.Is(err, tlog.ErrTampered) && !errors.Is(err, tlog.ErrUnreadable) && !errors.Is(err, tlog.ErrBadCheckpoint) {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}
