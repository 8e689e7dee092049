package rules

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// A policy file:
//
//	policy: acme              # [a-z0-9][a-z0-9-]*, at most 63 characters
//	version: "7"              # [A-Za-z0-9][A-Za-z0-9._-]*, at most 32
//	rules:
//	  - name: marketing-phone
//	    severity: low         # low | medium | high | critical
//	    reference: "Acme policy 4.2"
//	    description: "Phone numbers are not collected for marketing."
//	    scope: event          # event (default) | event-holding | holding
//	    operations: [collect] # event scopes only; empty = every operation
//	    condition: event.purpose == "marketing" && "phone" in event.categories
//	  - name: image-access-without-reason
//	    disabled: true        # removes a rule of an earlier file
//
// Unknown and repeated keys are errors.

var (
	policyNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	versionPattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	ruleNamePattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

	fileKeys = []string{"policy", "version", "rules"}
	ruleKeys = []string{"name", "severity", "reference", "description", "scope", "operations", "condition", "disabled"}

	severities = map[string]piledgerv1.FindingSeverity{
		"low":      piledgerv1.FindingSeverity_FINDING_SEVERITY_LOW,
		"medium":   piledgerv1.FindingSeverity_FINDING_SEVERITY_MEDIUM,
		"high":     piledgerv1.FindingSeverity_FINDING_SEVERITY_HIGH,
		"critical": piledgerv1.FindingSeverity_FINDING_SEVERITY_CRITICAL,
	}
)

// file is a parsed and compiled policy file.
type file struct {
	name    string
	policy  string
	version string
	entries []entry
}

// entry is one rule of a file: rule is nil for "disabled: true".
type entry struct {
	name string
	line int
	rule *compiledRule
}

// fileHeader and fileRule are the typed form of a file, decoded after the
// keys were checked.
type fileHeader struct {
	Policy  string      `yaml:"policy"`
	Version string      `yaml:"version"`
	Rules   []yaml.Node `yaml:"rules"`
}

type fileRule struct {
	Name        string   `yaml:"name"`
	Severity    string   `yaml:"severity"`
	Reference   string   `yaml:"reference"`
	Description string   `yaml:"description"`
	Scope       string   `yaml:"scope"`
	Operations  []string `yaml:"operations"`
	Condition   string   `yaml:"condition"`
	Disabled    bool     `yaml:"disabled"`
}

// parseFile decodes, checks and compiles one policy file; name is the file's
// name in errors.
func parseFile(name string, data []byte) (*file, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return nil, invalid(name, 0, "", "empty file")
	case err != nil:
		return nil, invalid(name, 0, "", "%s", oneLine(err))
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		return nil, invalid(name, 0, "", "more than one YAML document")
	}
	if len(doc.Content) == 0 {
		return nil, invalid(name, 0, "", "empty file")
	}
	root := doc.Content[0]
	if err := checkMapping(name, root, "", fileKeys); err != nil {
		return nil, err
	}
	var h fileHeader
	if err := root.Decode(&h); err != nil {
		return nil, invalid(name, 0, "", "%s", oneLine(err))
	}
	f := &file{name: name, policy: h.Policy, version: h.Version}
	switch {
	case !policyNamePattern.MatchString(h.Policy):
		return nil, invalid(name, root.Line, "", "policy %q: want a name of [a-z0-9-], at most 63 characters, starting with a letter or digit", h.Policy)
	case !versionPattern.MatchString(h.Version):
		return nil, invalid(name, root.Line, "", "version %q: want [A-Za-z0-9._-], at most 32 characters, starting with a letter or digit", h.Version)
	}
	seen := map[string]int{}
	for i := range h.Rules {
		n := &h.Rules[i]
		label := fmt.Sprintf("#%d", i+1) // until the rule's name is known
		if err := checkMapping(name, n, label, ruleKeys); err != nil {
			return nil, err
		}
		var r fileRule
		if err := n.Decode(&r); err != nil {
			return nil, invalid(name, n.Line, label, "%s", oneLine(err))
		}
		if !ruleNamePattern.MatchString(r.Name) {
			return nil, invalid(name, n.Line, label, "name %q: want [a-z0-9-], at most 63 characters, starting with a letter or digit", r.Name)
		}
		if first, dup := seen[r.Name]; dup {
			return nil, invalid(name, n.Line, r.Name, "defined twice in the file (first at line %d)", first)
		}
		seen[r.Name] = n.Line
		e := entry{name: r.Name, line: n.Line}
		if !r.Disabled {
			var err error
			if e.rule, err = f.compileRule(r); err != nil {
				return nil, invalid(name, n.Line, r.Name, "%v", err)
			}
		}
		f.entries = append(f.entries, e)
	}
	return f, nil
}

