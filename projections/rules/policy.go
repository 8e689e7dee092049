package rules

import (
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"cel.dev/cel-go/cel"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// ErrInvalidPolicy: a policy file does not parse or a rule does not
// compile. Every error of Load and Parse wraps it and names the file, the
// rule and the problem.
var ErrInvalidPolicy = errors.New("rules: invalid policy")

// Scope says what a rule is evaluated on.
type Scope string

// The scopes.
const (
	// ScopeEvent rules are evaluated once per event, in log order.
	ScopeEvent Scope = "event"
	// ScopeEventHolding rules are evaluated once per event and holding the
	// subject had at the event's processor before the event, with the
	// holding bound.
	ScopeEventHolding Scope = "event-holding"
	// ScopeHolding rules are evaluated on one evaluated holding: when it is
	// destroyed and, for open holdings past their deadline, at query time.
	ScopeHolding Scope = "holding"
)

// Rule is one compiled rule. Rules are shared: callers must not modify
// them.
type Rule struct {
	// Name identifies the rule: ^[a-z0-9][a-z0-9-]{0,62}$, unique in a
	// policy.
	Name string
	// Severity of the findings it raises; never UNSPECIFIED.
	Severity piledgerv1.FindingSeverity
	// Reference names the legal provision the rule enforces.
	Reference string
	// Description says in one sentence what a finding of the rule means.
	Description string
	// Scope says what the rule is evaluated on.
	Scope Scope
	// Operations are the vocabulary ids of the operations the rule is
	// evaluated on ("collect", "transfer-abroad"); empty means every
	// operation. Always empty for ScopeHolding.
	Operations []string
	// Condition is the CEL expression; the rule matches when it is true.
	Condition string
	// Version is "<policy>/<version>@<first 8 hex digits of the SHA-256 of
	// Condition>" of the file that defined the rule, e.g.
	// "piledger-default/2026.1@3f1c09ab".
	Version string
}

// compiledRule is a rule with its program and its operations resolved.
type compiledRule struct {
	*Rule
	prg cel.Program
	ops []piledgerv1.Operation
}

// Policy is a validated set of compiled rules. It is immutable and safe for
// concurrent use.
type Policy struct {
	version string
	digest  string
	rules   []*compiledRule
	// byOp[op] lists the event and event-holding rules evaluated on op, by
	// position in rules; anyOp those evaluated on an operation the
	// vocabulary does not know (the rules that list no operations).
	byOp  [][]int
	anyOp []int
	// onHolding lists the holding rules.
	onHolding []int
	// errs counts the runtime errors of each rule.
	errs []atomic.Uint64
}

// defaultYAML is the default pack shipped with the binary.
//
//go:embed default.yaml
var defaultYAML []byte

var defaultPolicy = sync.OnceValues(func() (*Policy, error) {
	f, err := parseFile("default.yaml", defaultYAML)
	if err != nil {
		return nil, err
	}
	return (*Policy)(nil).apply(f)
})

// Default returns the default pack shipped with the binary. It is compiled
// on first use and shared. It panics if the embedded pack is invalid, which
// the package tests rule out.
func Default() *Policy {
	p, err := defaultPolicy()
	if err != nil {
		panic(err)
	}
	return p
}

// Load returns the default pack with the files at paths applied over it in
// order: a rule with the name of an earlier one replaces it in place,
// "disabled: true" removes it, and a new name is appended. The error wraps
// ErrInvalidPolicy.
func Load(paths ...string) (*Policy, error) {
	p, err := defaultPolicy()
	if err != nil {
		return nil, err
	}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
		}
		if p, err = p.applyFile(path, data); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Parse returns the default pack with one file applied over it, as Load
// does; name is the file's name in errors. The error wraps
// ErrInvalidPolicy.
func Parse(name string, data []byte) (*Policy, error) {
	p, err := defaultPolicy()
	if err != nil {
		return nil, err
	}
	return p.applyFile(name, data)
}

func (p *Policy) applyFile(name string, data []byte) (*Policy, error) {
	f, err := parseFile(name, data)
	if err != nil {
		return nil, err
	}
	return p.apply(f)
}

// apply returns a new policy: p (nil for none) with the file applied.
func (p *Policy) apply(f *file) (*Policy, error) {
	version := f.policy + "/" + f.version
	var rules []*compiledRule
	if p != nil {
		version = p.version + "+" + version
		rules = slices.Clone(p.rules)
	}
	for _, e := range f.entries {
		i := slices.IndexFunc(rules, func(r *compiledRule) bool { return r.Name == e.name })
		switch {
		case e.rule == nil && i < 0:
			return nil, invalid(f.name, e.line, e.name, "disabled, but no earlier rule has that name")
		case e.rule == nil:
			rules = slices.Delete(rules, i, i+1)
		case i >= 0:
			rules[i] = e.rule
		default:
			rules = append(rules, e.rule)
		}
	}
	return newPolicy(version, rules), nil
}

func newPolicy(version string, rules []*compiledRule) *Policy {
	p := &Policy{version: version, rules: rules, errs: make([]atomic.Uint64, len(rules))}
	var maxOp piledgerv1.Operation
	for op := range operations().id {
		maxOp = max(maxOp, op)
	}
	p.byOp = make([][]int, maxOp+1)
	for i, r := range rules {
		if r.Scope == ScopeHolding {
			p.onHolding = append(p.onHolding, i)
			continue
		}
		if len(r.ops) == 0 {
			p.anyOp = append(p.anyOp, i)
		}
		for op := range operations().id {
			if len(r.ops) == 0 || slices.Contains(r.ops, op) {
				p.byOp[op] = append(p.byOp[op], i)
			}
		}
	}
	p.digest = digest(rules)
	return p
}

// forOperation returns the event and event-holding rules evaluated on op,
// in policy order.
func (p *Policy) forOperation(op piledgerv1.Operation) []int {
	if op > 0 && int(op) < len(p.byOp) {
		return p.byOp[op]
	}
	return p.anyOp
}

// digest hashes every field of every rule, in order, each length-prefixed.
// Description and Version are included with the fields that decide
// matches because findings carry them: a policy whose findings would read
// differently has a different digest.
func digest(rules []*compiledRule) string {
	h := sha256.New()
	for _, r := range rules {
		writeField(h, r.Name)
		writeField(h, r.Severity.String())
		writeField(h, r.Reference)
		writeField(h, r.Description)
		writeField(h, string(r.Scope))
		h.Write(binary.AppendUvarint(nil, uint64(len(r.Operations))))
		for _, op := range r.Operations {
			writeField(h, op)
		}
		writeField(h, r.Condition)
		writeField(h, r.Version)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	h.Write(binary.AppendUvarint(nil, uint64(len(s))))
	h.Write([]byte(s))
}

// Version names the policy in force: "piledger-default/2026.1" for the
// default pack, with "+<policy>/<version>" appended for each file applied
// over it, e.g. "piledger-default/2026.1+acme/7".
func (p *Policy) Version() string { return p.version }

// Digest is the hex SHA-256 of every active rule in order. It changes
// whenever a rule is added, removed, reordered or changed; the projector
// stores it and rebuilds the read models from the log when it changes, so
// findings always follow the policy in force.
func (p *Policy) Digest() string { return p.digest }

// Rules returns the active rules in order: the default pack's in its file
// order, overridden ones in place, new ones after in the order their files
// define them.
func (p *Policy) Rules() []*Rule {
	out := make([]*Rule, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.Rule
	}
	return out
}

// EvalErrors returns, for every active rule, how many evaluations failed at
// run time since the policy was loaded (a failed evaluation counts as no
// match). Safe for concurrent use.
func (p *Policy) EvalErrors() map[string]uint64 {
	out := make(map[string]uint64, len(p.rules))
	for i, r := range p.rules {
		out[r.Name] = p.errs[i].Load()
	}
	return out
}

// invalid returns an error wrapping ErrInvalidPolicy that names the file,
// the line (if known) and the rule (if any).
func invalid(file string, line int, rule, format string, args ...any) error {
	var b strings.Builder
	b.WriteString(file)
	if line > 0 {
		fmt.Fprintf(&b, ":%d", line)
	}
	if rule != "" {
		fmt.Fprintf(&b, ": rule %q", rule)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalidPolicy, b.String(), fmt.Sprintf(format, args...))
}
