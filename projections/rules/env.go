package rules

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/ext"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The CEL environments, one per scope: a rule may use only the variables
// of its scope. Every variable is a map with string keys (or a list of
// them), typed map(string, dyn): the keys are checked against the sample
// input when a rule is loaded (checkSelects), not by the type checker.
var (
	recordType = cel.MapType(cel.StringType, cel.DynType)
	listType   = cel.ListType(recordType)

	scopeVars = map[Scope][]string{
		ScopeEvent:        {"event", "subject", "holdings", "consents", "now"},
		ScopeEventHolding: {"event", "subject", "holdings", "consents", "holding", "now"},
		ScopeHolding:      {"holding", "now"},
	}
	varTypes = map[string]*cel.Type{
		"event":    recordType,
		"subject":  recordType,
		"holdings": listType,
		"consents": listType,
		"holding":  recordType,
		"now":      cel.TimestampType,
	}
)

// envs returns the environment of each scope, built once.
var envs = sync.OnceValues(func() (map[Scope]*cel.Env, error) {
	out := map[Scope]*cel.Env{}
	for scope, names := range scopeVars {
		opts := []cel.EnvOption{ext.Strings(), ext.Sets()}
		for _, n := range names {
			opts = append(opts, cel.Variable(n, varTypes[n]))
		}
		env, err := cel.NewEnv(opts...)
		if err != nil {
			return nil, fmt.Errorf("rules: %s environment: %w", scope, err)
		}
		out[scope] = env
	}
	return out, nil
})

// compile compiles a condition in its scope and checks it: it must parse,
// type-check to bool (or dyn), read only the keys its variables have, and
// evaluate to a bool without error on the scope's sample input. The error
// names the problem, with line:col in the condition; it never holds event
// data (the sample is made up).
func compile(scope Scope, condition string) (cel.Program, error) {
	all, err := envs()
	if err != nil {
		return nil, err
	}
	ast, iss := all[scope].Compile(condition)
	if iss.Err() != nil {
		err := issuesError(iss.Errors())
		if strings.Contains(err.Error(), "undeclared reference") {
			err = fmt.Errorf("%w (the variables of scope %s are %s)", err, scope, strings.Join(scopeVars[scope], ", "))
		}
		return nil, err
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("condition: evaluates to %s, want bool", t)
	}
	s := sampleFor(scope)
	if errs := checkSelects(ast.NativeRep(), s.shapes); len(errs) > 0 {
		return nil, issuesError(errs)
	}
	prg, err := all[scope].Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("condition: %w", err)
	}
	act := s.activation()
	out, _, err := prg.Eval(act)
	switch {
	case err != nil:
		return nil, fmt.Errorf("condition: fails on a sample input: %w", err)
	case !isBool(out):
		return nil, fmt.Errorf("condition: evaluates to %s on a sample input, want bool", out.Type().TypeName())
	}
	return prg, nil
}

func isBool(v ref.Val) bool {
	_, ok := v.(types.Bool)
	return ok
}

