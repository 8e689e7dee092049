package api_test

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/crypto"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestEraseSubject: a data subject erases themself over REST and over gRPC;
// the receipt verifies with the ledger's verifier key, the subject's log
// entries replay as shredded and the data map holds no plaintext; another
// subject is forbidden; an admin (with a reason) erases anyone; a repeat is
// harmless.
func TestEraseSubject(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	restRef, grpcRef, otherRef, adminRef := s.ref(301), s.ref(302), s.ref(303), s.ref(304)
	receipts := s.appendAs(t, s.key("city-police"), collectFace(restRef), collectFace(grpcRef), collectFace(otherRef), collectFace(adminRef))
	last := receipts[len(receipts)-1].GetIndex()
	vkey := s.tlog.VerifierKey()
	admin := s.bearer(t, api.RoleAdmin, "ops-1")
	regulator := s.bearer(t, api.RoleRegulator, "officer-7")

	// The read models have applied every event before the erasures.
	dm := &piledgerv1.GetDataMapRequest{Name: "subjects/" + s.keys.Pseudonym(otherRef) + "/datamap", MinIndex: &last}
	if _, err := piledgerv1.NewSubjectServiceClient(s.conn(t, nil)).GetDataMap(ctxMD(t, "authorization", admin, "x-piledger-reason", "test"), dm); err != nil {
		t.Fatal(err)
	}

	check := func(what, pseudonym string, r *piledgerv1.ErasureReceipt) {
		t.Helper()
		got, err := crypto.VerifyErasureReceipt([]byte(r.GetSignedNote()), vkey)
		if err != nil {
			t.Fatalf("%s: receipt does not verify: %v", what, err)
		}
		if got.Subject != pseudonym || r.GetPseudonym() != pseudonym || r.GetName() != "subjects/"+pseudonym {
			t.Errorf("%s: receipt names %q / %q, want %s", what, got.Subject, r.GetName(), pseudonym)
		}
		if len(got.Locations) != len(r.GetLocations()) {
			t.Fatalf("%s: %d locations signed, %d returned", what, len(got.Locations), len(r.GetLocations()))
		}
		names := map[string]string{}
		for i, l := range got.Locations {
			names[l.Name] = l.State
			if r.GetLocations()[i].GetName() != l.Name || r.GetLocations()[i].GetState() != l.State || r.GetLocations()[i].GetDetail() != l.Detail {
				t.Errorf("%s: location %d differs from the signed one", what, i)
			}
		}
		for _, n := range []string{"key-store", "key-caches", "read-models", "log-entries"} {
			if names[n] != crypto.LocationDone {
				t.Errorf("%s: location %s is %q, want DONE", what, n, names[n])
			}
		}
		if names["remnants"] != crypto.LocationPending {
			t.Errorf("%s: remnants is %q, want PENDING", what, names["remnants"])
		}
		if _, err := crypto.VerifyErasureReceipt([]byte(strings.Replace(r.GetSignedNote(), "DONE", "PENDING", 1)), vkey); err == nil {
			t.Errorf("%s: a tampered receipt verifies", what)
		}
	}

	// REST, by the subject themself, as subjects/me.
	restSubject := s.bearer(t, api.RoleSubject, restRef)
	code, body := s.do(t, http.MethodPost, "/v1/subjects/me:erase", strings.NewReader("{}"), "Authorization", restSubject)
	if code != http.StatusOK {
		t.Fatalf("REST erase: %d %s", code, body)
	}
	var rr piledgerv1.ErasureReceipt
	if err := protojson.Unmarshal(body, &rr); err != nil {
		t.Fatal(err)
	}
	check("REST", s.keys.Pseudonym(restRef), &rr)

	// gRPC, by the subject themself, by pseudonym.
	c := piledgerv1.NewSubjectServiceClient(s.conn(t, nil))
	pg := s.keys.Pseudonym(grpcRef)
	gr, err := c.EraseSubject(ctxMD(t, "authorization", s.bearer(t, api.RoleSubject, grpcRef)), &piledgerv1.EraseSubjectRequest{Name: "subjects/" + pg})
	if err != nil {
		t.Fatal(err)
	}
	check("gRPC", pg, gr)

	// Another subject, an emitter and a regulator may not erase someone.
	po := s.keys.Pseudonym(otherRef)
	for who, auth := range map[string]string{"another subject": restSubject, "an emitter": s.key("shop-42"), "a regulator": regulator} {
		_, err := c.EraseSubject(ctxMD(t, "authorization", auth, "x-piledger-reason", "test"), &piledgerv1.EraseSubjectRequest{Name: "subjects/" + po})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s erasing: %v, want PERMISSION_DENIED", who, err)
		}
		if code, body := s.do(t, http.MethodPost, "/v1/subjects/"+po+":erase", strings.NewReader("{}"), "Authorization", auth, "X-Piledger-Reason", "test"); code != http.StatusForbidden {
			t.Errorf("%s erasing over REST: %d %s, want 403", who, code, body)
		}
	}
	// An admin must say why, then erases anyone; a repeat is harmless.
	pa := s.keys.Pseudonym(adminRef)
	if _, err := c.EraseSubject(ctxMD(t, "authorization", admin), &piledgerv1.EraseSubjectRequest{Name: "subjects/" + pa}); err == nil {
		t.Error("an admin erased without a reason")
	}
	for i := range 2 {
		ar, err := c.EraseSubject(ctxMD(t, "authorization", admin, "x-piledger-reason", "erasure request 42"), &piledgerv1.EraseSubjectRequest{Name: "subjects/" + pa})
		if err != nil {
			t.Fatalf("admin erase %d: %v", i, err)
		}
		check("admin", pa, ar)
	}

	// A subject the ledger never saw: a receipt that says nothing was left.
	pn := s.keys.Pseudonym(s.ref(305))
	nr, err := c.EraseSubject(ctxMD(t, "authorization", admin, "x-piledger-reason", "erasure request 43"), &piledgerv1.EraseSubjectRequest{Name: "subjects/" + pn})
	if err != nil {
		t.Fatal(err)
	}
	check("unknown subject", pn, nr)
	if d := nr.GetLocations()[0].GetDetail(); nr.GetLocations()[0].GetName() != "key-store" || !strings.Contains(d, "nothing to destroy") {
		t.Errorf("unknown subject: key-store location says %q", d)
	}

	// The log replays the erased subjects' entries as shredded, the other
	// subject's readable.
	erased := map[string]bool{s.keys.Pseudonym(restRef): true, pg: true, pa: true}
	entries := s.entriesAs(t, regulator, "erasure test", 0)
	seen, erasures := 0, map[string]int{}
	for _, e := range entries {
		p := e.GetHeader().GetPseudonym()
		switch {
		case erased[p] && e.GetHeader().GetErasure():
			// The ledger's own record of the erasure, readable.
			erasures[e.GetErasure().GetRequestedBy()]++
			if e.GetErasure().GetGeneration() != 1 || e.GetShredded() || e.GetEvent() != nil {
				t.Errorf("erasure entry %d: %v", e.GetIndex(), e)
			}
		case erased[p]:
			seen++
			if !e.GetShredded() || e.GetEvent() != nil {
				t.Errorf("entry %d of an erased subject: shredded=%v, event present=%v", e.GetIndex(), e.GetShredded(), e.GetEvent() != nil)
			}
		case p == po:
			if e.GetShredded() || e.GetEvent() == nil {
				t.Errorf("entry %d of the other subject is not readable", e.GetIndex())
			}
		}
	}
	if seen != 3 || erasures["subject"] != 2 || erasures["admin"] != 2 {
		t.Errorf("%d entries of erased subjects and erasure entries %v in the log; want 3, and 2 by subjects, 2 by the admin", seen, erasures)
	}
	for _, l := range rr.GetLocations() {
		if l.GetName() == "log-entries" && !strings.HasPrefix(l.GetDetail(), "1 entries of the subject now unreadable") {
			t.Errorf("receipt: log-entries says %q, want the count of 1", l.GetDetail())
		}
	}

	// The data map of an erased subject holds no plaintext.
	code, body = s.do(t, http.MethodGet, "/v1/subjects/me/datamap", nil, "Authorization", restSubject)
	if code != http.StatusOK {
		t.Fatalf("data map after erasure: %d %s", code, body)
	}
	var m piledgerv1.DataMap
	if err := protojson.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.GetHoldings()) != 0 || m.GetShreddedHoldingCount() != 1 {
		t.Errorf("data map after erasure: %d holdings, %d shredded; want 0 and 1", len(m.GetHoldings()), m.GetShreddedHoldingCount())
	}
	if e := m.GetErasures(); len(e) != 1 || e[0].GetEventCount() != 1 || e[0].GetEraseTime() == nil {
		t.Errorf("data map after erasure: erasures %v, want one, of 1 entry", e)
	}
	for _, plain := range []string{"gate-cam-7", "public-safety", "north entrance", "sign-12", "face"} {
		if strings.Contains(string(body), plain) {
			t.Errorf("data map after erasure holds %q", plain)
		}
	}
	s.checkNoSecretsInLogs(t)
}
