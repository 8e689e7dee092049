package client_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/piledger/piledger/api/client"
)

func TestOptions(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := client.DefaultRetryPolicy()
	for _, test := range []struct {
		name   string
		target string
		opts   []client.Option
		ok     bool
	}{
		{"insecure on loopback", "127.0.0.1:7070", []client.Option{client.WithInsecure()}, true},
		{"default TLS", "ledger.example:7070", nil, true},
		{"every knob", "localhost:7070", []client.Option{
			client.WithInsecure(), client.WithAPIKey("k"), client.WithProcessor("acme"), client.WithUserAgent("gates/1.2"),
			client.WithBatching(1000, 4<<20, 0), client.WithMaxInFlight(1), client.WithPushback(),
			client.WithCallTimeout(time.Second), client.WithRetry(good), nil,
		}, true},
		{"API key over plaintext on loopback IPv6", "[::1]:7070", []client.Option{client.WithInsecure(), client.WithAPIKey("k")}, true},
		{"API key over plaintext on a unix socket", "unix:///run/piledger.sock", []client.Option{client.WithInsecure(), client.WithAPIKey("k")}, true},
		{"API key over TLS", "ledger.example:7070", []client.Option{client.WithAPIKey("k"), client.WithTLSConfig(&tls.Config{})}, true},
		{"token and reason over TLS", "ledger.example:7070", []client.Option{client.WithToken("eyJ.a.b"), client.WithReason("case 17"), client.WithTLSConfig(&tls.Config{})}, true},
		{"token over plaintext on loopback", "127.0.0.1:7070", []client.Option{client.WithInsecure(), client.WithToken("eyJ.a.b")}, true},
		{"reason of the longest length, any script", "127.0.0.1:7070", []client.Option{client.WithInsecure(), client.WithReason(strings.Repeat("é", client.MaxReasonBytes/2))}, true},
		{"reason without a credential", "127.0.0.1:7070", []client.Option{client.WithInsecure(), client.WithReason("case 17")}, true},

		{"empty target", " ", nil, false},
		{"API key over plaintext to the network", "10.1.2.3:7070", []client.Option{client.WithInsecure(), client.WithAPIKey("k")}, false},
		{"API key over plaintext, DNS name", "dns:///ledger.example:7070", []client.Option{client.WithAPIKey("k"), client.WithInsecure()}, false},
		{"two transports", "127.0.0.1:7070", []client.Option{client.WithInsecure(), client.WithTLSConfig(&tls.Config{})}, false},
		{"nil TLS config", "127.0.0.1:7070", []client.Option{client.WithTLSConfig(nil)}, false},
		{"missing CA file", "127.0.0.1:7070", []client.Option{client.WithTLSFiles(missing, "", "")}, false},
		{"CA file without PEM", "127.0.0.1:7070", []client.Option{client.WithTLSFiles(notPEM, "", "")}, false},
		{"certificate without key", "127.0.0.1:7070", []client.Option{client.WithTLSFiles("", notPEM, "")}, false},
		{"bad client certificate", "127.0.0.1:7070", []client.Option{client.WithTLSFiles("", notPEM, notPEM)}, false},
		{"empty API key", "127.0.0.1:7070", []client.Option{client.WithAPIKey("")}, false},
		{"API key with a newline", "127.0.0.1:7070", []client.Option{client.WithAPIKey("k\nX-Evil: 1")}, false},
		{"API key and token", "127.0.0.1:7070", []client.Option{client.WithInsecure(), client.WithAPIKey("k"), client.WithToken("eyJ.a.b")}, false},
		{"token and API key", "ledger.example:7070", []client.Option{client.WithToken("eyJ.a.b"), client.WithAPIKey("k")}, false},
		{"token over plaintext to the network", "10.1.2.3:7070", []client.Option{client.WithInsecure(), client.WithToken("eyJ.a.b")}, false},
		{"empty token", "127.0.0.1:7070", []client.Option{client.WithToken("")}, false},
		{"token with its scheme", "127.0.0.1:7070", []client.Option{client.WithToken("Bearer eyJ.a.b")}, false},
		{"token with a newline", "127.0.0.1:7070", []client.Option{client.WithToken("eyJ.a.b\nX-Evil: 1")}, false},
		{"token too long", "127.0.0.1:7070", []client.Option{client.WithToken(strings.Repeat("a", client.MaxTokenBytes+1))}, false},
		{"empty reason", "127.0.0.1:7070", []client.Option{client.WithReason("")}, false},
		{"blank reason", "127.0.0.1:7070", []client.Option{client.WithReason(" \u3000 ")}, false},
		{"reason with a control character", "127.0.0.1:7070", []client.Option{client.WithReason("case 17\x07")}, false},
		{"reason with a newline", "127.0.0.1:7070", []client.Option{client.WithReason("case 17\nX-Evil: 1")}, false},
		{"reason with a C1 control character", "127.0.0.1:7070", []client.Option{client.WithReason("case \u0085 17")}, false},
		{"reason too long", "127.0.0.1:7070", []client.Option{client.WithReason(strings.Repeat("é", client.MaxReasonBytes/2) + "x")}, false},
		{"reason not UTF-8", "127.0.0.1:7070", []client.Option{client.WithReason("case \xff")}, false},
		{"empty processor", "127.0.0.1:7070", []client.Option{client.WithProcessor("")}, false},
		{"empty user agent", "127.0.0.1:7070", []client.Option{client.WithUserAgent("")}, false},
		{"batch count 0", "127.0.0.1:7070", []client.Option{client.WithBatching(0, 1<<20, time.Millisecond)}, false},
		{"batch count over the server's limit", "127.0.0.1:7070", []client.Option{client.WithBatching(1001, 1<<20, time.Millisecond)}, false},
		{"batch bytes too small", "127.0.0.1:7070", []client.Option{client.WithBatching(10, 10, time.Millisecond)}, false},
		{"batch bytes over the message limit", "127.0.0.1:7070", []client.Option{client.WithBatching(10, 5<<20, time.Millisecond)}, false},
		{"negative delay", "127.0.0.1:7070", []client.Option{client.WithBatching(10, 1<<20, -1)}, false},
		{"max in flight 0", "127.0.0.1:7070", []client.Option{client.WithMaxInFlight(0)}, false},
		{"call timeout 0", "127.0.0.1:7070", []client.Option{client.WithCallTimeout(0)}, false},
		{"zero retry policy", "127.0.0.1:7070", []client.Option{client.WithRetry(client.RetryPolicy{})}, false},
		{"max backoff below initial", "127.0.0.1:7070", []client.Option{client.WithRetry(client.RetryPolicy{InitialBackoff: time.Second, MaxBackoff: time.Millisecond, Multiplier: 2})}, false},
		{"multiplier below 1", "127.0.0.1:7070", []client.Option{client.WithRetry(client.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Second, Multiplier: 0.5})}, false},
		{"negative attempts", "127.0.0.1:7070", []client.Option{client.WithRetry(client.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Second, Multiplier: 2, MaxAttempts: -1})}, false},
	} {
		t.Run(test.name, func(t *testing.T) {
			c, err := client.New(test.target, test.opts...)
			if test.ok {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if err := c.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, client.ErrInvalidOption) {
				t.Errorf("New: %v, want ErrInvalidOption", err)
			}
		})
	}
}
