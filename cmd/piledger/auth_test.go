package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// writeSecret writes a credential to a private file and returns its path.
func writeSecret(t *testing.T, name, v string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestQuickstartWithAuth follows the README: `serve` has authentication on
// by default; `processors add` makes an emitter's API key and `token` an
// admin's, a regulator's and a subject's token; emit needs the key, replay a
// token and a reason; every read is recorded.
func TestQuickstartWithAuth(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	code, key, errOut := cli(t, nil, "", "processors", "add", "city-police", "--data", dataDir)
	key = strings.TrimSpace(key)
	if code != 0 || !strings.HasPrefix(key, "pk_") || !strings.Contains(errOut, "shown only now") {
		t.Fatalf("processors add: exit %d, %q\n%s", code, key, errOut)
	}
	if code, _, errOut := cli(t, nil, "", "processors", "add", "piledger", "--data", dataDir); code != exitInvalid {
		t.Errorf("processors add piledger: exit %d, want 2\n%s", code, errOut)
	}
	code, admin, errOut := cli(t, map[string]string{"PILEDGER_DATA": dataDir}, "", "token", "--role", "admin", "--sub", "ops-1")
	if code != 0 || strings.Count(admin, ".") != 2 {
		t.Fatalf("token: exit %d %q\n%s", code, admin, errOut)
	}
	admin = strings.TrimSpace(admin)
	regulatorFile := filepath.Join(t.TempDir(), "regulator.token")
	if code, _, errOut := cli(t, nil, "", "token", "--data", dataDir, "--role", "regulator", "--sub", "officer-7", "--ttl", "2h", "--out", regulatorFile); code != 0 {
		t.Fatalf("token --out: exit %d\n%s", code, errOut)
	}
	if fi, err := os.Stat(regulatorFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file: %v, %v; want mode 0600", fi, err)
	}
	code, subject, errOut := cli(t, nil, "resident-42\n", "token", "--data", dataDir, "--role", "subject", "--sub-file", "-")
	if code != 0 {
		t.Fatalf("subject token: exit %d\n%s", code, errOut)
	}
	subject = strings.TrimSpace(subject)
	if code, _, _ := cli(t, nil, "", "token", "--data", dataDir, "--role", "emitter", "--sub", "x"); code != exitInvalid {
		t.Errorf("token --role emitter: exit %d, want 2", code)
	}

	addr, logs := startServeAuth(t, dataDir)
	keyFile := writeSecret(t, "city-police.key", key+"\n")
	event := []string{"emit", "--operation", "collect", "--subject", "resident-42", "--processor", "city-police",
		"--category", "face", "--purpose", "public-safety", "--legal-basis", "legal-duty", "--place", "public-street", "--notice-sign", "sign-12"}
	server := map[string]string{"PILEDGER_SERVER": addr}

	// No credentials: refused, with advice.
	if code, _, errOut := cli(t, server, "", event...); code != exitFailure || !strings.Contains(errOut, "--api-key-file") {
		t.Errorf("emit without a key: exit %d\n%s", code, errOut)
	}
	// The key from a file, then from the environment.
	if code, out, errOut := cli(t, server, "", append(event, "--api-key-file", keyFile)...); code != 0 {
		t.Fatalf("emit --api-key-file: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := cli(t, map[string]string{"PILEDGER_SERVER": addr, "PILEDGER_API_KEY": key}, "", event...); code != 0 {
		t.Fatalf("emit with $PILEDGER_API_KEY: exit %d\n%s%s", code, out, errOut)
	}
	// Another processor's event with this key: permission denied.
	other := append([]string{}, event...)
	other[6] = "shop-42"
	if code, _, errOut := cli(t, server, "", append(other, "--api-key-file", keyFile)...); code != exitFailure || !strings.Contains(errOut, "events[0].processor") {
		t.Errorf("emit as another processor: exit %d\n%s", code, errOut)
	}

	// Replay needs an overseer's token and a reason.
	asAdmin := map[string]string{"PILEDGER_SERVER": addr, "PILEDGER_TOKEN": admin}
	if code, _, errOut := cli(t, asAdmin, "", "replay"); code != exitInvalid || !strings.Contains(errOut, "x-piledger-reason") {
		t.Errorf("replay without a reason: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := cli(t, map[string]string{"PILEDGER_SERVER": addr, "PILEDGER_API_KEY": key}, "", "replay", "--reason", "x"); code != exitFailure || !strings.Contains(errOut, "permission denied") {
		t.Errorf("replay as an emitter: exit %d\n%s", code, errOut)
	}
	code, out, errOut := cli(t, server, "", "replay", "--token-file", regulatorFile, "--reason", "案件 2026-17")
	if code != 0 || strings.Count(strings.TrimSpace(out), "\n") != 1 || !strings.Contains(out, "resident-42") {
		t.Fatalf("replay as a regulator: exit %d\n%s%s", code, out, errOut)
	}
	// The regulator's replay left a trace for the subject, with the reason.
	code, out, errOut = cli(t, asAdmin, "", "replay", "--reason", "check the trace", "--start", "2")
	if code != 0 {
		t.Fatalf("replay as admin: exit %d\n%s", code, errOut)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e piledgerv1.LogEntry
		if err := protojson.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("replay line %q: %v", line, err)
		}
		a := e.GetEvent().GetAccess()
		if e.GetHeader().GetProcessor() == "piledger" && a.GetActor() == "regulator:officer-7" && a.GetReason() == "案件 2026-17" {
			found = true
		}
	}
	if !found {
		t.Errorf("no access event of the regulator's replay in:\n%s", out)
	}
	// Both credentials at once are ambiguous.
	if code, _, errOut := cli(t, map[string]string{"PILEDGER_SERVER": addr, "PILEDGER_API_KEY": key, "PILEDGER_TOKEN": admin}, "", "replay", "--reason", "x"); code != exitInvalid {
		t.Errorf("both credentials in the environment: exit %d\n%s", code, errOut)
	}

	// The subject's token works on REST for the subject's own records.
	var startup struct {
		HTTPAddr    string `json:"http_addr"`
		MetricsAddr string `json:"metrics_addr"`
		Credentials string `json:"credentials"`
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"piledger serving"`) {
			if err := json.Unmarshal([]byte(line), &startup); err != nil {
				t.Fatal(err)
			}
		}
	}
	if startup.Credentials != "api-keys, local-tokens" || startup.MetricsAddr == "" {
		t.Errorf("startup line: %+v", startup)
	}
	req, _ := http.NewRequest("GET", "http://"+startup.HTTPAddr+"/v1/subjects/me/events?minIndex=1", nil)
	req.Header.Set("Authorization", "Bearer "+subject)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "regulator:officer-7") {
		t.Errorf("GET /v1/subjects/me/events as the subject: %d %s", resp.StatusCode, b)
	}
	resp, err = http.Get("http://" + startup.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"piledger_access_events_total", "piledger_projector_applied_entries", `piledger_projector_entries_total{outcome="applied"}`, "piledger_findings_stored_total"} {
		if !strings.Contains(string(b), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// The subject reads and erases their own records from the CLI with
	// --me: nothing is resolved, no reference is needed.
	asSubject := map[string]string{"PILEDGER_SERVER": addr, "PILEDGER_TOKEN": subject}
	if code, out, errOut := cli(t, asSubject, "", "where", "--me"); code != 0 || !strings.Contains(out, "face") {
		t.Errorf("where --me as the subject: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := cli(t, asSubject, "", "where", "--me", "resident-42"); code != exitInvalid {
		t.Errorf("where --me with a REF: exit %d, want 2\n%s", code, errOut)
	}
	if code, out, errOut := cli(t, asSubject, "", "erase", "--me", "--yes"); code != 0 || !strings.Contains(out, "log-entries") ||
		!strings.Contains(out, "erasure-entry") {
		t.Errorf("erase --me as the subject: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := cli(t, asSubject, "", "where", "--me", "-o", "json"); code != 0 || !strings.Contains(out, `"erasures"`) ||
		strings.Contains(out, "public-safety") {
		t.Errorf("where --me after the erasure: exit %d\n%s%s", code, out, errOut)
	}

	// Keys: listed without the key, then revoked.
	code, out, _ = cli(t, nil, "", "processors", "list", "--data", dataDir)
	if code != 0 || !strings.Contains(out, "city-police") || strings.Contains(out, key) {
		t.Errorf("processors list: exit %d\n%s", code, out)
	}
	if code, _, errOut := cli(t, nil, "", "processors", "revoke", "--processor", "city-police", "--data", dataDir); code != 0 {
		t.Errorf("processors revoke: exit %d\n%s", code, errOut)
	}
	if code, _, _ := cli(t, nil, "", "processors", "revoke", "--processor", "city-police", "--data", dataDir); code != exitFailure {
		t.Errorf("revoking again: exit %d, want 1", code)
	}

	// The issuer's public keys, for --jwks-file elsewhere.
	code, out, _ = cli(t, nil, "", "token", "--jwks", "--data", dataDir)
	if code != 0 || !strings.Contains(out, `"kty":"EC"`) || strings.Contains(out, `"d":`) {
		t.Errorf("token --jwks: exit %d\n%s", code, out)
	}

	for _, secret := range []string{"resident-42", key, admin, subject, "案件"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the server log holds personal data or a credential (%.10s...)", secret)
		}
	}
}

// TestServeSecurityFlags: bad combinations are usage errors; plaintext
// credentials on a network address are refused.
func TestServeSecurityFlags(t *testing.T) {
	for _, test := range []struct {
		name string
		args []string
		want string
	}{
		{"tls cert without key", []string{"--tls-cert", "x.pem"}, "--tls-cert and --tls-key"},
		{"client CA without TLS", []string{"--tls-client-ca", "ca.pem"}, "--tls-client-ca needs"},
		{"jwks without issuer", []string{"--jwks-file", "x.json"}, "--jwt-issuer"},
		{"issuer without jwks", []string{"--jwt-issuer", "https://idp"}, "--jwks-url or --jwks-file"},
		{"no auth on the network", []string{"--insecure-no-auth", "--grpc-addr", "0.0.0.0:0"}, "loopback"},
		{"zero rate", []string{"--rate-limit", "0"}, "--rate-limit"},
		{"plaintext on the network", []string{"--grpc-addr", "0.0.0.0:0"}, "not loopback"},
	} {
		t.Run(test.name, func(t *testing.T) {
			args := append([]string{"serve", "--data", filepath.Join(t.TempDir(), "data"), "--http-addr", "127.0.0.1:0", "--metrics-addr", "", "--grpc-addr", "127.0.0.1:0"}, test.args...)
			code, _, errOut := cli(t, nil, "", args...)
			if code == 0 || !strings.Contains(errOut, test.want) {
				t.Errorf("exit %d, stderr %q; want failure mentioning %q", code, errOut, test.want)
			}
		})
	}
}
