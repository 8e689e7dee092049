package api_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/crypto"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// signES256 signs a token with an arbitrary header and claims.
func signES256(key *ecdsa.PrivateKey, header, claims map[string]any) string {
	unsigned := b64(mustJSON(header)) + "." + b64(mustJSON(claims))
	sum := sha256.Sum256([]byte(unsigned))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		panic(err)
	}
	return unsigned + "." + b64(append(pad32(r.Bytes()), pad32(s.Bytes())...))
}

// extToken returns the header and claims of a valid regulator token of the
// external issuer.
func extToken(now time.Time) (header, claims map[string]any) {
	return map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": extKID},
		map[string]any{
			"iss": extIssuer, "aud": "piledger", "sub": "officer-9", api.RoleClaim: "regulator",
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}
}

// TestForgedTokens sends tokens that break each validation rule, over gRPC
// and REST: every one is UNAUTHENTICATED / 401, and the well-formed token
// they were derived from passes.
func TestForgedTokens(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	now := time.Now()
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&s.extKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	forge := func(f func(h, c map[string]any)) string {
		h, c := extToken(now)
		f(h, c)
		return signES256(s.extKey, h, c)
	}
	valid := forge(func(h, c map[string]any) {})
	s.secret(valid)

	hs256 := func(secret []byte) string {
		h, c := extToken(now)
		h["alg"] = "HS256"
		unsigned := b64(mustJSON(h)) + "." + b64(mustJSON(c))
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(unsigned))
		return unsigned + "." + b64(mac.Sum(nil))
	}
	none := func() string {
		h, c := extToken(now)
		h["alg"] = "none"
		return b64(mustJSON(h)) + "." + b64(mustJSON(c)) + "."
	}
	wrongAudIssuer, err := api.NewTokenIssuer(mustTokenKey(t), api.LocalIssuer, "another-service")
	if err != nil {
		t.Fatal(err)
	}
	wrongAud, err := wrongAudIssuer.Issue(api.RoleRegulator, "officer-9", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	expiredLocal, err := s.issuer.Issue(api.RoleRegulator, "officer-9", time.Hour, now.Add(-time.Hour-2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	forged := map[string]string{
		"alg none":                              none(),
		"alg none with a signature":             forge(func(h, c map[string]any) { h["alg"] = "none" }),
		"HS256 keyed with the public key (DER)": hs256(pubDER),
		"HS256 keyed with the JWK set":          hs256(jwks(&s.extKey.PublicKey, extKID)),
		"wrong iss":                             forge(func(h, c map[string]any) { c["iss"] = "https://evil.example" }),
		"iss of the local issuer":               forge(func(h, c map[string]any) { c["iss"] = api.LocalIssuer }),
		"missing aud":                           forge(func(h, c map[string]any) { delete(c, "aud") }),
		"wrong aud":                             forge(func(h, c map[string]any) { c["aud"] = "other-service" }),
		"wrong aud from the local issuer":       wrongAud,
		"missing exp":                           forge(func(h, c map[string]any) { delete(c, "exp") }),
		"expired beyond the skew":               forge(func(h, c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() }),
		"expired local token":                   expiredLocal,
		"nbf in the future":                     forge(func(h, c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() }),
		"wrong typ":                             forge(func(h, c map[string]any) { h["typ"] = "JWT" }),
		"missing typ":                           forge(func(h, c map[string]any) { delete(h, "typ") }),
		"unknown kid, other key":                signES256(otherKey, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "idp-key-2"}, func() map[string]any { _, c := extToken(now); return c }()),
		"known kid, other key":                  signES256(otherKey, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": extKID}, func() map[string]any { _, c := extToken(now); return c }()),
		"unknown kid, right key":                forge(func(h, c map[string]any) { h["kid"] = "idp-key-2" }),
		"jku header":                            forge(func(h, c map[string]any) { h["jku"] = "https://evil.example/jwks.json" }),
		"x5u header":                            forge(func(h, c map[string]any) { h["x5u"] = "https://evil.example/cert.pem" }),
		"jwk header":                            forge(func(h, c map[string]any) { h["jwk"] = json.RawMessage(jwks(&otherKey.PublicKey, "x")) }),
		"x5c header":                            forge(func(h, c map[string]any) { h["x5c"] = []string{"MIIB"} }),
		"crit header":                           forge(func(h, c map[string]any) { h["crit"] = []string{"exp"} }),
		"missing sub":                           forge(func(h, c map[string]any) { delete(c, "sub") }),
		"missing role":                          forge(func(h, c map[string]any) { delete(c, api.RoleClaim) }),
		"unknown role":                          forge(func(h, c map[string]any) { c[api.RoleClaim] = "superuser" }),
		"emitter role in a token":               forge(func(h, c map[string]any) { c[api.RoleClaim] = "emitter" }),
		"altered payload": func() string {
			p := strings.Split(valid, ".")
			_, c := extToken(now)
			c["sub"] = "officer-1"
			return p[0] + "." + b64(mustJSON(c)) + "." + p[2]
		}(),
		"truncated signature":    valid[:len(valid)-8],
		"two tokens":             valid + " " + valid,
		"JWS JSON serialization": string(mustJSON(map[string]any{"payload": "x", "signatures": []any{}})),
	}
	for _, tok := range forged {
		s.secret(tok)
	}
	conn := s.conn(t, nil)
	holdings := piledgerv1.NewHoldingServiceClient(conn)
	call := func(t *testing.T, tok string) (codes.Code, int) {
		t.Helper()
		_, err := holdings.ListPurposeHoldings(ctxMD(t, "authorization", "Bearer "+tok), &piledgerv1.ListPurposeHoldingsRequest{Parent: "purposes/public-safety"})
		code, _ := s.do(t, "GET", "/v1/purposes/public-safety/holdings", nil, "Authorization", "Bearer "+tok)
		return status.Code(err), code
	}
	if g, h := call(t, valid); g != codes.OK || h != http.StatusOK {
		t.Fatalf("the valid external token: gRPC %v, HTTP %d; want OK", g, h)
	}
	local := strings.TrimPrefix(s.bearer(t, api.RoleRegulator, "officer-9"), "Bearer ")
	if g, h := call(t, local); g != codes.OK || h != http.StatusOK {
		t.Fatalf("a valid local token: gRPC %v, HTTP %d; want OK", g, h)
	}
	withinSkew := forge(func(h, c map[string]any) { c["exp"] = now.Add(-20 * time.Second).Unix() })
	if g, _ := call(t, withinSkew); g != codes.OK {
		t.Errorf("a token expired 20 s ago (within the 1 min skew): %v, want OK", g)
	}
	for name, tok := range forged {
		t.Run(name, func(t *testing.T) {
			if g, h := call(t, tok); g != codes.Unauthenticated || h != http.StatusUnauthorized {
				t.Errorf("gRPC %v, HTTP %d; want UNAUTHENTICATED, 401", g, h)
			}
		})
	}
}

// mustTokenKey returns a fresh token signing keyset, as OpenTokenKey makes
// it under a KEK of its own.
func mustTokenKey(t *testing.T) *keyset.Handle {
	t.Helper()
	dir := t.TempDir()
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := crypto.OpenTokenKey(t.Context(), kek, filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestSpoofedMetadata: identity comes only from verified credentials, never
// from headers or metadata a client sets.
func TestSpoofedMetadata(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	conn := s.conn(t, nil)
	ledgerc := piledgerv1.NewLedgerServiceClient(conn)
	before := s.logSize()
	police := collectFace(s.ref(301)) // processor city-police
	appendReq := &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{police}}

	for _, test := range []struct {
		name string
		md   []string
		want codes.Code
	}{
		{"x-emitter-id alone", []string{"x-emitter-id", "city-police"}, codes.Unauthenticated},
		{"gateway cert without the secret", []string{"x-piledger-gateway-cert", "city-police"}, codes.Unauthenticated},
		{"gateway cert with a guessed secret", []string{"x-piledger-gateway-cert", "city-police", "x-piledger-gateway-secret", strings.Repeat("0", 64)}, codes.Unauthenticated},
		{"gateway metadata next to a valid key", []string{"authorization", s.key("city-police"), "x-piledger-gateway-client", "10.0.0.1"}, codes.Unauthenticated},
		{"x-forwarded-for and x-emitter-id", []string{"x-forwarded-for", "127.0.0.1", "x-emitter-id", "city-police"}, codes.Unauthenticated},
		{"another processor's key with x-emitter-id", []string{"authorization", s.key("shop-42"), "x-emitter-id", "city-police"}, codes.PermissionDenied},
		{"two authorization values", []string{"authorization", s.key("city-police"), "authorization", s.key("shop-42")}, codes.Unauthenticated},
		{"unknown scheme", []string{"authorization", "Basic Y2l0eS1wb2xpY2U6"}, codes.Unauthenticated},
		{"API key as a bearer token", []string{"authorization", "Bearer " + s.apiKeys["city-police"]}, codes.Unauthenticated},
	} {
		t.Run("grpc/"+test.name, func(t *testing.T) {
			_, err := ledgerc.AppendEvents(ctxMD(t, test.md...), appendReq)
			if status.Code(err) != test.want {
				t.Errorf("AppendEvents: %v, want %v", err, test.want)
			}
		})
	}

	body, err := protojson.Marshal(appendReq)
	if err != nil {
		t.Fatal(err)
	}
	for _, test := range []struct {
		name   string
		header []string
		want   int
	}{
		{"X-Emitter-Id", []string{"X-Emitter-Id", "city-police"}, http.StatusUnauthorized},
		{"Grpc-Metadata-X-Emitter-Id", []string{"Grpc-Metadata-X-Emitter-Id", "city-police"}, http.StatusUnauthorized},
		{"Grpc-Metadata-Authorization", []string{"Grpc-Metadata-Authorization", s.key("city-police")}, http.StatusUnauthorized},
		{"Grpc-Metadata gateway cert", []string{"Grpc-Metadata-X-Piledger-Gateway-Cert", "city-police"}, http.StatusUnauthorized},
		{"Grpc-Metadata gateway cert and secret", []string{"Grpc-Metadata-X-Piledger-Gateway-Cert", "city-police", "Grpc-Metadata-X-Piledger-Gateway-Secret", strings.Repeat("0", 64)}, http.StatusUnauthorized},
		{"X-Forwarded-For and X-Forwarded-Client-Cert", []string{"X-Forwarded-For", "127.0.0.1", "X-Forwarded-Client-Cert", "URI=spiffe://x/processor/city-police"}, http.StatusUnauthorized},
		{"another processor's key with X-Emitter-Id", []string{"Authorization", s.key("shop-42"), "X-Emitter-Id", "city-police"}, http.StatusForbidden},
		{"another processor's key with Grpc-Metadata gateway cert", []string{"Authorization", s.key("shop-42"), "Grpc-Metadata-X-Piledger-Gateway-Cert", "city-police"}, http.StatusForbidden},
		{"two Authorization headers", []string{"Authorization", s.key("city-police"), "Authorization", s.key("shop-42")}, http.StatusUnauthorized},
	} {
		t.Run("http/"+test.name, func(t *testing.T) {
			if code, b := s.do(t, "POST", "/v1/events:append", bytes.NewReader(body), test.header...); code != test.want {
				t.Errorf("POST /v1/events:append: %d %s, want %d", code, b, test.want)
			}
		})
	}
	// X-HTTP-Method-Override does not turn a POST into a GET of the log.
	if code, b := s.do(t, "POST", "/v1/log/entries", strings.NewReader(`{}`), "Authorization", s.key("city-police"), "X-HTTP-Method-Override", "GET"); code == http.StatusOK {
		t.Errorf("X-HTTP-Method-Override was honoured: %d %s", code, b)
	}
	if after := s.logSize(); after != before {
		t.Errorf("the log grew from %d to %d events", before, after)
	}
	// The real owner appends fine.
	s.appendAs(t, s.key("city-police"), police)
}

// TestAppendOnlyAsOwnProcessor: PERMISSION_DENIED names the field; nothing
// of the batch is appended.
func TestAppendOnlyAsOwnProcessor(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	events := []*piledgerv1.Event{collectFace(s.ref(311)), transferAbroad(s.ref(312))} // city-police, shop-42
	_, err := piledgerv1.NewLedgerServiceClient(s.conn(t, nil)).AppendEvents(ctxMD(t, "authorization", s.key("city-police")), &piledgerv1.AppendEventsRequest{Events: events})
	st := status.Convert(err)
	if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "events[1].processor") {
		t.Fatalf("AppendEvents: %v, want PERMISSION_DENIED naming events[1].processor", err)
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info.GetReason() != api.ReasonPermissionDenied || info.GetMetadata()["field"] != "events[1].processor" {
		t.Errorf("ErrorInfo = %v", info)
	}
	if n := s.logSize(); n != 0 {
		t.Errorf("the log holds %d events, want 0", n)
	}
	// A processor id is not a way in: "piledger" is the ledger's own.
	if _, _, err := api.AddAPIKey(t.TempDir(), api.LedgerProcessor, time.Now()); err == nil {
		t.Errorf("AddAPIKey for processor %q succeeded", api.LedgerProcessor)
	}
}

// TestEveryLookIsRecorded: a regulator's read of a subject's timeline (with
// a reason) appends an OPERATION_ACCESS event under processor "piledger"
// that the subject sees in their own timeline, with who and why; a read
// without a reason is refused; the subject's own reads leave no trace; an
// admin's export and a regulator's log replay are recorded too.
func TestEveryLookIsRecorded(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	ref := s.ref(401)
	other := s.ref(402)
	p := s.keys.Pseudonym(ref)
	r := s.appendAs(t, s.key("city-police"), collectFace(ref), collectFace(other))
	minIndex := fmt.Sprint(r[1].GetIndex())

	regulator := s.bearer(t, api.RoleRegulator, "officer-7")
	reason := "案件 2026-17: footage review" // percent-encoded on the wire
	s.secret(reason)
	wireReason := url.PathEscape(reason)

	// Without a reason: 400 naming x-piledger-reason.
	code, b := s.do(t, "GET", "/v1/subjects/"+p+"/events?minIndex="+minIndex, nil, "Authorization", regulator)
	if code != http.StatusBadRequest {
		t.Fatalf("regulator read without a reason: %d %s, want 400", code, b)
	}
	checkInvalid(t, decodeStatus(t, b), codes.InvalidArgument, api.ReasonInvalidRequest, "x-piledger-reason", "")
	_, err := piledgerv1.NewSubjectServiceClient(s.conn(t, nil)).GetDataMap(ctxMD(t, "authorization", regulator), &piledgerv1.GetDataMapRequest{Name: "subjects/" + p + "/datamap"})
	checkInvalid(t, status.Convert(err).Proto(), codes.InvalidArgument, api.ReasonInvalidRequest, "x-piledger-reason", "")

	// With a reason: the read succeeds and is recorded.
	code, b = s.do(t, "GET", "/v1/subjects/"+p+"/events?minIndex="+minIndex, nil, "Authorization", regulator, "X-Piledger-Reason", wireReason)
	if code != http.StatusOK {
		t.Fatalf("regulator read: %d %s", code, b)
	}
	size := s.logSize()
	if size != 3 {
		t.Fatalf("the log holds %d events after the regulator's read, want 3 (two appends, one access)", size)
	}

	// The subject sees it in their timeline, through subjects/me.
	subject := s.bearer(t, api.RoleSubject, ref)
	timeline := func() []*piledgerv1.SubjectEvent {
		t.Helper()
		code, b := s.do(t, "GET", fmt.Sprintf("/v1/subjects/me/events?minIndex=%d", size-1), nil, "Authorization", subject)
		if code != http.StatusOK {
			t.Fatalf("subject's own timeline: %d %s", code, b)
		}
		var resp piledgerv1.ListSubjectEventsResponse
		if err := protojson.Unmarshal(b, &resp); err != nil {
			t.Fatal(err)
		}
		return resp.GetSubjectEvents()
	}
	events := timeline()
	var access *piledgerv1.Event
	for _, e := range events {
		if e.GetEvent().GetOperation() == piledgerv1.Operation_OPERATION_ACCESS {
			access = e.GetEvent()
		}
	}
	if access == nil {
		t.Fatalf("the subject's timeline has no access event: %v", events)
	}
	if access.GetProcessor() != api.LedgerProcessor || access.GetAccess().GetActor() != "regulator:officer-7" ||
		access.GetAccess().GetReason() != reason || access.GetAccess().GetKind() != piledgerv1.AccessKind_ACCESS_KIND_VIEW ||
		!proto.Equal(&piledgerv1.Event{DataCategories: access.GetDataCategories()}, &piledgerv1.Event{DataCategories: []string{"face"}}) ||
		access.GetAttributes()["method"] != piledgerv1.SubjectService_ListSubjectEvents_FullMethodName {
		t.Errorf("access event = %v", access)
	}
	// The subject's own reads are not recorded.
	if n := s.logSize(); n != size {
		t.Errorf("the subject's own read appended %d events", n-size)
	}
	// Another subject's credentials see nothing of it.
	if code, _ := s.do(t, "GET", "/v1/subjects/"+p+"/events", nil, "Authorization", s.bearer(t, api.RoleSubject, other)); code != http.StatusForbidden {
		t.Errorf("another subject reading the timeline: %d, want 403", code)
	}

	// An admin's export is recorded as a copy.
	admin := s.bearer(t, api.RoleAdmin, "ops-1")
	if code, b := s.do(t, "GET", "/v1/subjects/"+p+":export", nil, "Authorization", admin, "X-Piledger-Reason", "erasure-request-88"); code != http.StatusOK {
		t.Fatalf("admin export: %d %s", code, b)
	}
	// A regulator's replay of the log records every subject in it, once.
	before := s.logSize()
	stream, err := piledgerv1.NewLedgerServiceClient(s.conn(t, nil)).ListLogEntries(ctxMD(t, "authorization", regulator, "x-piledger-reason", "audit-2026-q4"), &piledgerv1.ListLogEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("ListLogEntries: %v", err)
		}
		n++
	}
	if n != int(before) {
		t.Errorf("replay read %d entries, want %d", n, before)
	}
	recorded := s.entriesAs(t, admin, "check", before)
	subjects := map[string]piledgerv1.AccessKind{}
	for _, e := range recorded {
		if e.GetHeader().GetOperation() != piledgerv1.Operation_OPERATION_ACCESS || e.GetEvent().GetAccess().GetReason() != "audit-2026-q4" {
			continue
		}
		subjects[e.GetHeader().GetPseudonym()] = e.GetEvent().GetAccess().GetKind()
		if e.GetHeader().GetProcessor() != api.LedgerProcessor {
			t.Errorf("access event of processor %q", e.GetHeader().GetProcessor())
		}
	}
	if len(subjects) != 2 || subjects[p] != piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE || subjects[s.keys.Pseudonym(other)] != piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE {
		t.Errorf("the replay recorded accesses to %v, want both subjects once, as retrievals", subjects)
	}
	// The export's event is in the subject's timeline, as a copy.
	var copied bool
	for _, e := range timeline() {
		if a := e.GetEvent().GetAccess(); a.GetKind() == piledgerv1.AccessKind_ACCESS_KIND_COPY && a.GetActor() == "admin:ops-1" && a.GetReason() == "erasure-request-88" {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the admin's export is not in the subject's timeline")
	}

	// An emitter reading its holdings due is recorded with a fixed reason.
	before = s.logSize()
	if code, b := s.do(t, "GET", "/v1/retention/due?before=2200-01-01T00:00:00Z", nil, "Authorization", s.key("city-police")); code != http.StatusOK {
		t.Fatalf("emitter's due holdings: %d %s", code, b)
	}
	if s.logSize() <= before {
		t.Errorf("the emitter's read of its holdings was not recorded")
	}
}

// entriesAs reads the log from start as the holder of auth (a regulator or
// admin, giving reason).
func (s *authStack) entriesAs(t *testing.T, auth, reason string, start uint64) []*piledgerv1.LogEntry {
	t.Helper()
	stream, err := piledgerv1.NewLedgerServiceClient(s.conn(t, nil)).ListLogEntries(ctxMD(t, "authorization", auth, "x-piledger-reason", reason), &piledgerv1.ListLogEntriesRequest{Start: start})
	if err != nil {
		t.Fatal(err)
	}
	return recvEntries(t, stream)
}

// TestRateLimit: a caller over its rate gets RESOURCE_EXHAUSTED / 429 with a
// RetryInfo, and nothing is appended; other callers are not affected.
func TestRateLimit(t *testing.T) {
	s := startAuthStack(t, api.Config{RateLimit: 0.5, RateBurst: 2}, nil)
	c := piledgerv1.NewLedgerServiceClient(s.conn(t, nil))
	ctx := ctxMD(t, "authorization", s.key("city-police"))
	for i := range 2 {
		if _, err := c.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{collectFace(s.ref(500 + i))}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	size := s.logSize()
	_, err := c.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{collectFace(s.ref(510))}})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("third append: %v, want RESOURCE_EXHAUSTED", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 || retry.GetRetryDelay().AsDuration() > 2*time.Second {
		t.Errorf("RetryInfo = %v, want a delay of up to 2 s", retry)
	}
	body, _ := protojson.Marshal(&piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{collectFace(s.ref(511))}})
	code, b := s.do(t, "POST", "/v1/events:append", bytes.NewReader(body), "Authorization", s.key("city-police"))
	if code != http.StatusTooManyRequests {
		t.Errorf("REST over the limit: %d %s, want 429", code, b)
	} else if st := decodeStatus(t, b); errorInfo(t, st).GetReason() != api.ReasonRateLimited {
		t.Errorf("429 body %s", b)
	}
	if n := s.logSize(); n != size {
		t.Errorf("rate-limited calls appended %d events", n-size)
	}
	// Another processor has its own bucket.
	if _, err := c.AppendEvents(ctxMD(t, "authorization", s.key("shop-42")), &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{transferAbroad(s.ref(512))}}); err != nil {
		t.Errorf("another processor: %v", err)
	}
	// Unauthenticated callers share a bucket per address.
	var limited bool
	for range 4 {
		_, err := c.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{})
		if status.Code(err) == codes.ResourceExhausted {
			limited = true
		}
	}
	if !limited {
		t.Errorf("unauthenticated calls were never rate limited")
	}
}

