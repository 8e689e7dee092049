package api

import (
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, test := range []struct {
		name  string
		cfg   Config
		valid bool
	}{
		{"zero means defaults", Config{}, true},
		{"free ports", Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, true},
		{"all interfaces", Config{GRPCAddr: ":7070", HTTPAddr: "[::]:8080", MaxRequestBytes: 1, MaxRecvMsgSize: 1, ShutdownTimeout: time.Second}, true},
		{"no port", Config{GRPCAddr: "127.0.0.1"}, false},
		{"same address", Config{GRPCAddr: "127.0.0.1:9000", HTTPAddr: "127.0.0.1:9000"}, false},
		{"negative body limit", Config{MaxRequestBytes: -1}, false},
		{"negative message limit", Config{MaxRecvMsgSize: -1}, false},
		{"negative shutdown timeout", Config{ShutdownTimeout: -time.Second}, false},
	} {
		t.Run(test.name, func(t *testing.T) {
			if err := test.cfg.Validate(); (err == nil) != test.valid {
				t.Errorf("Validate() = %v, want valid %t", err, test.valid)
			}
		})
	}
}