// oneLine returns the message of a YAML error on one line.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// checkMapping checks that n is a mapping whose keys are all in allowed, each
// once.
func checkMapping(file string, n *yaml.Node, rule string, allowed []string) error {
	if n.Kind != yaml.MappingNode {
		return invalid(file, n.Line, rule, "want a mapping with keys %s", strings.Join(allowed, ", "))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		switch {
		case !slices.Contains(allowed, k.Value):
			return invalid(file, k.Line, rule, "unknown key %q (the keys are %s)", k.Value, strings.Join(allowed, ", "))
		case seen[k.Value]:
			return invalid(file, k.Line, rule, "key %q given twice", k.Value)
		}
		seen[k.Value] = true
	}
	return nil
}

// compileRule checks an enabled rule and compiles its condition.
func (f *file) compileRule(r fileRule) (*compiledRule, error) {
	sev, ok := severities[r.Severity]
	if !ok {
		return nil, fmt.Errorf("severity %q: want low, medium, high or critical", r.Severity)
	}
	reference, description := strings.TrimSpace(r.Reference), strings.TrimSpace(r.Description)
	switch {
	case reference == "":
		return nil, errors.New("reference: required (the legal provision the rule enforces)")
	case description == "":
		return nil, errors.New("description: required (one sentence)")
	}
	scope := Scope(r.Scope)
	switch scope {
	case "":
		scope = ScopeEvent
	case ScopeEvent, ScopeEventHolding, ScopeHolding:
	default:
		return nil, fmt.Errorf("scope %q: want event, event-holding or holding", r.Scope)
	}
	if scope == ScopeHolding && len(r.Operations) > 0 {
		return nil, errors.New("operations: a holding rule is not evaluated on events")
	}
	ops := make([]piledgerv1.Operation, 0, len(r.Operations))
	for _, id := range r.Operations {
		op, known := operations().op[id]
		switch {
		case !known:
			return nil, fmt.Errorf("operations: unknown operation %q (want vocabulary ids such as collect, use, transfer-abroad)", id)
		case slices.Contains(ops, op):
			return nil, fmt.Errorf("operations: %q listed twice", id)
		}
		ops = append(ops, op)
	}
	condition := strings.TrimSpace(r.Condition)
	if condition == "" {
		return nil, errors.New("condition: required")
	}
	prg, err := compile(scope, condition)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(condition))
	return &compiledRule{
		Rule: &Rule{
			Name:        r.Name,
			Severity:    sev,
			Reference:   reference,
			Description: description,
			Scope:       scope,
			Operations:  slices.Clip(slices.Clone(r.Operations)),
			Condition:   condition,
			Version:     fmt.Sprintf("%s/%s@%x", f.policy, f.version, sum[:4]),
		},
		prg: prg,
		ops: ops,
	}, nil
}

// IsRuleName reports whether name has the form of a rule name: 1 to 63
// characters from [a-z0-9-], starting with a letter or digit.
func IsRuleName(name string) bool { return ruleNamePattern.MatchString(name) }
