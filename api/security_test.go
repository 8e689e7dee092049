package api

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
)

func TestSecurityConfigValidate(t *testing.T) {
	auth := &AuthConfig{}
	cert := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{{1}}}}}
	for _, test := range []struct {
		name  string
		cfg   Config
		valid bool
	}{
		{"auth on loopback", Config{Auth: auth, GRPCAddr: "127.0.0.1:0", HTTPAddr: "[::1]:0"}, true},
		{"auth, defaults are loopback", Config{Auth: auth}, true},
		{"auth in plaintext on the network", Config{Auth: auth, GRPCAddr: "0.0.0.0:7070"}, false},
		{"auth in plaintext on the network, allowed", Config{Auth: auth, GRPCAddr: "0.0.0.0:7070", InsecurePlaintext: true}, true},
		{"auth with TLS on the network", Config{Auth: auth, GRPCAddr: ":7070", HTTPAddr: ":8080", TLS: cert}, true},
		{"TLS without a certificate", Config{TLS: &tls.Config{}}, false},
		{"bad metrics address", Config{MetricsAddr: "9090"}, false},
		{"metrics address", Config{MetricsAddr: "127.0.0.1:0"}, true},
		{"negative burst", Config{RateBurst: -1}, false},
		{"no rate limit", Config{RateLimit: -1}, true},
	} {
		t.Run(test.name, func(t *testing.T) {
			if err := test.cfg.Validate(); (err == nil) != test.valid {
				t.Errorf("Validate() = %v, want valid %t", err, test.valid)
			}
		})
	}
}

func TestCertificateProcessor(t *testing.T) {
	u := func(s string) *url.URL { p, _ := url.Parse(s); return p }
	for _, test := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"SPIFFE ID", &x509.Certificate{URIs: []*url.URL{u("spiffe://example.org/processor/city-police")}, Subject: pkix.Name{CommonName: "x"}}, "city-police"},
		{"common name", &x509.Certificate{Subject: pkix.Name{CommonName: "shop-42"}}, "shop-42"},
		{"the ledger's own id", &x509.Certificate{Subject: pkix.Name{CommonName: "piledger"}}, ""},
		{"not an id", &x509.Certificate{Subject: pkix.Name{CommonName: "Shop 42"}}, ""},
		{"other URI", &x509.Certificate{URIs: []*url.URL{u("spiffe://example.org/workload/x")}}, ""},
		{"nested path", &x509.Certificate{URIs: []*url.URL{u("spiffe://example.org/processor/a/b")}}, ""},
	} {
		if got := CertificateProcessor(test.cert); got != test.want {
			t.Errorf("%s: %q, want %q", test.name, got, test.want)
		}
	}
}

func TestReadReason(t *testing.T) {
	for _, test := range []struct {
		in   []string
		want string
		ok   bool
	}{
		{nil, "", true},
		{[]string{"case 2026-17"}, "case 2026-17", true},
		{[]string{"%E6%A1%88%E4%BB%B6%2017"}, "案件 17", true},
		{[]string{"100%"}, "", false},
		{[]string{"%zz"}, "", false},
		{[]string{"a%0Ab"}, "", false},
		{[]string{"%FF"}, "", false},
		{[]string{"a", "b"}, "", false},
	} {
		md := metadata.MD{}
		for _, v := range test.in {
			md.Append(mdReason, v)
		}
		got, err := readReason(md)
		if (err == nil) != test.ok || got != test.want {
			t.Errorf("readReason(%q) = %q, %v; want %q, ok %t", test.in, got, err, test.want, test.ok)
		}
	}
}

func TestLimiters(t *testing.T) {
	l := newLimiters(1, 2)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("call %d refused within the burst", i)
		}
	}
	ok, d := l.allow("a", now)
	if ok || d <= 0 || d > time.Second {
		t.Errorf("third call: %t, %v; want refused with a delay up to 1 s", ok, d)
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Errorf("another caller was limited")
	}
	if ok, _ := l.allow("a", now.Add(time.Second)); !ok {
		t.Errorf("a refill was not honoured")
	}
	// Idle buckets are swept.
	l.allow("c", now.Add(limiterIdle+2*time.Second))
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Errorf("%d buckets after the sweep, want 1", n)
	}
	if ok, _ := newLimiters(-1, 0).allow("x", now); !ok {
		t.Errorf("no limit refused a call")
	}
}
