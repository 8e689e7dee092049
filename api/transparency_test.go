package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/api"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// tlogStack is the write path plus the transparency log behind a real
// api.Server: embedded NATS, keyring, ledger, Merkle tree and checkpointer.
type tlogStack struct{ *stack }

// startTlogStack starts the stack with its state under dir and stops it at
// the end of the test.
func startTlogStack(t *testing.T, dir string) *tlogStack {
	t.Helper()
	return &tlogStack{newStack(t, dir, stackOptions{transparency: true})}
}

func (s *tlogStack) get(t *testing.T, path string, header ...string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.baseURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// checkpoint polls GET /v1/log/checkpoint until it covers size events and
// verifies it with the stock parser.
func (s *tlogStack) checkpoint(t *testing.T, v note.Verifier, origin string, size uint64) (*log.Checkpoint, []byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, ctype, body := s.get(t, "/v1/log/checkpoint")
		if code == http.StatusOK {
			if !strings.HasPrefix(ctype, "text/plain") {
				t.Fatalf("Content-Type %q, want text/plain", ctype)
			}
			cp, _, _, err := log.ParseCheckpoint(body, origin, v)
			if err != nil {
				t.Fatalf("log.ParseCheckpoint: %v\n%s", err, body)
			}
			if cp.Size >= size {
				return cp, body
			}
		} else if code != http.StatusNotFound {
			t.Fatalf("GET /v1/log/checkpoint: %d %s", code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint covers %d events", size)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProofsOverHTTPWithStockLibraries fetches the verifier key, a
// checkpoint and proofs over HTTP from a real server, and verifies them with
// the stock libraries only: note / formats/log for the checkpoint,
// merkle/proof for the proofs.
func TestProofsOverHTTPWithStockLibraries(t *testing.T) {
	s := startTlogStack(t, t.TempDir())
	ctx := t.Context()

	if code, _, body := s.get(t, "/v1/log/checkpoint"); code != http.StatusNotFound || !strings.Contains(string(body), api.ReasonCheckpointNotFound) {
		t.Errorf("checkpoint of an empty log: %d %s", code, body)
	}

	// The verifier key: JSON, as note.NewVerifier takes it.
	code, _, body := s.get(t, "/v1/log/verifier-key")
	var vk piledgerv1.VerifierKey
	if code != http.StatusOK || protojson.Unmarshal(body, &vk) != nil {
		t.Fatalf("GET /v1/log/verifier-key: %d %s", code, body)
	}
	v, err := note.NewVerifier(vk.GetKey())
	if err != nil {
		t.Fatalf("note.NewVerifier(%q): %v", vk.GetKey(), err)
	}

	var receipts []*piledgerv1.Receipt
	appendEvents := func(n int) {
		evs := make([]*piledgerv1.Event, n)
		for i := range evs {
			evs[i] = collectFace(subjectRef(len(receipts) + i))
		}
		resp, err := s.client.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		receipts = append(receipts, resp.GetReceipts()...)
	}
	appendEvents(5)
	appendEvents(3)
	first, _ := s.checkpoint(t, v, vk.GetOrigin(), 8)

	// An append receipt turned into an inclusion proof, against the latest
	// checkpoint (treeSize omitted), which the response carries.
	for _, r := range receipts {
		code, _, body := s.get(t, fmt.Sprintf("/v1/log/proofs/inclusion?index=%d", r.GetIndex()))
		var p piledgerv1.InclusionProof
		if code != http.StatusOK || protojson.Unmarshal(body, &p) != nil {
			t.Fatalf("inclusion of %d: %d %s", r.GetIndex(), code, body)
		}
		cp, _, _, err := log.ParseCheckpoint([]byte(p.GetCheckpoint()), vk.GetOrigin(), v)
		if err != nil {
			t.Fatalf("the proof's checkpoint: %v", err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(p.GetEnvelope())
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.GetIndex(), cp.Size, leaf, p.GetHashes(), cp.Hash); err != nil {
			t.Fatalf("proof.VerifyInclusion(%d, %d): %v", r.GetIndex(), cp.Size, err)
		}
		var env piledgerv1.Envelope
		var h piledgerv1.EnvelopeHeader
		if proto.Unmarshal(p.GetEnvelope(), &env) != nil || proto.Unmarshal(env.GetHeader(), &h) != nil || h.GetEventId() != r.GetEventId() {
			t.Errorf("the proven leaf %d is not event %s", r.GetIndex(), r.GetEventId())
		}
	}

	// More events, a newer checkpoint, and a consistency proof from the
	// first one, as a regulator who saved it would ask.
	appendEvents(17)
	second, _ := s.checkpoint(t, v, vk.GetOrigin(), 25)
	code, _, body = s.get(t, fmt.Sprintf("/v1/log/proofs/consistency?from=%d&to=%d", first.Size, second.Size))
	var cons piledgerv1.ConsistencyProof
	if code != http.StatusOK || protojson.Unmarshal(body, &cons) != nil {
		t.Fatalf("consistency: %d %s", code, body)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, first.Size, second.Size, cons.GetHashes(), first.Hash, second.Hash); err != nil {
		t.Fatalf("proof.VerifyConsistency(%d, %d): %v", first.Size, second.Size, err)
	}
	// An inclusion proof against the older tree size, explicitly.
	code, _, body = s.get(t, fmt.Sprintf("/v1/log/proofs/inclusion?index=2&treeSize=%d", first.Size))
	var old piledgerv1.InclusionProof
	if code != http.StatusOK || protojson.Unmarshal(body, &old) != nil {
		t.Fatalf("inclusion in the first checkpoint: %d %s", code, body)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 2, first.Size, rfc6962.DefaultHasher.HashLeaf(old.GetEnvelope()), old.GetHashes(), first.Hash); err != nil {
		t.Fatalf("inclusion in the first checkpoint: %v", err)
	}

	// Past checkpoints by size, and JSON on request.
	code, ctype, body := s.get(t, fmt.Sprintf("/v1/log/checkpoint?treeSize=%d", first.Size), "Accept", "application/json")
	var cpJSON piledgerv1.Checkpoint
	if code != http.StatusOK || !strings.HasPrefix(ctype, "application/json") || protojson.Unmarshal(body, &cpJSON) != nil || cpJSON.GetTreeSize() != first.Size {
		t.Errorf("checkpoint of size %d as JSON: %d %s %s", first.Size, code, ctype, body)
	}

	// Errors: HTTP 400 with the field named, 404 for a size never signed.
	for _, test := range []struct {
		path, reason, field string
		code                int
	}{
		{fmt.Sprintf("/v1/log/proofs/inclusion?index=%d", second.Size+100), api.ReasonBeyondCheckpoint, "index", 400},
		{fmt.Sprintf("/v1/log/proofs/inclusion?index=1&treeSize=%d", second.Size+100), api.ReasonBeyondCheckpoint, "treeSize", 400},
		{"/v1/log/proofs/inclusion?index=5&treeSize=5", api.ReasonInvalidRequest, "index", 400},
		{"/v1/log/proofs/inclusion?index=abc", api.ReasonInvalidRequest, "index", 400},
		{"/v1/log/proofs/consistency?from=0&to=3", api.ReasonInvalidRequest, "from", 400},
		{"/v1/log/proofs/consistency?from=4&to=3", api.ReasonInvalidRequest, "from", 400},
		{fmt.Sprintf("/v1/log/proofs/consistency?from=1&to=%d", second.Size+1), api.ReasonBeyondCheckpoint, "to", 400},
		{"/v1/log/checkpoint?treeSize=zzz", api.ReasonInvalidRequest, "treeSize", 400},
		{"/v1/log/checkpoint?treeSize=4", api.ReasonCheckpointNotFound, "", 404},
	} {
		code, _, body := s.get(t, test.path)
		var st struct {
			Details []struct {
				Reason          string `json:"reason"`
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("%s: %s: %v", test.path, body, err)
		}
		var reason, field string
		for _, d := range st.Details {
			if d.Reason != "" {
				reason = d.Reason
			}
			if len(d.FieldViolations) > 0 {
				field = d.FieldViolations[0].Field
			}
		}
		if code != test.code || reason != test.reason || field != test.field {
			t.Errorf("GET %s = %d %s/%s, want %d %s/%s (%s)", test.path, code, reason, field, test.code, test.reason, test.field, body)
		}
	}
	for i := range receipts {
		if ref := subjectRef(i); strings.Contains(s.logs.String(), ref) {
			t.Errorf("the server log holds subject reference %s", ref)
		}
	}
}