// TestSizeLimitsWithAuth: an oversized body is 413 before decoding, with or
// without credentials, and an oversized gRPC message is RESOURCE_EXHAUSTED.
func TestSizeLimitsWithAuth(t *testing.T) {
	s := startAuthStack(t, api.Config{MaxRequestBytes: 16 << 10, MaxRecvMsgSize: 16 << 10}, nil)
	big := `{"events": [` + strings.Repeat(`{"eventId": "x"},`, 2000) + `{}]}`
	for _, hdr := range [][]string{nil, {"Authorization", s.key("city-police")}} {
		if code, b := s.do(t, "POST", "/v1/events:append", strings.NewReader(big), hdr...); code != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized body (credentials %v): %d %s, want 413", hdr != nil, code, b)
		}
	}
	e := collectFace(s.ref(520))
	e.Attributes["note"] = strings.Repeat("x", 17<<10)
	_, err := piledgerv1.NewLedgerServiceClient(s.conn(t, nil)).AppendEvents(ctxMD(t, "authorization", s.key("city-police")), &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{e}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized gRPC message: %v, want RESOURCE_EXHAUSTED", err)
	}
	if n := s.logSize(); n != 0 {
		t.Errorf("the log holds %d events", n)
	}
}

// TestMutualTLS: a verified client certificate identifies an emitter over
// gRPC and REST; an unverified one identifies nobody; a key of another
// processor next to it is a conflict.
func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	s := startAuthStack(t, api.Config{}, pki)
	police := pki.issue(t, "ignored-cn", []string{"spiffe://test.example/processor/city-police"}, x509.ExtKeyUsageClientAuth)
	shopCN := pki.issue(t, "shop-42", nil, x509.ExtKeyUsageClientAuth)
	rogue := newTestPKI(t).issue(t, "city-police", nil, x509.ExtKeyUsageClientAuth)

	ev := collectFace(s.ref(601))
	s.secret(ev.GetSubjectRef())
	req := &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{ev}}
	if _, err := piledgerv1.NewLedgerServiceClient(s.conn(t, &police)).AppendEvents(t.Context(), req); err != nil {
		t.Fatalf("append with the city-police certificate: %v", err)
	}
	if _, err := piledgerv1.NewLedgerServiceClient(s.conn(t, &shopCN)).AppendEvents(t.Context(), req); status.Code(err) != codes.PermissionDenied {
		t.Errorf("city-police event with the shop-42 certificate: %v, want PERMISSION_DENIED", err)
	}
	if _, err := piledgerv1.NewLedgerServiceClient(s.conn(t, &police)).AppendEvents(ctxMD(t, "authorization", s.key("shop-42")), req); status.Code(err) != codes.Unauthenticated {
		t.Errorf("certificate and another processor's key: %v, want UNAUTHENTICATED", err)
	}
	if _, err := piledgerv1.NewLedgerServiceClient(s.conn(t, &rogue)).AppendEvents(t.Context(), req); err == nil {
		t.Errorf("a certificate from another CA was accepted")
	}
	if _, err := piledgerv1.NewLedgerServiceClient(s.conn(t, nil)).AppendEvents(t.Context(), req); status.Code(err) != codes.Unauthenticated {
		t.Errorf("TLS without a client certificate or key: %v, want UNAUTHENTICATED", err)
	}
	// API keys work over TLS without a client certificate.
	if _, err := piledgerv1.NewLedgerServiceClient(s.conn(t, nil)).AppendEvents(ctxMD(t, "authorization", s.key("city-police")), req); err != nil {
		t.Errorf("API key over TLS: %v", err)
	}

	// REST: the HTTPS listener verifies the certificate and the gateway
	// vouches for it.
	body, _ := protojson.Marshal(&piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{collectFace(s.ref(602))}})
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.clientConfig(&police)}}
	resp, err := withCert.Post(s.baseURL+"/v1/events:append", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("REST with the city-police certificate: %d %s", resp.StatusCode, b)
	}
	if code, b := s.do(t, "POST", "/v1/events:append", bytes.NewReader(body)); code != http.StatusUnauthorized {
		t.Errorf("REST over TLS without credentials: %d %s, want 401", code, b)
	}
}

