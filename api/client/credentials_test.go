package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/api/client"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The server does not authenticate yet (a later issue), so these tests put
// the real ledger behind a gRPC server that records what the client
// presents: its API key metadata and its TLS client certificate.

// ledgerOverGRPC serves the real ledger's appends.
type ledgerOverGRPC struct {
	piledgerv1.UnimplementedLedgerServiceServer
	led *ledger.Ledger
}

func (s ledgerOverGRPC) AppendEvents(ctx context.Context, req *piledgerv1.AppendEventsRequest) (*piledgerv1.AppendEventsResponse, error) {
	rs, err := s.led.Append(ctx, req.GetEvents())
	if err != nil {
		return nil, status.Error(13, "append failed")
	}
	return &piledgerv1.AppendEventsResponse{Receipts: rs}, nil
}

// seen records what callers presented.
type seen struct {
	mu         sync.Mutex
	authz      []string
	clientCert string // common name of the verified client certificate
}

// serveLedger serves the shared ledger on a loopback port with the given
// server options, recording what callers present.
func serveLedger(t *testing.T, opts ...grpc.ServerOption) (string, *seen) {
	t.Helper()
	rec := &seen{}
	opts = append(opts, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		rec.mu.Lock()
		rec.authz = md.Get("authorization")
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
				rec.clientCert = ti.State.VerifiedChains[0][0].Subject.CommonName
			}
		}
		rec.mu.Unlock()
		return handler(ctx, req)
	}))
	srv := grpc.NewServer(opts...)
	piledgerv1.RegisterLedgerServiceServer(srv, ledgerOverGRPC{led: shared.led})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return l.Addr().String(), rec
}

func TestAPIKeyOnLoopback(t *testing.T) {
	addr, rec := serveLedger(t)
	c := newClient(t, addr, client.WithAPIKey("pk_test_0042"))
	if _, err := c.Append(t.Context(), collect(ref(1))); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.authz) != 1 || rec.authz[0] != "ApiKey pk_test_0042" {
		t.Errorf("authorization metadata %q, want [\"ApiKey pk_test_0042\"]", rec.authz)
	}
}

// TestMutualTLS checks WithTLSFiles: the client verifies the server against
// the given CA and presents its certificate, and a client without one is
// refused.
func TestMutualTLS(t *testing.T) {
	pki := newPKI(t)
	serverCert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	addr, rec := serveLedger(t, grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
		MinVersion:   tls.VersionTLS12,
	})))

	c := newClient0(t, addr, client.WithTLSFiles(pki.ca, pki.clientCert, pki.clientKey), client.WithAPIKey("pk_live_7"), client.WithProcessor("city-police"))
	if _, err := c.Append(t.Context(), collect(ref(1))); err != nil {
		t.Fatalf("Append over mutual TLS: %v", err)
	}
	rec.mu.Lock()
	if rec.clientCert != "emitter-acme" || len(rec.authz) != 1 || rec.authz[0] != "ApiKey pk_live_7" {
		t.Errorf("server saw client certificate %q and authorization %q", rec.clientCert, rec.authz)
	}
	rec.mu.Unlock()

	once := client.WithRetry(client.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond, Multiplier: 1, MaxAttempts: 1})
	for name, opt := range map[string]client.Option{
		"no client certificate": client.WithTLSFiles(pki.ca, "", ""),
		"system roots only":     client.WithTLSFiles("", pki.clientCert, pki.clientKey),
	} {
		t.Run(name, func(t *testing.T) {
			c := newClient0(t, addr, opt, once, client.WithProcessor("city-police"))
			if _, err := c.Append(t.Context(), collect(ref(2))); !errors.Is(err, client.ErrUnavailable) {
				t.Errorf("Append: %v, want the connection refused (ErrUnavailable)", err)
			}
		})
	}
}

// newClient0 is newClient without WithInsecure.
func newClient0(t *testing.T, addr string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a client
// certificate for "emitter-acme", as PEM files.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	pool                                             *x509.CertPool
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "piledger test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	issue := func(name string, serial int64, tmpl *x509.Certificate) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", keyDER)
	}
	p := pki{ca: write("ca.pem", "CERTIFICATE", caDER), pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	p.serverCert, p.serverKey = issue("server", 2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "piledger"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.clientCert, p.clientKey = issue("client", 3, &x509.Certificate{
		Subject: pkix.Name{CommonName: "emitter-acme"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}