// issuesError joins CEL issues as "condition line:col: message".
func issuesError(errs []*cel.Error) error {
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		msgs = append(msgs, fmt.Sprintf("condition %d:%d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
	}
	return errors.New(strings.Join(msgs, "; "))
}

// A shape is what the key check knows of a value: the keys of a record (a
// map whose keys are fixed) or, for a list of records, the shape of its
// elements. A nil shape is a value whose keys are not checked (a scalar, a
// list of strings, event.attributes).
type shape struct {
	keys map[string]*shape
	elem *shape
}

// shapeOf derives the shape of a variable value from its sample.
func shapeOf(v any) *shape {
	switch v := v.(type) {
	case keyed:
		s := &shape{keys: make(map[string]*shape, len(v.keyNames()))}
		for _, k := range v.keyNames() {
			s.keys[k] = shapeOf(v.value(k))
		}
		return s
	case traits.Lister:
		if v.Size() != types.IntZero {
			return &shape{elem: shapeOf(v.Get(types.IntZero))}
		}
	}
	return nil
}

// checkSelects reports every key a condition selects (r.key, has(r.key),
// r["key"]) on a record that does not have it, anywhere in the condition,
// including branches the sample evaluation would not reach and the bodies
// of comprehensions over lists of records (holdings.exists(h, h.key)).
func checkSelects(a *celast.AST, vars map[string]*shape) []*cel.Error {
	var errs []*cel.Error
	info := a.SourceInfo()
	report := func(id int64, key string, s *shape) {
		errs = append(errs, &cel.Error{
			Location: info.GetStartLocation(id),
			ExprID:   id,
			Message:  fmt.Sprintf("no key %q (the keys are %s)", key, strings.Join(slices.Sorted(maps.Keys(s.keys)), ", ")),
		})
	}
	key := func(s *shape, k string, id int64) *shape {
		if s == nil || s.keys == nil {
			return nil
		}
		sub, ok := s.keys[k]
		if !ok {
			report(id, k, s)
		}
		return sub
	}
	var walk func(e celast.Expr, vars map[string]*shape) *shape
	walk = func(e celast.Expr, vars map[string]*shape) *shape {
		switch e.Kind() {
		case celast.IdentKind:
			return vars[e.AsIdent()]
		case celast.SelectKind:
			sel := e.AsSelect()
			return key(walk(sel.Operand(), vars), sel.FieldName(), e.ID())
		case celast.CallKind:
			call := e.AsCall()
			if call.IsMemberFunction() {
				walk(call.Target(), vars)
			}
			args := call.Args()
			shapes := make([]*shape, len(args))
			for i, arg := range args {
				shapes[i] = walk(arg, vars)
			}
			if call.FunctionName() != operators.Index || len(args) != 2 || shapes[0] == nil {
				return nil
			}
			if args[1].Kind() == celast.LiteralKind {
				if k, ok := args[1].AsLiteral().(types.String); ok {
					return key(shapes[0], string(k), args[1].ID())
				}
			}
			return shapes[0].elem // list[i]
		case celast.ComprehensionKind:
			c := e.AsComprehension()
			r := walk(c.IterRange(), vars)
			walk(c.AccuInit(), vars)
			inner := maps.Clone(vars)
			inner[c.AccuVar()] = nil
			var elem *shape
			if r != nil {
				elem = r.elem
			}
			if c.HasIterVar2() {
				inner[c.IterVar()], inner[c.IterVar2()] = nil, elem
			} else {
				inner[c.IterVar()] = elem
			}
			walk(c.LoopCondition(), inner)
			walk(c.LoopStep(), inner)
			walk(c.Result(), inner)
		case celast.ListKind:
			for _, x := range e.AsList().Elements() {
				walk(x, vars)
			}
		case celast.MapKind:
			for _, entry := range e.AsMap().Entries() {
				walk(entry.AsMapEntry().Key(), vars)
				walk(entry.AsMapEntry().Value(), vars)
			}
		case celast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value(), vars)
			}
		}
		return nil
	}
	walk(a.Expr(), vars)
	return errs
}

// sample is the fully populated input of a scope that every condition is
// evaluated on when it is loaded, and the shapes of its variables.
type sample struct {
	scope    Scope
	entry    *piledgerv1.LogEntry
	holdings []*piledgerv1.Holding
	consents []*piledgerv1.Event
	shapes   map[string]*shape
}

// activation returns a fresh activation over the sample.
func (s *sample) activation() *activation {
	if s.scope == ScopeHolding {
		return holdingActivation(s.holdings[0], sampleTime)
	}
	a := eventActivation(s.entry, EventInput{
		Holdings: func() ([]*piledgerv1.Holding, error) { return s.holdings, nil },
		Consents: func() ([]*piledgerv1.Event, error) { return s.consents, nil },
	})
	if s.scope == ScopeEventHolding {
		a.holding = holdingKind.of(s.holdings[0])
	}
	return a
}

