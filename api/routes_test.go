package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/piledger/piledger/api"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// httpRule is one rule of proto/piledger/v1/piledger_http.yaml.
type httpRule struct {
	selector, verb, path, body string
}

// readHTTPRules parses the gateway's HTTP rules (the file is a flat list
// of selector / verb / body lines; no YAML library is needed).
func readHTTPRules(t *testing.T) map[string]httpRule {
	t.Helper()
	f, err := os.Open("../proto/piledger/v1/piledger_http.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rules := map[string]httpRule{}
	var cur *httpRule
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key, val, ok := strings.Cut(strings.TrimPrefix(line, "- "), ":")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		val = strings.Trim(strings.TrimSpace(val), `"`)
		switch key {
		case "selector":
			if cur != nil {
				rules[cur.selector] = *cur
			}
			cur = &httpRule{selector: val}
		case "get", "post", "put", "patch", "delete":
			cur.verb, cur.path = strings.ToUpper(key), val
		case "body":
			cur.body = val
		}
	}
	if cur != nil {
		rules[cur.selector] = *cur
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rules
}

var pathVarRE = regexp.MustCompile(`\{([a-z_]+)(=[^}]*)?\}`)

// restRequest builds the HTTP request of rule for req: path variables from
// req's fields, other set fields as query parameters (GET) or the whole
// message as the body (body: "*").
func restRequest(t *testing.T, base string, rule httpRule, req proto.Message) (string, string, io.Reader) {
	t.Helper()
	m := req.ProtoReflect()
	inPath := map[string]bool{}
	path := pathVarRE.ReplaceAllStringFunc(rule.path, func(v string) string {
		name := pathVarRE.FindStringSubmatch(v)[1]
		inPath[name] = true
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		return m.Get(fd).String()
	})
	if rule.body == "*" {
		b, err := protojson.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		return rule.verb, base + path, bytes.NewReader(b)
	}
	q := url.Values{}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if !inPath[string(fd.Name())] && fd.Message() == nil && !fd.IsList() {
			q.Set(fd.JSONName(), v.String())
		}
		return true
	})
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return rule.verb, base + path, nil
}

