package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/api"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestAppendAndReadBack appends over both transports, reads the log back over
// both, restarts the whole stack on the same directories and reads it again.
func TestAppendAndReadBack(t *testing.T) {
	dir := t.TempDir()
	s := startStack(t, dir, api.Config{})

	// Three events over gRPC.
	grpcEvents := []*piledgerv1.Event{collectFace(subjectRef(1)), transferAbroad(subjectRef(2)), collectFace(subjectRef(1))}
	resp, err := s.client.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{Events: grpcEvents})
	if err != nil {
		t.Fatalf("AppendEvents: %v", err)
	}
	checkReceipts(t, resp.GetReceipts(), grpcEvents, 0)

	// Two events over REST.
	httpEvents := []*piledgerv1.Event{collectFace(subjectRef(3)), transferAbroad(subjectRef(3))}
	body, err := protojson.Marshal(&piledgerv1.AppendEventsRequest{Events: httpEvents})
	if err != nil {
		t.Fatal(err)
	}
	code, respBody := s.post(t, bytes.NewReader(body))
	if code != http.StatusOK {
		t.Fatalf("POST /v1/events:append = %d %s", code, respBody)
	}
	var httpResp piledgerv1.AppendEventsResponse
	if err := protojson.Unmarshal(respBody, &httpResp); err != nil {
		t.Fatalf("response %s: %v", respBody, err)
	}
	checkReceipts(t, httpResp.GetReceipts(), httpEvents, 3)

	// A retry returns the original receipt and appends nothing.
	retry, err := s.client.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{Events: grpcEvents[1:2]})
	if err != nil {
		t.Fatalf("AppendEvents retry: %v", err)
	}
	if r := retry.GetReceipts()[0]; !r.GetDuplicate() || r.GetIndex() != 1 {
		t.Errorf("retry receipt = %v, want the original (index 1) marked duplicate", r)
	}

	want := append(append([]*piledgerv1.Event{}, grpcEvents...), httpEvents...)
	got := s.entries(t, 0, 0)
	checkEntries(t, "gRPC", got, want)
	checkEntries(t, "NDJSON", s.httpEntries(t, "start=0"), want)
	checkEntries(t, "gRPC start=1 limit=2", s.entries(t, 1, 2), want[1:3])
	checkEntries(t, "NDJSON start=3 limit=1", s.httpEntries(t, "start=3&limit=1"), want[3:4])
	checkEntries(t, "NDJSON past the end", s.httpEntries(t, "start=99"), nil)

	for i := 1; i <= 3; i++ {
		if ref := subjectRef(i); strings.Contains(s.logs.String(), ref) {
			t.Errorf("the log output holds subject reference %s", ref)
		}
	}

	s.stop()
	s = startStack(t, dir, api.Config{})
	again := s.entries(t, 0, 0)
	if len(again) != len(got) {
		t.Fatalf("after restart: %d entries, want %d", len(again), len(got))
	}
	for i := range got {
		if !proto.Equal(again[i], got[i]) {
			t.Errorf("after restart, entry %d = %v, want %v", i, again[i], got[i])
		}
	}
}

func checkReceipts(t *testing.T, receipts []*piledgerv1.Receipt, events []*piledgerv1.Event, firstIndex uint64) {
	t.Helper()
	if len(receipts) != len(events) {
		t.Fatalf("%d receipts for %d events", len(receipts), len(events))
	}
	for i, r := range receipts {
		if r.GetEventId() != events[i].GetEventId() || r.GetIndex() != firstIndex+uint64(i) || r.GetDuplicate() || r.GetPseudonym() == "" {
			t.Errorf("receipt %d = %v, want event %s at index %d, not duplicate, with a pseudonym", i, r, events[i].GetEventId(), firstIndex+uint64(i))
		}
	}
}

