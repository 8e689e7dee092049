package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// acmeRules adds a rule of the operator's to the default pack.
const acmeRules = `policy: acme
version: "1"
rules:
  - name: acme-access-control
    severity: low
    reference: "Acme policy 4.2"
    description: "Faces are collected for access control."
    operations: [collect]
    condition: event.purpose == "access-control"
`

// brokenRules has a rule whose condition does not parse.
const brokenRules = `policy: acme
version: "1"
rules: [{name: bad, severity: high, reference: x, description: y, condition: "event.nope +"}]
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFindingsCommand runs `piledger findings` against a real
// `piledger serve --rules`: a compound's face gates with and without
// separate consent, and camera footage kept past its deadline.
func TestFindingsCommand(t *testing.T) {
	addr, _, logs := startServeWith(t, "--insecure-no-auth", "--rules", writeFile(t, "acme.yaml", acmeRules))
	if want := `"policy":"piledger-default/2026.1+acme/1"`; !strings.Contains(logs.String(), want) {
		t.Errorf("the startup line does not name the policy (%s):\n%s", want, logs)
	}
	env := map[string]string{"PILEDGER_SERVER": addr}
	t0 := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Hour)
	at := func(h int) string { return t0.Add(time.Duration(h) * time.Hour).Format(time.RFC3339) }
	gate := func(id, ref, occurred string, separate bool) string {
		return fmt.Sprintf(`{"eventId": %q, "subjectRef": %q, "operation": "OPERATION_COLLECT", "occurredAt": %q, "processor": "compound-mgmt",
		  "system": "face-gate", "dataCategories": ["face"], "purpose": "access-control", "legalBasis": "consent",
		  "consent": {"separate": %t, "reference": "owners-notice"}, "place": {"kind": "residential-compound", "noticeSignRef": "gate-sign"}}`,
			id, ref, occurred, separate)
	}
	events := []string{
		gate("019ab7c2-0000-7000-8000-00000000f001", "R-101", at(0), false),
		gate("019ab7c2-0000-7000-8000-00000000f002", "R-102", at(1), false),
		gate("019ab7c2-0000-7000-8000-00000000f003", "R-103", at(2), true),
		// Footage kept 30 days, captured 200 days ago: past its deadline.
		fmt.Sprintf(`{"eventId": "019ab7c2-0000-7000-8000-00000000f004", "subjectRef": "R-104", "operation": "OPERATION_COLLECT",
		  "occurredAt": %q, "processor": "city-police", "system": "gate-cam-7", "dataCategories": ["face"], "purpose": "public-safety",
		  "legalBasis": "legal-duty", "retention": {"keepFor": "2592000s"}, "place": {"kind": "public-street", "noticeSignRef": "sign-12"}}`,
			t0.Add(-200*24*time.Hour).Format(time.RFC3339)),
	}
	code, out, errOut := cli(t, env, strings.Join(events, "\n"), "emit", "-f", "-", "-o", "json")
	if code != 0 {
		t.Fatalf("emit: exit %d\n%s", code, errOut)
	}
	var receipts piledgerv1.AppendEventsResponse
	if err := protojson.Unmarshal([]byte(out), &receipts); err != nil || len(receipts.GetReceipts()) != 4 {
		t.Fatalf("emit printed %q: %v", out, err)
	}
	minIndex := fmt.Sprint(receipts.GetReceipts()[3].GetIndex())

	// The table: a stored finding per gate without separate consent, the
	// operator's rule on every gate, and the computed one on the footage.
	code, out, errOut = cli(t, env, "", "findings", "--min-index", minIndex)
	if code != 0 {
		t.Fatalf("findings: exit %d\n%s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "TIME SEVERITY RULE PROCESSOR EVENT HOLDING COMPUTED" {
		t.Errorf("table header %q", lines[0])
	}
	count := func(substrs ...string) int {
		n := 0
		for _, l := range lines[1:] {
			all := true
			for _, s := range substrs {
				all = all && strings.Contains(l, s)
			}
			if all {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		substrs []string
		want    int
	}{
		{[]string{"high", "sensitive-without-separate-consent", "compound-mgmt", "collect #", "no"}, 2},
		{[]string{t0.Format("2006-01-02 15:04"), "sensitive-without-separate-consent", "collect #0 "}, 1},
		{[]string{"low", "acme-access-control", "compound-mgmt"}, 3},
		{[]string{"medium", "held-past-deadline", "city-police", "collect #3", "face", "yes"}, 1},
	} {
		if got := count(c.substrs...); got != c.want {
			t.Errorf("%d rows with %q, want %d:\n%s", got, c.substrs, c.want, out)
		}
	}

	// JSON: one Finding per line, compact and the same bytes every time;
	// one finding per call reads every page.
	findingsJSON := func(args ...string) []*piledgerv1.Finding {
		t.Helper()
		code, out, errOut := cli(t, env, "", append([]string{"findings", "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("findings -o json %v: exit %d\n%s", args, code, errOut)
		}
		var fs []*piledgerv1.Finding
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if l == "" {
				continue
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, []byte(l)); err != nil || compact.String() != l {
				t.Errorf("line %q is not compact JSON: %v", l, err)
			}
			f := &piledgerv1.Finding{}
			if err := protojson.Unmarshal([]byte(l), f); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			fs = append(fs, f)
		}
		return fs
	}
	_, first, _ := cli(t, env, "", "findings", "-o", "json", "--page-size", "1")
	_, again, _ := cli(t, env, "", "findings", "-o", "json")
	if first != again || first == "" {
		t.Errorf("findings -o json differs between runs or page sizes:\n%s\n%s", first, again)
	}
	for _, test := range []struct {
		args []string
		want int
	}{
		{nil, 6},
		{[]string{"--page-size", "1"}, 6},
		{[]string{"--rule", "sensitive-without-separate-consent"}, 2},
		{[]string{"--processor", "city-police"}, 1},
		{[]string{"--severity", "high"}, 2},
		{[]string{"--severity", "medium"}, 3},
		{[]string{"--severity", "critical"}, 0},
		{[]string{"--since", at(1), "--rule", "sensitive-without-separate-consent"}, 1},
		{[]string{"--until", at(1), "--processor", "compound-mgmt"}, 2},
		{[]string{"--since", at(1), "--until", at(2), "--processor", "compound-mgmt"}, 2},
	} {
		if fs := findingsJSON(test.args...); len(fs) != test.want {
			t.Errorf("findings %v: %d findings, want %d", test.args, len(fs), test.want)
		}
	}
	if fs := findingsJSON("--rule", "acme-access-control"); len(fs) != 3 || fs[0].GetSeverity() != piledgerv1.FindingSeverity_FINDING_SEVERITY_LOW ||
		fs[0].GetLegalReference() != "Acme policy 4.2" || !strings.HasPrefix(fs[0].GetRuleVersion(), "acme/1@") {
		t.Errorf("the operator's rule: %v", fs)
	}

	// Mistakes: exit 2, the field at fault on stderr.
	for _, test := range []struct {
		args  []string
		field string
	}{
		{[]string{"--severity", "severe"}, "--severity"},
		{[]string{"--since", "yesterday"}, "--since"},
		{[]string{"--until", "2026-13-01"}, "--until"},
		{[]string{"--page-size", "-1"}, "--page-size"},
		{[]string{"--output", "yaml"}, "--output"},
		{[]string{"--rule", "Not A Rule"}, "rule:"},
		{[]string{"--processor", "City Police"}, "processor:"},
		{[]string{"--since", at(2), "--until", at(1)}, "endTime:"},
		{[]string{"extra"}, "unknown command"},
	} {
		code, _, errOut := cli(t, env, "", append([]string{"findings"}, test.args...)...)
		if code != exitInvalid || !strings.Contains(errOut, test.field) {
			t.Errorf("findings %v: exit %d, want %d naming %s\n%s", test.args, code, exitInvalid, test.field, errOut)
		}
	}
	// An unreachable server: exit 1.
	if code, _, errOut := cli(t, map[string]string{"PILEDGER_SERVER": "127.0.0.1:1"}, "", "findings", "--timeout", "2s"); code != exitFailure {
		t.Errorf("findings against no server: exit %d\n%s", code, errOut)
	}
	for _, ref := range []string{"R-101", "R-102", "R-103", "R-104"} {
		if strings.Contains(logs.String(), ref) {
			t.Errorf("the server log holds subject reference %s", ref)
		}
	}
}

// TestServeRules: a broken rule file stops `piledger serve` before it
// starts anything, with a message naming the file and the rule, from the
// flag and from $PILEDGER_RULES; so does a missing file.
func TestServeRules(t *testing.T) {
	broken := writeFile(t, "broken.yaml", brokenRules)
	good := writeFile(t, "acme.yaml", acmeRules)
	for _, test := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"broken rule", []string{"--rules", broken}, nil, []string{broken, `rule "bad"`, "condition"}},
		{"broken rule after a good file", []string{"--rules", good, "--rules", broken}, nil, []string{broken, `rule "bad"`}},
		{"broken rule from the environment", nil, map[string]string{"PILEDGER_RULES": good + "," + broken}, []string{broken, `rule "bad"`}},
		{"missing file", []string{"--rules", filepath.Join(t.TempDir(), "nope.yaml")}, nil, []string{"nope.yaml"}},
	} {
		t.Run(test.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			args := append([]string{"serve", "--data", data, "--insecure-no-auth", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", ""}, test.args...)
			code, _, errOut := cli(t, test.env, "", args...)
			if code == exitOK {
				t.Fatalf("serve with a broken policy: exit 0")
			}
			for _, w := range test.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("serve's error does not name %q:\n%s", w, errOut)
				}
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("serve created its data directory before checking the policy: %v", err)
			}
		})
	}
}