// invoke calls a method generically over gRPC; for server streams it reads
// the whole stream.
func invoke(ctx context.Context, conn *grpc.ClientConn, md protoreflect.MethodDescriptor, req proto.Message) error {
	full := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
	out, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return err
	}
	if !md.IsStreamingServer() {
		return conn.Invoke(ctx, full, req, out.New().Interface())
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full)
	if err != nil {
		return err
	}
	if err := st.SendMsg(req); err != nil {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	for {
		if err := st.RecvMsg(out.New().Interface()); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// routeCase is the test data of one method: a request about the victim's
// data, and credentials that must be refused with PERMISSION_DENIED (empty
// when every authenticated caller may call the method).
type routeCase struct {
	req       proto.Message
	forbidden map[string]string // description → authorization value
	allowed   []string          // metadata pairs of a caller who may call it (and succeeds)
}

// TestRouteTable calls every method of every piledger service in the proto
// registry over gRPC, and over REST through its HTTP rule: without
// credentials it is UNAUTHENTICATED / 401, with the credentials of the wrong
// role, another subject or another processor it is PERMISSION_DENIED / 403,
// and both transports give the same answer. A method without a case here
// fails the test, so a new route cannot go untested.
func TestRouteTable(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	victim, attacker := s.ref(201), s.ref(202)
	pv := s.keys.Pseudonym(victim)
	receipts := s.appendAs(t, s.key("city-police"), collectFace(victim))
	idx := receipts[0].GetIndex()
	waitCheckpoint(t, s, idx+1)

	subjectA := s.bearer(t, api.RoleSubject, attacker)
	shop := s.key("shop-42")
	regulator := s.bearer(t, api.RoleRegulator, "officer-7")
	subjectName := "subjects/" + pv
	cases := map[string]routeCase{
		piledgerv1.LedgerService_AppendEvents_FullMethodName: {
			req:     &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{collectFace(victim)}}, // processor city-police
			allowed: []string{"authorization", s.key("city-police")},
			forbidden: map[string]string{
				"another processor": shop,
				"a subject":         subjectA,
				"a regulator":       regulator,
				"an admin":          s.bearer(t, api.RoleAdmin, "ops-1"),
			},
		},
		piledgerv1.LedgerService_ListLogEntries_FullMethodName: {
			req:       &piledgerv1.ListLogEntriesRequest{Start: 0, Limit: 1},
			allowed:   []string{"authorization", regulator, "x-piledger-reason", "route table test"},
			forbidden: map[string]string{"an emitter": shop, "a subject": subjectA},
		},
		piledgerv1.SubjectService_ResolveSubject_FullMethodName: {
			req:       &piledgerv1.ResolveSubjectRequest{SubjectRef: victim},
			allowed:   []string{"authorization", shop},
			forbidden: map[string]string{"a subject": subjectA},
		},
		piledgerv1.SubjectService_GetDataMap_FullMethodName: {
			req:       &piledgerv1.GetDataMapRequest{Name: subjectName + "/datamap"},
			allowed:   []string{"authorization", s.bearer(t, api.RoleSubject, victim)},
			forbidden: map[string]string{"another subject": subjectA, "an emitter": shop},
		},
		piledgerv1.SubjectService_ListSubjectEvents_FullMethodName: {
			req:       &piledgerv1.ListSubjectEventsRequest{Parent: subjectName},
			allowed:   []string{"authorization", regulator, "x-piledger-reason", "route table test"},
			forbidden: map[string]string{"another subject": subjectA, "an emitter": shop},
		},
		piledgerv1.SubjectService_ExportSubject_FullMethodName: {
			req:       &piledgerv1.ExportSubjectRequest{Name: subjectName},
			allowed:   []string{"authorization", s.bearer(t, api.RoleAdmin, "ops-1"), "x-piledger-reason", "route table test"},
			forbidden: map[string]string{"another subject": subjectA, "an emitter": shop, "a regulator": regulator},
		},
		piledgerv1.SubjectService_EraseSubject_FullMethodName: {
			// Another subject than the victim, so that the other cases still
			// read the victim's records.
			req:       &piledgerv1.EraseSubjectRequest{Name: "subjects/" + s.keys.Pseudonym(s.ref(203))},
			allowed:   []string{"authorization", s.bearer(t, api.RoleAdmin, "ops-1"), "x-piledger-reason", "route table test"},
			forbidden: map[string]string{"another subject": subjectA, "an emitter": shop, "a regulator": regulator},
		},
		piledgerv1.HoldingService_ListDueHoldings_FullMethodName: {
			req:       &piledgerv1.ListDueHoldingsRequest{Processor: "city-police"},
			allowed:   []string{"authorization", s.key("city-police")},
			forbidden: map[string]string{"another processor": shop, "a subject": subjectA},
		},
		piledgerv1.FindingService_ListFindings_FullMethodName: {
			req:       &piledgerv1.ListFindingsRequest{Processor: "city-police"},
			allowed:   []string{"authorization", s.key("city-police")},
			forbidden: map[string]string{"another processor": shop, "a subject": subjectA},
		},
		piledgerv1.HoldingService_ListPurposeHoldings_FullMethodName: {
			req:       &piledgerv1.ListPurposeHoldingsRequest{Parent: "purposes/public-safety"},
			allowed:   []string{"authorization", regulator},
			forbidden: map[string]string{"an emitter": shop, "a subject": subjectA},
		},
		piledgerv1.TransparencyService_GetCheckpoint_FullMethodName:       {req: &piledgerv1.GetCheckpointRequest{}, allowed: []string{"authorization", subjectA}},
		piledgerv1.TransparencyService_GetVerifierKey_FullMethodName:      {req: &piledgerv1.GetVerifierKeyRequest{}, allowed: []string{"authorization", subjectA}},
		piledgerv1.TransparencyService_GetConsistencyProof_FullMethodName: {req: &piledgerv1.GetConsistencyProofRequest{From: 1}, allowed: []string{"authorization", subjectA}},
		piledgerv1.TransparencyService_GetInclusionProof_FullMethodName: {
			req:       &piledgerv1.GetInclusionProofRequest{Index: idx},
			allowed:   []string{"authorization", s.bearer(t, api.RoleSubject, victim)},
			forbidden: map[string]string{"another subject": subjectA, "another processor": shop},
		},
		piledgerv1.TransparencyService_ExportLog_FullMethodName: {
			req:       &piledgerv1.ExportLogRequest{},
			allowed:   []string{"authorization", regulator},
			forbidden: map[string]string{"an emitter": shop, "a subject": subjectA},
		},
	}

	rules := readHTTPRules(t)
	conn := s.conn(t, nil)
	registered := map[string]bool{}
	for _, m := range s.srv.RegisteredMethods() {
		registered[m] = true
	}
	var methods []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("piledger.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				methods = append(methods, sd.Methods().Get(j))
			}
		}
		return true
	})
	if len(methods) < 13 {
		t.Fatalf("the proto registry holds %d piledger methods; want at least the 13 of API.md", len(methods))
	}
	for _, md := range methods {
		full := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
		t.Run(strings.TrimPrefix(full, "/piledger.v1."), func(t *testing.T) {
			tc, ok := cases[full]
			if !ok {
				t.Fatalf("no test case for %s: add one (and its policy entry)", full)
			}
			if !api.HasPolicy(full) {
				t.Errorf("%s has no policy entry", full)
			}
			if !registered[full] {
				t.Errorf("%s is not registered on the server", full)
			}
			rule, hasRule := rules[string(md.FullName())]
			check := func(t *testing.T, what, auth string, wantCode codes.Code, wantHTTP int) {
				t.Helper()
				ctx := t.Context()
				if auth != "" {
					ctx = ctxMD(t, "authorization", auth)
				}
				grpcErr := invoke(ctx, conn, md, tc.req)
				if status.Code(grpcErr) != wantCode {
					t.Errorf("%s over gRPC: %v, want %v", what, grpcErr, wantCode)
				}
				if !hasRule {
					return
				}
				verb, u, body := restRequest(t, "", rule, tc.req)
				var hdr []string
				if auth != "" {
					hdr = []string{"Authorization", auth}
				}
				code, b := s.do(t, verb, u, body, hdr...)
				if code != wantHTTP {
					t.Errorf("%s over REST (%s %s): HTTP %d %s, want %d", what, verb, u, code, b, wantHTTP)
					return
				}
				// A server stream's error comes as an NDJSON {"error": status} line.
				var wrapped struct {
					Error json.RawMessage `json:"error"`
				}
				if json.Unmarshal(b, &wrapped) == nil && wrapped.Error != nil {
					b = wrapped.Error
				}
				st := decodeStatus(t, b)
				if codes.Code(st.GetCode()) != status.Code(grpcErr) {
					t.Errorf("%s: REST says %v, gRPC says %v", what, codes.Code(st.GetCode()), status.Code(grpcErr))
				}
			}
			check(t, "no credentials", "", codes.Unauthenticated, http.StatusUnauthorized)
			check(t, "an unknown API key", "ApiKey pk_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", codes.Unauthenticated, http.StatusUnauthorized)
			check(t, "a garbage token", "Bearer x.y.z", codes.Unauthenticated, http.StatusUnauthorized)
			if len(tc.forbidden) == 0 {
				t.Logf("%s: every authenticated caller may call it (API.md: anyone authenticated)", full)
			}
			for what, auth := range tc.forbidden {
				check(t, what, auth, codes.PermissionDenied, http.StatusForbidden)
			}
			if len(tc.allowed) == 0 {
				t.Fatalf("%s: no allowed caller in the test case", full)
			}
			if err := invoke(ctxMD(t, tc.allowed...), conn, md, tc.req); err != nil {
				t.Errorf("an allowed caller over gRPC: %v", err)
			}
			if hasRule {
				verb, u, body := restRequest(t, "", rule, tc.req)
				var hdr []string
				for i := 0; i < len(tc.allowed); i += 2 {
					hdr = append(hdr, http.CanonicalHeaderKey(tc.allowed[i]), tc.allowed[i+1])
				}
				if code, b := s.do(t, verb, u, body, hdr...); code != http.StatusOK {
					t.Errorf("an allowed caller over REST (%s %s): HTTP %d %s", verb, u, code, b)
				}
			}
			if !hasRule && full != piledgerv1.TransparencyService_GetCheckpoint_FullMethodName && full != piledgerv1.TransparencyService_ExportLog_FullMethodName {
				t.Errorf("%s has no HTTP rule in piledger_http.yaml", full)
			}
		})
	}

	// GET /v1/log/checkpoint is a plain handler calling GetCheckpoint.
	if code, b := s.do(t, "GET", "/v1/log/checkpoint", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/log/checkpoint without credentials: %d %s, want 401", code, b)
	}
	if code, b := s.do(t, "GET", "/v1/log/checkpoint", nil, "Authorization", subjectA); code != http.StatusOK || !strings.HasPrefix(string(b), "piledger") && !strings.Contains(string(b), "\n") {
		t.Errorf("GET /v1/log/checkpoint as a subject: %d %s, want 200 and a note", code, b)
	}
	// Public routes stay public.
	for _, p := range []string{"/healthz", "/openapi.json"} {
		if code, _ := s.do(t, "GET", p, nil); code != http.StatusOK {
			t.Errorf("GET %s without credentials: %d, want 200", p, code)
		}
	}
}