var sampleTime = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// sampleFor returns the sample of a scope. Every field the variables are
// built from is set, so every key has a value of its type.
func sampleFor(scope Scope) *sample { return samples()[scope] }

var samples = sync.OnceValue(func() map[Scope]*sample {
	at := timestamppb.New(sampleTime)
	later := timestamppb.New(sampleTime.Add(40 * 24 * time.Hour))
	retention := &piledgerv1.Retention{
		KeepFor: durationpb.New(90 * 24 * time.Hour), KeepUntil: later,
		Minimum: durationpb.New(30 * 24 * time.Hour), UntilPurposeEnds: "public-safety",
	}
	consent := &piledgerv1.Consent{Separate: true, Reference: "sample-consent"}
	entry := &piledgerv1.LogEntry{
		Index: 7,
		Header: &piledgerv1.EnvelopeHeader{
			Version: 1, EventId: "sample-event", Pseudonym: "sample-pseudonym",
			Operation: piledgerv1.Operation_OPERATION_COLLECT, Processor: "sample-processor",
			RecordedAt: at, KeyGeneration: 1,
		},
		Event: &piledgerv1.Event{
			EventId: "sample-event", Operation: piledgerv1.Operation_OPERATION_COLLECT,
			OccurredAt: at, Processor: "sample-processor", System: "sample-system",
			DataCategories: []string{"face", "name"}, Purpose: "public-safety", LegalBasis: "legal-duty",
			Consent: consent, Retention: retention,
			Recipient:  &piledgerv1.Recipient{Processor: "sample-recipient", Country: "HK", System: "sample-archive"},
			Place:      &piledgerv1.Place{Kind: "public-street", NoticeSignRef: "sample-sign", LocationRef: "sample-location"},
			Access:     &piledgerv1.Access{Actor: "sample-actor", Reason: "sample-reason", Kind: piledgerv1.AccessKind_ACCESS_KIND_VIEW},
			Attributes: map[string]string{"sample": "value"},
		},
	}
	holding := &piledgerv1.Holding{
		Name: "subjects/sample/holdings/7-0", Processor: "sample-processor", System: "sample-system",
		DataCategory: "face", Sensitive: true, ObtainTime: at, Purpose: "public-safety", LegalBasis: "consent",
		Consent: consent, Provenance: piledgerv1.Provenance_PROVENANCE_COLLECTED,
		SourceProcessor: "sample-source", SourceSystem: "sample-source-system", Country: "CN",
		PlaceKind: "public-street", SourceEventId: "sample-event", SourceIndex: 7, Retention: retention,
		State: piledgerv1.HoldingState_HOLDING_STATE_DESTROYED, DestroyDueTime: later,
		DeadlineBasis: piledgerv1.DeadlineBasis_DEADLINE_BASIS_KEEP_UNTIL, EarliestDestroyTime: later,
		DestroyTime: later, DestroyEventId: "sample-destroy", DiscloseTime: at, DiscloseEventId: "sample-disclose",
		ConsentWithdrawTime: at, ConsentWithdrawEventId: "sample-withdraw",
		PurposeEndTime: at, PurposeEndEventId: "sample-purpose-end",
	}
	granted := &piledgerv1.Event{
		EventId: "sample-consent", Operation: piledgerv1.Operation_OPERATION_CONSENT_GRANTED, OccurredAt: at,
		Processor: "sample-processor", DataCategories: []string{"face"}, Purpose: "public-safety", Consent: consent,
	}
	out := map[Scope]*sample{}
	for scope := range scopeVars {
		s := &sample{scope: scope, entry: entry, holdings: []*piledgerv1.Holding{holding}, consents: []*piledgerv1.Event{granted}}
		a := s.activation()
		s.shapes = map[string]*shape{}
		for _, name := range scopeVars[scope] {
			v, _ := a.ResolveName(name)
			s.shapes[name] = shapeOf(v)
		}
		out[scope] = s
	}
	return out
})