func checkEntries(t *testing.T, what string, got []*piledgerv1.LogEntry, want []*piledgerv1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
	for i, e := range got {
		if !proto.Equal(e.GetEvent(), want[i]) || e.GetHeader().GetEventId() != want[i].GetEventId() || e.GetShredded() {
			t.Errorf("%s: entry %d = %v, want event %v", what, i, e, want[i])
		}
		if i > 0 && e.GetIndex() != got[i-1].GetIndex()+1 {
			t.Errorf("%s: entry %d has index %d after %d", what, i, e.GetIndex(), got[i-1].GetIndex())
		}
	}
}

// TestInvalidEvents sends malformed batches over gRPC and REST: each is
// rejected as INVALID_ARGUMENT / 400 with a BadRequest naming the field with
// the event's index, and nothing is appended.
func TestInvalidEvents(t *testing.T) {
	s := startStack(t, t.TempDir(), api.Config{})
	if _, err := s.client.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{collectFace(subjectRef(9))}}); err != nil {
		t.Fatal(err)
	}
	before := len(s.entries(t, 0, 0))

	// batch returns three valid events with the one at index i changed by f.
	batch := func(i int, f func(e *piledgerv1.Event)) []*piledgerv1.Event {
		events := []*piledgerv1.Event{collectFace(subjectRef(10)), transferAbroad(subjectRef(11)), collectFace(subjectRef(12))}
		f(events[i])
		return events
	}
	for _, test := range []struct {
		name   string
		events []*piledgerv1.Event
		field  string
	}{
		{"empty batch", nil, "events"},
		{"missing event id", batch(2, func(e *piledgerv1.Event) { e.EventId = "" }), "events[2].eventId"},
		{"UUIDv4 event id", batch(1, func(e *piledgerv1.Event) { e.EventId = "3b241101-e2bb-4255-8caf-4136c566a962" }), "events[1].eventId"},
		{"unspecified operation", batch(0, func(e *piledgerv1.Event) { e.Operation = piledgerv1.Operation_OPERATION_UNSPECIFIED }), "events[0].operation"},
		{"unknown operation number", batch(0, func(e *piledgerv1.Event) { e.Operation = 99 }), "events[0].operation"},
		{"transfer abroad without country", batch(1, func(e *piledgerv1.Event) { e.Recipient.Country = "" }), "events[1].recipient.country"},
		{"unknown category", batch(2, func(e *piledgerv1.Event) { e.DataCategories = []string{"face", "soul"} }), "events[2].dataCategories[1]"},
		{"occurred in the future", batch(0, func(e *piledgerv1.Event) { e.OccurredAt = timestamppb.New(time.Now().Add(time.Hour)) }), "events[0].occurredAt"},
		{"missing subject", batch(2, func(e *piledgerv1.Event) { e.SubjectRef = "" }), "events[2].subjectRef"},
		{"bad processor", batch(0, func(e *piledgerv1.Event) { e.Processor = "City Police" }), "events[0].processor"},
		{"place kind unknown", batch(2, func(e *piledgerv1.Event) { e.Place.Kind = "moon" }), "events[2].place.kind"},
		{"duplicate id in batch", func() []*piledgerv1.Event {
			events := batch(0, func(*piledgerv1.Event) {})
			events[2].EventId = events[0].EventId
			return events
		}(), "events[2].eventId"},
		{"too many events", func() []*piledgerv1.Event {
			events := make([]*piledgerv1.Event, 1001)
			for i := range events {
				events[i] = collectFace(subjectRef(13))
			}
			return events
		}(), "events"},
	} {
		req := &piledgerv1.AppendEventsRequest{Events: test.events}
		t.Run(test.name+"/grpc", func(t *testing.T) {
			_, err := s.client.AppendEvents(t.Context(), req)
			checkInvalid(t, status.Convert(err).Proto(), codes.InvalidArgument, api.ReasonInvalidEvent, test.field, "")
		})
		t.Run(test.name+"/http", func(t *testing.T) {
			body, err := protojson.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			code, respBody := s.post(t, bytes.NewReader(body))
			if code != http.StatusBadRequest {
				t.Fatalf("HTTP %d %s, want 400", code, respBody)
			}
			checkInvalid(t, decodeStatus(t, respBody), codes.InvalidArgument, api.ReasonInvalidEvent, test.field, "")
		})
	}
	if after := len(s.entries(t, 0, 0)); after != before {
		t.Errorf("the log grew from %d to %d entries", before, after)
	}
}