// TestEveryMethodHasAPolicy: every method the server registers (the
// piledger services, health, reflection) has an entry in the policy table;
// a method without one would be denied to everyone.
func TestEveryMethodHasAPolicy(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	methods := s.srv.RegisteredMethods()
	if len(methods) < 15 {
		t.Fatalf("the server registers %d methods: %v", len(methods), methods)
	}
	for _, m := range methods {
		if !api.HasPolicy(m) {
			t.Errorf("%s is registered but has no policy entry: every call to it is denied", m)
		}
	}
	// A method no policy names is denied to an authenticated caller, and
	// refused as unauthenticated to others.
	conn := s.conn(t, nil)
	err := conn.Invoke(ctxMD(t, "authorization", s.bearer(t, api.RoleAdmin, "ops-1")), "/piledger.v1.LedgerService/DropEverything", &piledgerv1.ListLogEntriesRequest{}, &piledgerv1.LogEntry{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("an unknown method as admin: %v, want PERMISSION_DENIED", err)
	}
	err = conn.Invoke(t.Context(), "/piledger.v1.LedgerService/DropEverything", &piledgerv1.ListLogEntriesRequest{}, &piledgerv1.LogEntry{})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("an unknown method without credentials: %v, want UNAUTHENTICATED", err)
	}
}

// waitCheckpoint waits until a signed checkpoint covers size events.
func waitCheckpoint(t *testing.T, s *authStack, size uint64) {
	t.Helper()
	c := piledgerv1.NewTransparencyServiceClient(s.conn(t, nil))
	deadline := time.Now().Add(10 * time.Second)
	for {
		cp, err := c.GetCheckpoint(ctxMD(t, "authorization", s.key("city-police")), &piledgerv1.GetCheckpointRequest{})
		if err == nil && cp.GetTreeSize() >= size {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint covers %d events: %v, %v", size, cp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
