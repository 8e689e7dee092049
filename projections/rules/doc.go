// Package rules is the policy: named rules in CEL, loaded from YAML, that
// the projector evaluates on every event and holding to raise findings.
//
// A policy is the default pack shipped with the binary (default.yaml) with
// the operator's files applied over it in order (Load). Each rule has a
// severity, the legal provision it enforces, a scope and a CEL condition
// that must evaluate to bool. Rules are checked when they are loaded: the
// YAML shape, names, severities, scopes, operations, and the condition,
// which must compile in its scope, read only keys its variables have and
// evaluate to a bool on a fully populated sample input. Any fault is an
// error wrapping ErrInvalidPolicy that names the file, the rule and the
// problem, and never holds event data.
//
// Evaluation depends only on its inputs, so findings are a function of the
// log and the policy: a rebuild raises the same ones. The scopes:
//
//   - ScopeEvent: once per event, with the variables event, subject,
//     holdings, consents and now (the event's occurred time);
//   - ScopeEventHolding: once per holding the subject had at the event's
//     processor before the event, with holding bound as well;
//   - ScopeHolding: on one holding (when it is destroyed, and at query time
//     for open holdings past their deadline), with holding and now.
//
// The variables are CEL maps with string keys; every key is always present,
// with a zero value ("", false, 0, duration("0s"), timestamp(0)) when the
// input says nothing. docs/RULES.md lists them.
//
// A Policy is immutable and safe for concurrent use.
package rules
