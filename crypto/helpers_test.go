package crypto

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// runServer starts an embedded JetStream server storing in storeDir,
// listening on port (-1: any). It is shut down when the test ends, or
// earlier by the caller (to restart it).
func runServer(t testing.TB, storeDir string, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		JetStream: true,
		StoreDir:  storeDir,
		Port:      port,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connect returns a JetStream client of s, closed when the test ends. It
// reconnects quickly and forever.
func connect(t testing.TB, s *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func openKEK(t testing.TB, dir string) *LocalKEK {
	t.Helper()
	kek, err := OpenLocalKEK(dir)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

// openKeyring opens a keyring with its own KEK opened from kekDir; it is
// closed when the test ends (closing it earlier is fine).
func openKeyring(t testing.TB, js jetstream.JetStream, kekDir, indexDir string) *Keyring {
	t.Helper()
	kr, err := OpenKeyring(context.Background(), js, openKEK(t, kekDir), KeyringConfig{IndexDir: indexDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	return kr
}

// env is a test's NATS server and client, and the KEK directory its
// keyrings share.
type env struct {
	storeDir string
	kekDir   string
	srv      *server.Server
	js       jetstream.JetStream
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{storeDir: filepath.Join(dir, "nats"), kekDir: filepath.Join(dir, "kek")}
	e.srv = runServer(t, e.storeDir, -1)
	e.js = connect(t, e.srv)
	return e
}

// restart shuts the server down and starts a new one on the same store and
// port, with a new client.
func (e *env) restart(t testing.TB) {
	t.Helper()
	port := e.srv.Addr().(*net.TCPAddr).Port
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.srv = runServer(t, e.storeDir, port)
	e.js = connect(t, e.srv)
}

func (e *env) keyring(t testing.TB, indexDir string) *Keyring {
	t.Helper()
	return openKeyring(t, e.js, e.kekDir, indexDir)
}

// keyMessages returns the number of messages in the key stream.
func (e *env) keyMessages(t testing.TB) uint64 {
	t.Helper()
	s, err := e.js.Stream(context.Background(), DefaultKeyStreamName)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// roundTrip seals with one AEAD and opens with another; it fails the test
// unless the two are the same key.
func roundTrip(t testing.TB, seal, open tink.AEAD) {
	t.Helper()
	ct, err := seal.Encrypt([]byte("payload"), []byte("header"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := open.Decrypt(ct, []byte("header"))
	if err != nil {
		t.Fatalf("Decrypt under the other handle of the same key: %v", err)
	}
	if string(pt) != "payload" {
		t.Fatalf("Decrypt = %q, want %q", pt, "payload")
	}
}
