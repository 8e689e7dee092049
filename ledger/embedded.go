package ledger

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

const (
	// EmbeddedMaxPayload is the embedded server's max_payload: large enough
	// for blocks of DefaultMaxBlockBytes.
	EmbeddedMaxPayload = 8 << 20

	// embeddedStartTimeout bounds how long StartEmbedded waits for the
	// server to accept connections.
	embeddedStartTimeout = 30 * time.Second
)

// EmbeddedConfig configures the nats-server that runs inside piledger when no
// external NATS URL is given (the single-node default).
type EmbeddedConfig struct {
	// StoreDir is the JetStream file store. Required.
	StoreDir string
	// Listen is an optional "host:port" for TCP clients (for example
	// "127.0.0.1:4222"); empty means in-process connections only.
	Listen string
}

// EmbeddedServer is a running in-process nats-server with JetStream. Every
// write is fsynced before it is acknowledged (sync_interval: always), so an
// acknowledged append survives power loss, not just a process crash.
type EmbeddedServer struct {
	srv *server.Server
}

// StartEmbedded starts a nats-server with JetStream and returns once it
// accepts connections. The caller must call Shutdown.
func StartEmbedded(cfg EmbeddedConfig) (*EmbeddedServer, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("ledger: embedded nats: StoreDir is required")
	}
	opts := &server.Options{
		ServerName: "piledger",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: true, // fsync before every acknowledgement
		MaxPayload: EmbeddedMaxPayload,
		NoSigs:     true,
		NoLog:      true,
		DontListen: cfg.Listen == "",
	}
	if cfg.Listen != "" {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("ledger: embedded nats: listen address: %w", err)
		}
		opts.Host, opts.Port = host, port
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("ledger: embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(embeddedStartTimeout) {
		srv.Shutdown()
		return nil, errors.New("ledger: embedded nats: not ready (is the store directory locked by another process?)")
	}
	return &EmbeddedServer{srv: srv}, nil
}

// Connect opens an in-process client connection to the server.
func (e *EmbeddedServer) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(e.srv), nats.Name("piledger")}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("ledger: embedded nats: connect: %w", err)
	}
	return nc, nil
}

// ClientURL returns the server's TCP URL, or "" when it does not listen.
func (e *EmbeddedServer) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Shutdown stops the server and waits until it has stopped. Everything
// acknowledged is already on disk.
func (e *EmbeddedServer) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}