// TestInvalidHTTPRequests sends bodies the gateway cannot decode, and bad
// query parameters.
func TestInvalidHTTPRequests(t *testing.T) {
	s := startStack(t, t.TempDir(), api.Config{MaxRequestBytes: 64 << 10})
	valid, err := protojson.Marshal(&piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{collectFace(subjectRef(20))}})
	if err != nil {
		t.Fatal(err)
	}
	for _, test := range []struct {
		name, body, field, desc string
	}{
		{"unknown field", `{"events": [{"evntId": "x"}]}`, "body", `unknown field "evntId"`},
		{"misspelled top-level field", `{"event": []}`, "body", `unknown field "event"`},
		{"not JSON", `events=1`, "body", "not valid JSON"},
		{"truncated", string(valid[:len(valid)-3]), "body", "JSON ends unexpectedly"},
		{"trailing data", string(valid) + `{"x": 1}`, "body", "unexpected data after the JSON value"},
		{"wrong type", `{"events": [{"subjectRef": 110101199003070021}]}`, "body", `invalid value for field "subjectRef"`},
		{"bad timestamp", `{"events": [{"occurredAt": "110101199003070021"}]}`, "body", "invalid google.protobuf.Timestamp value"},
		{"array body", `[` + string(valid) + `]`, "body", "invalid JSON for this request message"},
	} {
		t.Run(test.name, func(t *testing.T) {
			code, body := s.post(t, strings.NewReader(test.body))
			if code != http.StatusBadRequest {
				t.Fatalf("HTTP %d %s, want 400", code, body)
			}
			checkInvalid(t, decodeStatus(t, body), codes.InvalidArgument, api.ReasonInvalidRequest, test.field, test.desc)
			if bytes.Contains(body, []byte("110101199003070021")) {
				t.Errorf("error body quotes a request value: %s", body)
			}
		})
	}

	t.Run("bad query parameter", func(t *testing.T) {
		resp, err := http.Get(s.baseURL + "/v1/log/entries?start=110101199003070021x")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("HTTP %d %s, want 400", resp.StatusCode, body)
		}
		checkInvalid(t, decodeStatus(t, body), codes.InvalidArgument, api.ReasonInvalidRequest, "start", "")
		if bytes.Contains(body, []byte("110101199003070021")) {
			t.Errorf("error body quotes a request value: %s", body)
		}
	})

	// Oversized bodies get 413 whether or not the length is announced.
	big := `{"events": [` + strings.Repeat(string(valid[len(`{"events":[`):len(valid)-2])+",", 200) + `]}`
	for _, test := range []struct {
		name string
		body io.Reader
	}{
		{"oversized body", strings.NewReader(big)},
		{"oversized chunked body", io.MultiReader(strings.NewReader(big))}, // no length: chunked
	} {
		t.Run(test.name, func(t *testing.T) {
			code, body := s.post(t, test.body)
			if code != http.StatusRequestEntityTooLarge {
				t.Fatalf("HTTP %d %s, want 413", code, body)
			}
			st := decodeStatus(t, body)
			if codes.Code(st.GetCode()) != codes.ResourceExhausted || errorInfo(t, st).GetReason() != api.ReasonRequestTooLarge {
				t.Errorf("status = %v, want RESOURCE_EXHAUSTED %s", st, api.ReasonRequestTooLarge)
			}
		})
	}
	if n := len(s.entries(t, 0, 0)); n != 0 {
		t.Errorf("the log holds %d entries, want none", n)
	}
}

