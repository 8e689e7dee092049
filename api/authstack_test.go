package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/crypto"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The external issuer of the forged-token tests: a JWK set the server is
// configured with (as with --jwks-file), whose private key the test holds as
// a plain ECDSA key, so it can sign tokens with any header or claim.
const (
	extIssuer = "https://idp.example.test"
	extKID    = "idp-key-1"
)

// authStack is the whole system with authentication on: embedded NATS, the
// keyring, the ledger, the read models, the transparency log and an
// api.Server with API keys (processors city-police and shop-42), the
// embedded token issuer, an external issuer and, optionally, TLS. Its logs
// and, at the end of the test, its metrics are scanned for every subject
// reference and credential the test used: none may appear.
type authStack struct {
	*stack
	authDir    string
	apiKeys    map[string]string // processor → API key
	issuer     *api.TokenIssuer
	extKey     *ecdsa.PrivateKey
	tls        *testPKI // nil: plaintext
	httpClient *http.Client

	mu      sync.Mutex
	secrets []string // subject references, keys, tokens, reasons: never in logs, metrics or error bodies
	conns   []*grpc.ClientConn
}

// startAuthStack starts the stack; cfg's zero fields are filled for tests.
// pki, when not nil, serves TLS with pki's server certificate and client CA.
func startAuthStack(t testing.TB, cfg api.Config, pki *testPKI) *authStack {
	t.Helper()
	dir := t.TempDir()
	s := &authStack{authDir: filepath.Join(dir, "auth"), apiKeys: map[string]string{}, tls: pki, httpClient: &http.Client{}}
	if pki != nil {
		s.httpClient.Transport = &http.Transport{TLSClientConfig: pki.clientConfig(nil)}
	}
	cfg.MetricsAddr = "127.0.0.1:0"
	s.stack = newStack(t, dir, stackOptions{
		cfg: cfg, readModels: true, transparency: true, erasure: true, tls: pki,
		auth: func(kek crypto.KEK, keys *crypto.Keyring) *api.AuthConfig { return s.credentials(t, kek, keys) },
		beforeStop: func() {
			s.checkNoSecretsInMetrics(t)
			s.mu.Lock()
			for _, c := range s.conns {
				c.Close()
			}
			s.mu.Unlock()
		},
		afterStop: func() { s.checkNoSecretsInLogs(t) },
	})
	return s
}

// credentials makes, as `piledger processors add` and `piledger token` do,
// API keys for processors city-police and shop-42 and the embedded token
// issuer under s.authDir, and an external issuer whose key s holds; it
// returns the server's AuthConfig accepting all three.
func (s *authStack) credentials(t testing.TB, kek crypto.KEK, keys *crypto.Keyring) *api.AuthConfig {
	t.Helper()
	ctx := context.Background()
	for _, p := range []string{"city-police", "shop-42"} {
		key, _, err := api.AddAPIKey(s.authDir, p, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		s.apiKeys[p] = key
		s.secret(key)
	}
	apiKeys, err := api.OpenAPIKeyStore(s.authDir)
	if err != nil {
		t.Fatal(err)
	}
	tokenKey, err := crypto.OpenTokenKey(ctx, kek, s.authDir)
	if err != nil {
		t.Fatal(err)
	}
	if s.issuer, err = api.NewTokenIssuer(tokenKey, api.LocalIssuer, api.DefaultAudience); err != nil {
		t.Fatal(err)
	}
	local, err := api.NewTokenVerifier(ctx, api.TokenVerifierConfig{Issuer: api.LocalIssuer, Keys: s.issuer.PublicKeyset()})
	if err != nil {
		t.Fatal(err)
	}
	if s.extKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	external, err := api.NewTokenVerifier(ctx, api.TokenVerifierConfig{Issuer: extIssuer, JWKS: jwks(&s.extKey.PublicKey, extKID)})
	if err != nil {
		t.Fatal(err)
	}
	return &api.AuthConfig{APIKeys: apiKeys, Tokens: []*api.TokenVerifier{local, external}, Pseudonymize: keys.Pseudonym}
}

// secret registers strings that must never appear in logs, metrics or
// error bodies.
func (s *authStack) secret(v ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets = append(s.secrets, v...)
}

// ref returns subject reference i and registers it as a secret.
func (s *authStack) ref(i int) string {
	r := subjectRef(i)
	s.secret(r)
	return r
}

// checkNoSecrets fails when text holds a registered secret, in clear or
// encoded as a test might find it.
func (s *authStack) checkNoSecrets(t testing.TB, what, text string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.secrets {
		if v == "" {
			continue
		}
		for _, form := range []string{v, url.QueryEscape(v), url.PathEscape(v), base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v)), fmt.Sprintf("%x", sha256.Sum256([]byte(v)))} {
			if strings.Contains(text, form) {
				t.Errorf("%s holds a subject reference or credential (%.12s...)", what, v)
				break
			}
		}
	}
}

