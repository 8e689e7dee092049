package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/api"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// readStack is the whole stack with read models: embedded nats-server,
// keyring, ledger, projector and api.Server on free loopback ports, with
// gRPC clients and the gateway's base URL.
type readStack struct{ *stack }

// startReadStack starts the stack with its state under dir, the projector's
// clock now, and stops it, in the production order, at the end of the test.
func startReadStack(t *testing.T, dir string, now func() time.Time) *readStack {
	t.Helper()
	// A short consistency wait, so that asking for an index the log never
	// reaches fails fast; reaching a real receipt index takes milliseconds.
	return &readStack{newStack(t, dir, stackOptions{readModels: true, now: now, consistencyWait: 2 * time.Second})}
}

// get sends a GET to the gateway and returns the status code and body.
func (s *readStack) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(s.baseURL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// getJSON GETs path, wants 200, and decodes the body into m.
func (s *readStack) getJSON(t *testing.T, path string, m proto.Message) {
	t.Helper()
	code, b := s.get(t, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

var base = time.Now().UTC().Truncate(24 * time.Hour).Add(-200 * 24 * time.Hour)

func onDay(d int) *timestamppb.Timestamp {
	return timestamppb.New(base.Add(time.Duration(d) * 24 * time.Hour))
}

// cameraEvents are a face captured by a public-security camera, retrieved by
// an officer with a case number and provided to another department.
func cameraEvents(ref string) []*piledgerv1.Event {
	id := func() string { return uuid.Must(uuid.NewV7()).String() }
	return []*piledgerv1.Event{
		{
			EventId: id(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_COLLECT, OccurredAt: onDay(0),
			Processor: "city-police", System: "gate-cam-7", DataCategories: []string{"face"}, Purpose: "public-safety",
			LegalBasis: "legal-duty", Retention: &piledgerv1.Retention{Minimum: durationpb.New(30 * 24 * time.Hour), KeepFor: durationpb.New(90 * 24 * time.Hour)},
			Place: &piledgerv1.Place{Kind: "public-street", NoticeSignRef: "sign-12"},
		},
		{
			EventId: id(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_ACCESS, OccurredAt: onDay(1),
			Processor: "city-police", DataCategories: []string{"face"},
			Access: &piledgerv1.Access{Actor: "officer-88", Reason: "case 2026-114", Kind: piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE},
		},
		{
			EventId: id(), SubjectRef: ref, Operation: piledgerv1.Operation_OPERATION_PROVIDE, OccurredAt: onDay(2),
			Processor: "city-police", DataCategories: []string{"face"}, Purpose: "public-safety",
			Recipient: &piledgerv1.Recipient{Processor: "district-office"}, Retention: &piledgerv1.Retention{KeepFor: durationpb.New(60 * 24 * time.Hour)},
		},
	}
}

// TestSubjectRoutes exercises every read-model route over gRPC and REST:
// resolve, data map (read your writes), events (paged), export, due
// holdings and purpose holdings.
func TestSubjectRoutes(t *testing.T) {
	now := base.Add(100 * 24 * time.Hour)
	s := startReadStack(t, filepath.Join(t.TempDir(), "node"), func() time.Time { return now })
	ctx := t.Context()
	ref := subjectRef(7)

	resp, err := s.client.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: cameraEvents(ref)})
	if err != nil {
		t.Fatal(err)
	}
	last := resp.GetReceipts()[2]
	p := last.GetPseudonym()

	// Resolve, over gRPC and with the reference in a POST body.
	res, err := s.subjects.ResolveSubject(ctx, &piledgerv1.ResolveSubjectRequest{SubjectRef: ref})
	if err != nil || res.GetPseudonym() != p || res.GetName() != "subjects/"+p {
		t.Fatalf("ResolveSubject = %v, %v; want the receipts' pseudonym", res, err)
	}
	hr, err := http.Post(s.baseURL+"/v1/subjects:resolve", "application/json", strings.NewReader(fmt.Sprintf(`{"subjectRef": %q}`, ref)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	var hres piledgerv1.ResolveSubjectResponse
	if hr.StatusCode != http.StatusOK || protojson.Unmarshal(b, &hres) != nil || hres.GetPseudonym() != p {
		t.Fatalf("POST /v1/subjects:resolve: %d %s", hr.StatusCode, b)
	}

	// Read your writes: the receipt's index makes the query wait for it.
	idx := last.GetIndex()
	dm, err := s.subjects.GetDataMap(ctx, &piledgerv1.GetDataMapRequest{Name: "subjects/" + p + "/datamap", MinIndex: &idx})
	if err != nil {
		t.Fatal(err)
	}
	if len(dm.GetHoldings()) != 2 || dm.GetLogSize() <= idx {
		t.Fatalf("data map after the append: %v", dm)
	}
	var hdm piledgerv1.DataMap
	s.getJSON(t, fmt.Sprintf("/v1/subjects/%s/datamap?minIndex=%d", p, idx), &hdm)
	if !proto.Equal(&hdm, dm) {
		t.Errorf("REST data map differs from gRPC:\n%v\n%v", &hdm, dm)
	}
	if h := hdm.GetHoldings()[0]; h.GetState() != piledgerv1.HoldingState_HOLDING_STATE_DUE || h.GetProcessor() != "city-police" {
		t.Errorf("camera holding at day 100: %v", h)
	}

	// Events, newest first, two per page over REST.
	var events []*piledgerv1.SubjectEvent
	token := ""
	for {
		var page piledgerv1.ListSubjectEventsResponse
		s.getJSON(t, fmt.Sprintf("/v1/subjects/%s/events?pageSize=2&pageToken=%s", p, url.QueryEscape(token)), &page)
		events = append(events, page.GetSubjectEvents()...)
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(events) != 3 || events[1].GetEvent().GetAccess().GetActor() != "officer-88" || events[0].GetEvent().GetOperation() != piledgerv1.Operation_OPERATION_PROVIDE {
		t.Errorf("events: %v", events)
	}
	ev, err := s.subjects.ListSubjectEvents(ctx, &piledgerv1.ListSubjectEventsRequest{Parent: "subjects/" + p})
	if err != nil || len(ev.GetSubjectEvents()) != 3 {
		t.Errorf("ListSubjectEvents over gRPC: %v, %v", ev, err)
	}

	// Export: one JSON document.
	var export piledgerv1.SubjectExport
	s.getJSON(t, "/v1/subjects/"+p+":export", &export)
	if len(export.GetEvents()) != 3 || len(export.GetDataMap().GetHoldings()) != 2 {
		t.Errorf("export: %v", &export)
	}

	// Due holdings at day 100: the camera footage (deadline day 90) and the
	// copy at the district office (day 62), one per page.
	var due piledgerv1.ListDueHoldingsResponse
	s.getJSON(t, "/v1/retention/due?pageSize=1", &due)
	if len(due.GetHoldings()) != 1 || due.GetNextPageToken() == "" {
		t.Errorf("due now, first page: %v", &due)
	}
	s.getJSON(t, "/v1/retention/due?pageSize=1&pageToken="+url.QueryEscape(due.GetNextPageToken()), &due)
	if len(due.GetHoldings()) != 1 || due.GetNextPageToken() != "" {
		t.Errorf("due now, second page: %v", &due)
	}
	s.getJSON(t, "/v1/retention/due?processor=district-office", &due)
	if len(due.GetHoldings()) != 1 || due.GetHoldings()[0].GetProvenance() != piledgerv1.Provenance_PROVENANCE_PROVIDED {
		t.Errorf("due at district-office: %v", &due)
	}
	before := base.Add(50 * 24 * time.Hour)
	s.getJSON(t, "/v1/retention/due?before="+before.Format(time.RFC3339), &due)
	if len(due.GetHoldings()) != 0 || !due.GetBefore().AsTime().Equal(before) {
		t.Errorf("due by day 50: %v", &due)
	}
	gdue, err := s.holdings.ListDueHoldings(ctx, &piledgerv1.ListDueHoldingsRequest{Processor: "city-police"})
	if err != nil || len(gdue.GetHoldings()) != 1 {
		t.Errorf("ListDueHoldings over gRPC: %v, %v", gdue, err)
	}

	// Who still holds data collected for public safety.
	var ph piledgerv1.ListPurposeHoldingsResponse
	s.getJSON(t, "/v1/purposes/public-safety/holdings", &ph)
	if len(ph.GetPurposeHoldings()) != 2 || ph.GetPurposeHoldings()[0].GetProcessor() != "city-police" || ph.GetPurposeHoldings()[0].GetHoldingCount() != 1 {
		t.Errorf("purpose holdings: %v", &ph)
	}
	if _, err := s.holdings.ListPurposeHoldings(ctx, &piledgerv1.ListPurposeHoldingsRequest{Parent: "purposes/public-safety"}); err != nil {
		t.Error(err)
	}

	if strings.Contains(s.logs.String(), ref) {
		t.Error("the server log holds the raw subject reference")
	}
}

// TestSubjectRouteErrors checks every bad parameter: 400 with a BadRequest
// naming the field (never echoing the value), 404 for an unknown subject.
func TestSubjectRouteErrors(t *testing.T) {
	s := startReadStack(t, filepath.Join(t.TempDir(), "node"), time.Now)
	ref := subjectRef(8)
	appended, err := s.client.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{Events: cameraEvents(ref)})
	if err != nil {
		t.Fatal(err)
	}
	lastIndex := appended.GetReceipts()[2].GetIndex()
	res, err := s.subjects.ResolveSubject(t.Context(), &piledgerv1.ResolveSubjectRequest{SubjectRef: ref})
	if err != nil {
		t.Fatal(err)
	}
	p := res.GetPseudonym()
	unknown, err := s.subjects.ResolveSubject(t.Context(), &piledgerv1.ResolveSubjectRequest{SubjectRef: subjectRef(9)})
	if err != nil || unknown.GetRecorded() {
		t.Fatalf("unknown subject resolved as %v, %v", unknown, err)
	}
	page, err := s.subjects.ListSubjectEvents(t.Context(), &piledgerv1.ListSubjectEventsRequest{Parent: "subjects/" + p, PageSize: 1, MinIndex: &lastIndex})
	if err != nil || page.GetNextPageToken() == "" {
		t.Fatalf("first page: %v, %v", page, err)
	}
	token := url.QueryEscape(page.GetNextPageToken())

	for _, test := range []struct {
		name, method, path, body string
		code                     int
		field                    string // the field violation expected; "" for none
	}{
		{"negative page size", "GET", "/v1/subjects/" + p + "/events?pageSize=-1", "", 400, "pageSize"},
		{"page size not a number", "GET", "/v1/subjects/" + p + "/events?pageSize=many", "", 400, "pageSize"},
		{"subject not a pseudonym", "GET", "/v1/subjects/" + ref + "/datamap", "", 400, "name"},
		{"export of a raw reference", "GET", "/v1/subjects/" + ref + ":export", "", 400, "name"},
		{"events of a raw reference", "GET", "/v1/subjects/" + ref + "/events", "", 400, "parent"},
		{"page token of another subject", "GET", "/v1/subjects/" + unknown.GetPseudonym() + "/events?pageToken=" + token, "", 400, "pageToken"},
		{"altered page token", "GET", "/v1/subjects/" + p + "/events?pageToken=AAAA" + token, "", 400, "pageToken"},
		{"page token of another route", "GET", "/v1/retention/due?pageToken=" + token, "", 400, "pageToken"},
		{"before not a timestamp", "GET", "/v1/retention/due?before=yesterday", "", 400, "before"},
		{"bad processor", "GET", "/v1/retention/due?processor=City%20Police", "", 400, "processor"},
		{"negative due page size", "GET", "/v1/retention/due?pageSize=-5", "", 400, "pageSize"},
		{"unknown purpose", "GET", "/v1/purposes/world-domination/holdings", "", 400, "parent"},
		{"resolve without a reference", "POST", "/v1/subjects:resolve", `{}`, 400, "subjectRef"},
		{"resolve with a control character", "POST", "/v1/subjects:resolve", `{"subjectRef": "a\u0007b"}`, 400, "subjectRef"},
		{"resolve with an unknown field", "POST", "/v1/subjects:resolve", `{"subject": "` + ref + `"}`, 400, "body"},
		{"unknown subject", "GET", "/v1/subjects/" + unknown.GetPseudonym() + "/datamap", "", 404, ""},
		{"an index the log never reaches", "GET", "/v1/subjects/" + p + "/datamap?minIndex=1000000", "", 503, ""},
		{"export of an unknown subject", "GET", "/v1/subjects/" + unknown.GetPseudonym() + ":export", "", 404, ""},
	} {
		t.Run(test.name, func(t *testing.T) {
			req, err := http.NewRequest(test.method, s.baseURL+test.path, strings.NewReader(test.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != test.code {
				t.Fatalf("%s %s: %d %s, want %d", test.method, test.path, resp.StatusCode, b, test.code)
			}
			if strings.Contains(string(b), ref) {
				t.Errorf("the error body repeats the subject reference: %s", b)
			}
			if want := map[int]string{404: api.ReasonNotFound, 503: api.ReasonReadModelsBehind}[test.code]; want != "" && !strings.Contains(string(b), want) {
				t.Errorf("error body %s lacks reason %s", b, want)
			}
			if test.field == "" {
				return
			}
			var body struct {
				Details []struct {
					Type            string `json:"@type"`
					FieldViolations []struct {
						Field string `json:"field"`
					} `json:"fieldViolations"`
				} `json:"details"`
			}
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, d := range body.Details {
				for _, v := range d.FieldViolations {
					found = found || v.Field == test.field
				}
			}
			if !found {
				t.Errorf("no field violation on %q in %s", test.field, b)
			}
		})
	}

	// The same over gRPC: INVALID_ARGUMENT with a BadRequest.
	_, err = s.subjects.ListSubjectEvents(t.Context(), &piledgerv1.ListSubjectEventsRequest{Parent: "subjects/" + p, PageSize: -1})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !hasViolation(st, "pageSize") {
		t.Errorf("gRPC negative page size: %v", err)
	}
	_, err = s.subjects.GetDataMap(t.Context(), &piledgerv1.GetDataMapRequest{Name: "subjects/" + unknown.GetPseudonym() + "/datamap"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("gRPC unknown subject: %v", err)
	}
}

// TestReadRoutesWithoutReadModels: a server built without read models
// answers their routes UNIMPLEMENTED (HTTP 501), and the ledger still works.
func TestReadRoutesWithoutReadModels(t *testing.T) {
	s := startStack(t, t.TempDir(), api.Config{})
	resp, err := http.Get(s.baseURL + "/v1/retention/due")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("GET /v1/retention/due without read models: %d, want 501", resp.StatusCode)
	}
	if code, body := s.post(t, strings.NewReader(`{"events": []}`)); code != http.StatusBadRequest {
		t.Errorf("append still validated: %d %s", code, body)
	}
}

func hasViolation(st *status.Status, field string) bool {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return true
				}
			}
		}
	}
	return false
}
