package api_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/api"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// seedRequests are valid and invalid requests to start both fuzzers from.
func seedRequests() []*piledgerv1.AppendEventsRequest {
	invalid := transferAbroad(subjectRef(41))
	invalid.Recipient.Country = "hk"
	invalid.OccurredAt = &timestamppb.Timestamp{Seconds: 86400} // before the earliest accepted
	return []*piledgerv1.AppendEventsRequest{
		{},
		{Events: []*piledgerv1.Event{{}}},
		{Events: []*piledgerv1.Event{collectFace(subjectRef(40))}},
		{Events: []*piledgerv1.Event{transferAbroad(subjectRef(40)), invalid}},
	}
}

// FuzzAppendJSON POSTs arbitrary bodies to the gateway through the real HTTP
// listener, with authentication on and the API key of processor
// city-police. No body may get a 5xx or break the connection (a panic
// would), and no event of another processor may be appended.
func FuzzAppendJSON(f *testing.F) {
	s := startAuthStack(f, api.Config{MaxRequestBytes: 1 << 20}, nil)
	for _, req := range seedRequests() {
		b, err := protojson.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range []string{
		``, `null`, `[]`, `{"events": null}`, `{"events": [null]}`, `{"events": [{"attributes": {"": ""}}]}`,
		`{"events": [{"occurredAt": "9999-12-31T23:59:59Z", "retention": {"keepFor": "-1s"}}]}`,
		`{"events": [{"operation": 14, "dataCategories": ["x-a.b", "x-a.b"]}]}`, "{\"events\": [{\"subjectRef\": \"\\u0000\"}]}",
		"\xff\xfe", `{"events": [{"eventId": "0190d6a2-7f3e-7000-8000-000000000000", "unknown": 1}]}`,
	} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := http.NewRequest("POST", s.baseURL+"/v1/events:append", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", s.key("city-police"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("reading the response: %v", err)
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("POST %q = %d %s", body, resp.StatusCode, b)
		}
		var in piledgerv1.AppendEventsRequest
		if resp.StatusCode == http.StatusOK && protojson.Unmarshal(body, &in) == nil {
			for _, e := range in.GetEvents() {
				if e.GetProcessor() != "city-police" {
					t.Fatalf("an event of processor %q was accepted from city-police's key", e.GetProcessor())
				}
			}
		}
	})
}

// FuzzAppendProto sends arbitrary AppendEventsRequests (random bytes that
// unmarshal into one) through gRPC, with authentication on and the API key
// of processor city-police. The server may accept or reject them, but never
// fail with INTERNAL or UNKNOWN, nor accept another processor's events.
func FuzzAppendProto(f *testing.F) {
	s := startAuthStack(f, api.Config{}, nil)
	client := piledgerv1.NewLedgerServiceClient(s.conn(f, nil))
	for _, req := range seedRequests() {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x00})                               // one empty event
	f.Add([]byte{0x0a, 0x05, 0x18, 0x63, 0xf8, 0x01, 0x00}) // operation 99 and an unknown field
	f.Fuzz(func(t *testing.T, data []byte) {
		req := new(piledgerv1.AppendEventsRequest)
		if err := proto.Unmarshal(data, req); err != nil {
			t.Skip("not an AppendEventsRequest")
		}
		_, err := client.AppendEvents(ctxMD(t, "authorization", s.key("city-police")), req)
		switch status.Code(err) {
		case codes.Internal, codes.Unknown, codes.DataLoss:
			t.Fatalf("AppendEvents(%v) = %v", req, err)
		case codes.OK:
			for _, e := range req.GetEvents() {
				if e.GetProcessor() != "city-police" {
					t.Fatalf("an event of processor %q was accepted from city-police's key", e.GetProcessor())
				}
			}
		}
	})
}