func (s *authStack) checkNoSecretsInLogs(t testing.TB) {
	t.Helper()
	s.checkNoSecrets(t, "the server log", s.logs.String())
}

func (s *authStack) checkNoSecretsInMetrics(t testing.TB) {
	t.Helper()
	resp, err := http.Get(s.metricsURL)
	if err != nil {
		t.Errorf("GET /metrics: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics: %s", resp.Status)
	}
	s.checkNoSecrets(t, "/metrics", string(b))
}

// key returns the authorization value of processor p's API key.
func (s *authStack) key(p string) string {
	k, ok := s.apiKeys[p]
	if !ok {
		panic("no API key for " + p)
	}
	return "ApiKey " + k
}

// bearer returns the authorization value of a token from the embedded
// issuer, valid for an hour.
func (s *authStack) bearer(t testing.TB, role api.Role, sub string) string {
	t.Helper()
	tok, err := s.issuer.Issue(role, sub, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.secret(tok)
	return "Bearer " + tok
}

// conn returns a gRPC connection to the server, with a client certificate
// when cert is not nil (TLS stacks only).
func (s *authStack) conn(t testing.TB, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if s.tls != nil {
		creds = credentials.NewTLS(s.tls.clientConfig(cert))
	}
	c, err := grpc.NewClient(s.srv.GRPCAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	return c
}

// ctx returns t's context carrying metadata key/value pairs (for example
// "authorization", s.key("city-police")).
func ctxMD(t testing.TB, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(t.Context(), kv...)
}

// do sends an HTTP request to the gateway with the given headers and
// returns the status code and body; every error body is checked for
// secrets.
func (s *authStack) do(t testing.TB, method, path string, body io.Reader, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.baseURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := s.httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		s.checkNoSecrets(t, "an error body", string(b))
	}
	return resp.StatusCode, b
}

// appendAs appends events over gRPC with the credential auth and returns
// the receipts.
func (s *authStack) appendAs(t testing.TB, auth string, events ...*piledgerv1.Event) []*piledgerv1.Receipt {
	t.Helper()
	for _, e := range events {
		s.secret(e.GetSubjectRef())
	}
	resp, err := piledgerv1.NewLedgerServiceClient(s.conn(t, nil)).AppendEvents(ctxMD(t, "authorization", auth), &piledgerv1.AppendEventsRequest{Events: events})
	if err != nil {
		t.Fatalf("AppendEvents: %v", err)
	}
	return resp.GetReceipts()
}

// logSize returns the number of events in the log.
func (s *authStack) logSize() uint64 { return s.led.Size() }

// jwks returns a JWK set holding pub as an ES256 signing key named kid.
func jwks(pub *ecdsa.PublicKey, kid string) []byte {
	b, err := json.Marshal(map[string]any{"keys": []map[string]any{{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
		"x": base64.RawURLEncoding.EncodeToString(pad32(pub.X.Bytes())),
		"y": base64.RawURLEncoding.EncodeToString(pad32(pub.Y.Bytes())),
	}}})
	if err != nil {
		panic(err)
	}
	return b
}

func pad32(b []byte) []byte {
	return append(make([]byte, 32-len(b)), b...)
}

// testPKI is a CA with a server certificate for 127.0.0.1 and client
// certificates for emitters.
type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "piledger test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{ca: ca, caKey: caKey, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = p.issue(t, "piledger", nil, x509.ExtKeyUsageServerAuth)
	return p
}

// issue returns a certificate signed by the CA with common name cn and URI
// SANs uris.
func (p *testPKI) issue(t testing.TB, cn string, uris []string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *testPKI) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool, MinVersion: tls.VersionTLS12}
}

func (p *testPKI) clientConfig(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}
