package rules_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/piledger/piledger/projections/rules"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

const acmeRule = `policy: acme
version: "7"
rules:
  - name: marketing-phone
    severity: low
    reference: "Acme policy 4.2"
    description: "Phone numbers are not collected for marketing."
    scope: event
    operations: [collect]
    condition: event.purpose == "marketing" && "phone" in event.categories
`

func names(p *rules.Policy) []string {
	var out []string
	for _, r := range p.Rules() {
		out = append(out, r.Name)
	}
	return out
}

func ruleNamed(p *rules.Policy, name string) *rules.Rule {
	for _, r := range p.Rules() {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// TestParseCustomRule: a rule of an operator's file is appended after the
// default pack and raises matches; versions name the file.
func TestParseCustomRule(t *testing.T) {
	p, err := rules.Parse("acme.yaml", []byte(acmeRule))
	if err != nil {
		t.Fatal(err)
	}
	def := rules.Default()
	if got, want := names(p), append(names(def), "marketing-phone"); !slices.Equal(got, want) {
		t.Errorf("rules = %q, want %q", got, want)
	}
	if p.Version() != "piledger-default/2026.1+acme/7" {
		t.Errorf("Version = %q", p.Version())
	}
	if p.Digest() == def.Digest() {
		t.Error("Digest did not change with a new rule")
	}
	r := ruleNamed(p, "marketing-phone")
	if !strings.HasPrefix(r.Version, "acme/7@") || len(r.Version) != len("acme/7@")+8 ||
		r.Severity != piledgerv1.FindingSeverity_FINDING_SEVERITY_LOW || r.Scope != rules.ScopeEvent {
		t.Errorf("rule = %+v", r)
	}
	m, err := p.EvaluateEvent(rules.EventInput{Entry: entry(op(piledgerv1.Operation_OPERATION_COLLECT, "marketing", "consent",
		nil, 1), 1)})
	if err != nil || len(m) != 1 || m[0].Rule != r {
		t.Errorf("matches = %v, %v; want marketing-phone", m, err)
	}
	// The same file gives the same policy.
	q, err := rules.Parse("acme.yaml", []byte(acmeRule))
	if err != nil || q.Digest() != p.Digest() || q.Version() != p.Version() {
		t.Errorf("parsing the same file twice: %v, digest %s vs %s", err, q.Digest(), p.Digest())
	}
}

// TestParseOverrideAndDisable: a rule with a default's name replaces it in
// place, disabled removes one, and both change the digest.
func TestParseOverrideAndDisable(t *testing.T) {
	def := rules.Default()
	p, err := rules.Parse("city.yaml", []byte(`policy: city
version: "2026.2"
rules:
  - name: image-access-without-reason
    severity: medium
    reference: "Zhuzhou public security image regulations; city order 12"
    description: "Images were accessed without a recorded reason or actor."
    scope: event
    operations: [access]
    condition: |
      event.categories.exists(c, c in ["face", "video-footage"])
        && (event.access.reason == "" || event.access.actor == "")
  - name: camera-footage-under-30-days
    disabled: true
`))
	if err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(names(def), func(n string) bool { return n == "camera-footage-under-30-days" })
	if got := names(p); !slices.Equal(got, want) {
		t.Errorf("rules = %q, want %q", got, want)
	}
	r := ruleNamed(p, "image-access-without-reason")
	if r.Severity != piledgerv1.FindingSeverity_FINDING_SEVERITY_MEDIUM || !strings.HasPrefix(r.Version, "city/2026.2@") {
		t.Errorf("overridden rule = %+v", r)
	}
	if p.Version() != "piledger-default/2026.1+city/2026.2" || p.Digest() == def.Digest() {
		t.Errorf("Version %q, Digest %s (default %s)", p.Version(), p.Digest(), def.Digest())
	}
	noActor := access("case 2026-114")
	noActor.Access.Actor = ""
	if m, _ := p.EvaluateEvent(rules.EventInput{Entry: entry(noActor, 1)}); len(m) != 1 || m[0].Rule != r {
		t.Errorf("override: matches %v", m)
	}
	if m, _ := def.EvaluateEvent(rules.EventInput{Entry: entry(noActor, 1)}); len(m) != 0 {
		t.Errorf("default: matches %v", m)
	}
	early := destroyedAt(footage("video-footage", false), 11, piledgerv1.HoldingState_HOLDING_STATE_DESTROYED)
	if got := p.EvaluateHolding(early, day(11)); len(got) != 0 {
		t.Errorf("disabled rule still matches: %v", got)
	}
	// A file that changes nothing but its own version changes Version only.
	q, err := rules.Parse("empty.yaml", []byte("policy: empty\nversion: \"1\"\nrules: []\n"))
	if err != nil || q.Digest() != def.Digest() || q.Version() != "piledger-default/2026.1+empty/1" {
		t.Errorf("empty file: %v, %q, digest changed %v", err, q.Version(), q.Digest() != def.Digest())
	}
}

// TestLoadFiles: files apply in order; a later file sees an earlier one's
// rules.
func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	if err := os.WriteFile(a, []byte(acmeRule), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte(`policy: branch
version: "3"
rules:
  - name: marketing-phone
    disabled: true
  - name: held-past-deadline
    severity: high
    reference: "PIPL Arts. 19, 47"
    description: "Data was kept beyond its destruction deadline."
    scope: holding
    condition: holding.state in ["due", "overdue", "destroyed-late"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := rules.Load(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if p.Version() != "piledger-default/2026.1+acme/7+branch/3" {
		t.Errorf("Version = %q", p.Version())
	}
	if got := names(p); !slices.Equal(got, names(rules.Default())) {
		t.Errorf("rules = %q", got)
	}
	due := epidemic("health-code-status", piledgerv1.HoldingState_HOLDING_STATE_DUE)
	if got := p.EvaluateHolding(due, day(55)); len(got) != 1 || got[0].Name != "held-past-deadline" {
		t.Errorf("override of a holding rule: %v", got)
	}
	if _, err := rules.Load(b); !errors.Is(err, rules.ErrInvalidPolicy) || !strings.Contains(err.Error(), "marketing-phone") {
		t.Errorf("b alone disables an unknown rule: %v", err)
	}
	if p, err := rules.Load(); err != nil || p.Digest() != rules.Default().Digest() {
		t.Errorf("Load() = %v, want the default pack", err)
	}
	if _, err := rules.Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, rules.ErrInvalidPolicy) ||
		!errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestParseRefusesBrokenFiles: every fault is ErrInvalidPolicy with the
// file, the rule and the problem.
func TestParseRefusesBrokenFiles(t *testing.T) {
	const head = "policy: acme\nversion: \"7\"\nrules:\n"
	rule := func(name, scope, ops, condition string) string {
		return head + "  - name: " + name + "\n    severity: low\n    reference: \"Acme 1\"\n" +
			"    description: \"A test rule.\"\n    scope: " + scope + "\n    operations: " + ops + "\n" +
			"    condition: " + condition + "\n"
	}
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"bad YAML", head + "  - name: [unclosed\n", []string{"bad.yaml", "yaml"}},
		{"empty file", "", []string{"bad.yaml", "empty file"}},
		{"two documents", head + "---\n" + head, []string{"bad.yaml", "more than one YAML document"}},
		{"not a mapping", "- a\n- b\n", []string{"bad.yaml:1", "want a mapping"}},
		{"unknown top-level key", head + "owner: acme\n", []string{"bad.yaml:4", `unknown key "owner"`}},
		{"unknown rule key", strings.Replace(rule("r1", "event", "[]", "true"), "    severity", "    severty", 1),
			[]string{"bad.yaml:5", `rule "#1"`, `unknown key "severty"`}},
		{"key given twice", rule("r1", "event", "[]", "true") + "    condition: false\n",
			[]string{`rule "#1"`, `key "condition" given twice`}},
		{"bad policy name", strings.Replace(rule("r1", "event", "[]", "true"), "acme", "Acme Corp", 1),
			[]string{"bad.yaml:1", `policy "Acme Corp"`}},
		{"missing version", strings.Replace(rule("r1", "event", "[]", "true"), "version: \"7\"\n", "", 1),
			[]string{`version ""`}},
		{"bad rule name", rule("Marketing_Phone", "event", "[]", "true"), []string{`rule "#1"`, `name "Marketing_Phone"`}},
		{"bad severity", strings.Replace(rule("r1", "event", "[]", "true"), "severity: low", "severity: severe", 1),
			[]string{"bad.yaml:4", `rule "r1"`, `severity "severe"`}},
		{"missing reference", strings.Replace(rule("r1", "event", "[]", "true"), "\"Acme 1\"", "\"\"", 1),
			[]string{`rule "r1"`, "reference: required"}},
		{"bad scope", rule("r1", "subject", "[]", "true"), []string{`rule "r1"`, `scope "subject"`}},
		{"unknown operation", rule("r1", "event", "[collect, delete]", "true"),
			[]string{`rule "r1"`, `unknown operation "delete"`}},
		{"operations on a holding rule", rule("r1", "holding", "[collect]", "holding.open"),
			[]string{`rule "r1"`, "holding rule is not evaluated on events"}},
		{"operations not a list", rule("r1", "event", "collect", "true"), []string{`rule "#1"`, "cannot unmarshal"}},
		{"missing condition", rule("r1", "event", "[]", `""`), []string{`rule "r1"`, "condition: required"}},
		{"CEL syntax error", rule("r1", "event", "[]", `event.purpose == "marketing" &&`),
			[]string{`rule "r1"`, "condition 1:"}},
		{"CEL syntax error on line 2", rule("r1", "event", "[]", "|\n      event.consent\n        && event.purpose ==="),
			[]string{`rule "r1"`, "condition 2:"}},
		{"non-bool result", rule("r1", "event", "[]", "event.purpose + \"x\""),
			[]string{`rule "r1"`, "evaluates to string, want bool"}},
		{"non-bool dyn result", rule("r1", "event", "[]", "event.purpose"),
			[]string{`rule "r1"`, "evaluates to string on a sample input, want bool"}},
		{"misspelled key", rule("r1", "event", "[]", `event.categorys.exists(c, c == 'face')`),
			[]string{`rule "r1"`, "condition 1:", `no key "categorys"`}},
		{"misspelled nested key in a branch the sample does not reach", rule("r1", "event", "[]", `event.purpose == "x" && event.place.notice == ""`),
			[]string{`rule "r1"`, `no key "notice"`}},
		{"misspelled key in a comprehension", rule("r1", "event", "[]", `holdings.exists(h, h.categry == "face")`),
			[]string{`rule "r1"`, `no key "categry"`}},
		{"misspelled key by index", rule("r1", "holding", "[]", `holding["purpose_end"] == now`),
			[]string{`rule "r1"`, `no key "purpose_end"`}},
		{"runtime type error on the sample", rule("r1", "event", "[]", `event.index > "7"`),
			[]string{`rule "r1"`, "fails on a sample input"}},
		{"holding in an event rule", rule("r1", "event", "[]", "holding.open"),
			[]string{`rule "r1"`, "undeclared reference to 'holding'"}},
		{"event in a holding rule", rule("r1", "holding", "[]", `event.purpose == ""`),
			[]string{`rule "r1"`, "undeclared reference to 'event'"}},
		{"duplicate name", rule("r1", "event", "[]", "true") + strings.TrimPrefix(rule("r1", "event", "[]", "false"), head),
			[]string{"bad.yaml:11", `rule "r1"`, "defined twice in the file (first at line 4)"}},
		{"disable of an unknown rule", head + "  - name: no-such-rule\n    disabled: true\n",
			[]string{"bad.yaml:4", `rule "no-such-rule"`, "no earlier rule has that name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := rules.Parse("bad.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted: %s\n%s", p.Version(), tt.yaml)
			}
			if !errors.Is(err, rules.ErrInvalidPolicy) {
				t.Errorf("error does not wrap ErrInvalidPolicy: %v", err)
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