// TestOversizedGRPCMessage checks that gRPC enforces MaxRecvMsgSize.
func TestOversizedGRPCMessage(t *testing.T) {
	s := startStack(t, t.TempDir(), api.Config{MaxRecvMsgSize: 64 << 10})
	e := collectFace(subjectRef(30))
	e.Attributes["note"] = strings.Repeat("x", 65<<10)
	_, err := s.client.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{e}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("AppendEvents of %d bytes = %v, want RESOURCE_EXHAUSTED", proto.Size(e), err)
	}
}

func TestHealthAndOpenAPI(t *testing.T) {
	s := startStack(t, t.TempDir(), api.Config{})

	resp, err := http.Get(s.baseURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "SERVING") {
		t.Errorf("GET /healthz = %d %s, want 200 SERVING", resp.StatusCode, body)
	}

	conn, err := grpc.NewClient(s.srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, svc := range []string{"", "piledger.v1.LedgerService"} {
		hr, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Check(%q) = %v, %v; want SERVING", svc, hr, err)
		}
	}

	resp, err = http.Get(s.baseURL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]any `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("/openapi.json: %v", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("/openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, path := range []string{"/v1/events:append", "/v1/log/entries"} {
		if _, ok := doc.Paths[path]; !ok {
			t.Errorf("/openapi.json does not list %s", path)
		}
	}
}

// TestShutdown checks that Run returns once its context is done, after which
// both ports are closed.
func TestShutdown(t *testing.T) {
	s := startStack(t, t.TempDir(), api.Config{})
	grpcAddr, httpAddr := s.srv.GRPCAddr(), s.srv.HTTPAddr()
	s.stop()
	if _, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
		t.Errorf("HTTP still served after Run returned")
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC health after Run returned: %v, want UNAVAILABLE", err)
	}
}

func TestNewFailsOnAddressInUse(t *testing.T) {
	s := startStack(t, t.TempDir(), api.Config{})
	if _, err := api.New(api.Config{GRPCAddr: s.srv.GRPCAddr(), HTTPAddr: "127.0.0.1:0"}, nil, nil); err == nil {
		t.Errorf("New with a nil Log succeeded")
	}
	srv, err := api.New(api.Config{GRPCAddr: s.srv.GRPCAddr(), HTTPAddr: "127.0.0.1:0"}, &panicLog{}, nil)
	if err == nil {
		srv.Run(canceled())
		t.Errorf("New on a gRPC address in use succeeded")
	}
	srv, err = api.New(api.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: s.srv.HTTPAddr()}, &panicLog{}, nil)
	if err == nil {
		srv.Run(canceled())
		t.Errorf("New on an HTTP address in use succeeded")
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// decodeStatus parses a gateway error body.
func decodeStatus(t *testing.T, body []byte) *spb.Status {
	t.Helper()
	st := new(spb.Status)
	if err := protojson.Unmarshal(body, st); err != nil {
		t.Fatalf("error body %s is not a google.rpc.Status: %v", body, err)
	}
	return st
}

func errorInfo(t *testing.T, st *spb.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range status.FromProto(st).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Errorf("status %v has no ErrorInfo", st)
	return nil
}

// checkInvalid checks the code, the ErrorInfo and that a BadRequest
// violation names field (with desc in its description, if not empty).
func checkInvalid(t *testing.T, st *spb.Status, code codes.Code, reason, field, desc string) {
	t.Helper()
	if codes.Code(st.GetCode()) != code {
		t.Fatalf("status %v, want code %v", st, code)
	}
	if info := errorInfo(t, st); info.GetReason() != reason || info.GetDomain() != api.ErrorDomain {
		t.Errorf("ErrorInfo = %v, want reason %s in %s", info, reason, api.ErrorDomain)
	}
	for _, d := range status.FromProto(st).Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			if v.GetField() == field && strings.Contains(v.GetDescription(), desc) {
				return
			}
		}
	}
	t.Errorf("status %v has no violation of %q mentioning %q", st, field, desc)
}