// TestMetricsEndpoint: /metrics is on the operator listener, in Prometheus
// text with piledger_* names, and not on the API listener.
func TestMetricsEndpoint(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	s.appendAs(t, s.key("city-police"), collectFace(s.ref(701)))
	s.appendAs(t, s.key("shop-42"), transferAbroad(s.ref(702)))
	_, _ = piledgerv1.NewLedgerServiceClient(s.conn(t, nil)).AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{})
	resp, err := http.Get(s.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{
		`piledger_append_events_total{operation="OPERATION_COLLECT",result="recorded"} 1`,
		`piledger_append_events_total{operation="OPERATION_TRANSFER_ABROAD",result="recorded"} 1`,
		`piledger_grpc_requests_total{code="OK",method="/piledger.v1.LedgerService/AppendEvents"} 2`,
		`piledger_grpc_requests_total{code="Unauthenticated",method="/piledger.v1.LedgerService/AppendEvents"} 1`,
		`piledger_auth_failures_total{reason="missing_credentials"} 1`,
		`piledger_append_duration_seconds_bucket`,
		`piledger_build_info{`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, _ := s.do(t, "GET", "/metrics", nil); code == http.StatusOK {
		t.Errorf("/metrics is served on the API listener")
	}
}

// TestSubjectMe: a data subject reads their own records through
// subjects/me or their own pseudonym, over both transports, and nothing
// else; "me" means nothing to other roles.
func TestSubjectMe(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	ref := s.ref(801)
	r := s.appendAs(t, s.key("city-police"), collectFace(ref))
	subject := s.bearer(t, api.RoleSubject, ref)
	p := s.keys.Pseudonym(ref)
	for _, path := range []string{"/v1/subjects/me/datamap", "/v1/subjects/" + p + "/datamap", "/v1/subjects/me:export", "/v1/subjects/me/events"} {
		code, b := s.do(t, "GET", fmt.Sprintf("%s?minIndex=%d", path, r[0].GetIndex()), nil, "Authorization", subject)
		if code != http.StatusOK || !strings.Contains(string(b), p) {
			t.Errorf("GET %s as the subject: %d %s", path, code, b)
		}
	}
	dm, err := piledgerv1.NewSubjectServiceClient(s.conn(t, nil)).GetDataMap(ctxMD(t, "authorization", subject), &piledgerv1.GetDataMapRequest{Name: "subjects/me/datamap"})
	if err != nil || dm.GetPseudonym() != p {
		t.Errorf("GetDataMap(subjects/me) = %v, %v", dm, err)
	}
	code, b := s.do(t, "GET", "/v1/subjects/me/datamap", nil, "Authorization", s.bearer(t, api.RoleRegulator, "officer-7"), "X-Piledger-Reason", "x")
	if code != http.StatusBadRequest {
		t.Errorf("a regulator asking for subjects/me: %d %s, want 400", code, b)
	}
	// Emitters learn a pseudonym, not whether the ledger holds the person.
	res, err := piledgerv1.NewSubjectServiceClient(s.conn(t, nil)).ResolveSubject(ctxMD(t, "authorization", s.key("shop-42")), &piledgerv1.ResolveSubjectRequest{SubjectRef: ref})
	if err != nil || res.GetPseudonym() != p || res.GetRecorded() {
		t.Errorf("ResolveSubject as an emitter = %v, %v; want the pseudonym and recorded false", res, err)
	}
	res, err = piledgerv1.NewSubjectServiceClient(s.conn(t, nil)).ResolveSubject(ctxMD(t, "authorization", s.bearer(t, api.RoleAdmin, "ops-1")), &piledgerv1.ResolveSubjectRequest{SubjectRef: ref})
	if err != nil || !res.GetRecorded() {
		t.Errorf("ResolveSubject as an admin = %v, %v; want recorded", res, err)
	}
}

// TestAPIKeyRevocation: a revoked key stops working within the reload
// interval, without a restart.
func TestAPIKeyRevocation(t *testing.T) {
	s := startAuthStack(t, api.Config{}, nil)
	c := piledgerv1.NewLedgerServiceClient(s.conn(t, nil))
	ctx := ctxMD(t, "authorization", s.key("shop-42"))
	if _, err := c.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{transferAbroad(s.ref(901))}}); err != nil {
		t.Fatal(err)
	}
	n, err := api.RevokeAPIKeys(s.authDir, "", "shop-42", time.Now())
	if err != nil || n != 1 {
		t.Fatalf("RevokeAPIKeys = %d, %v", n, err)
	}
	deadline := time.Now().Add(api.APIKeyReloadInterval + 5*time.Second)
	for {
		_, err := c.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: []*piledgerv1.Event{transferAbroad(s.ref(902))}})
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked key still works: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	keys, err := api.ListAPIKeys(s.authDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(fmt.Sprint(k), s.apiKeys[k.Processor]) {
			t.Errorf("the key store holds a key in clear")
		}
		if (k.Processor == "shop-42") == k.Revoked.IsZero() {
			t.Errorf("key %v: wrong revocation state", k)
		}
	}
}
