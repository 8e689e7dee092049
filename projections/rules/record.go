package rules

import (
	"reflect"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// A record is a CEL map with a fixed set of string keys, computed from a
// source value (a proto message) key by key as conditions read them: an
// event's record costs one allocation until a rule reads it, and a key no
// rule reads is never computed. Every key always has a value. Whole-map
// operations (equality, conversion) work on a copy made on first need;
// iteration visits the keys in their fixed order. A record is used by one
// evaluation call at a time.
type record[T any] struct {
	kind *recordKind[T]
	src  T
	vals []ref.Val     // computed values, by field position
	full traits.Mapper // every key, made on first need
}

// recordKind is the fixed key set of a kind of record and how each value
// is computed.
type recordKind[T any] struct {
	fields []field[T]
	index  map[string]int
	names  []string
	keys   traits.Lister // names as a CEL list, for iteration
}

// field is one key of a record kind: get never returns nil.
type field[T any] struct {
	name string
	get  func(T) ref.Val
}

func newKind[T any](fields ...field[T]) *recordKind[T] {
	k := &recordKind[T]{fields: fields, index: make(map[string]int, len(fields))}
	for i, f := range fields {
		k.index[f.name] = i
		k.names = append(k.names, f.name)
	}
	k.keys = types.NewStringList(types.DefaultTypeAdapter, k.names)
	return k
}

// of returns the record of src.
func (k *recordKind[T]) of(src T) *record[T] { return &record[T]{kind: k, src: src} }

// keyed is what the key check and the tests see of a record of any kind.
type keyed interface {
	traits.Mapper
	keyNames() []string
	value(name string) ref.Val
}

var _ keyed = (*record[any])(nil)

func (r *record[T]) keyNames() []string { return r.kind.names }

func (r *record[T]) value(name string) ref.Val {
	v, _ := r.Find(types.String(name))
	return v
}

func (r *record[T]) at(i int) ref.Val {
	if r.vals == nil {
		r.vals = make([]ref.Val, len(r.kind.fields))
	}
	v := r.vals[i]
	if v == nil {
		v = r.kind.fields[i].get(r.src)
		r.vals[i] = v
	}
	return v
}

// Find implements traits.Mapper.
func (r *record[T]) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		if types.IsUnknownOrError(key) {
			return key, false
		}
		return nil, false
	}
	i, ok := r.kind.index[string(k)]
	if !ok {
		return nil, false
	}
	return r.at(i), true
}

// Get implements traits.Indexer.
func (r *record[T]) Get(key ref.Val) ref.Val {
	v, found := r.Find(key)
	if !found {
		return types.ValOrErr(v, "no such key: %v", key)
	}
	return v
}

// Contains implements traits.Container.
func (r *record[T]) Contains(key ref.Val) ref.Val {
	v, found := r.Find(key)
	if !found && v != nil {
		return v // an error or unknown key
	}
	return types.Bool(found)
}

// Iterator implements traits.Iterable: the keys in their fixed order.
func (r *record[T]) Iterator() traits.Iterator { return r.kind.keys.Iterator() }

// Size implements traits.Sizer.
func (r *record[T]) Size() ref.Val { return types.Int(len(r.kind.fields)) }

// ConvertToNative implements ref.Val.
func (r *record[T]) ConvertToNative(t reflect.Type) (any, error) {
	return r.materialize().ConvertToNative(t)
}

// ConvertToType implements ref.Val.
func (r *record[T]) ConvertToType(t ref.Type) ref.Val { return r.materialize().ConvertToType(t) }

// Equal implements ref.Val.
func (r *record[T]) Equal(other ref.Val) ref.Val { return r.materialize().Equal(other) }

// Type implements ref.Val.
func (r *record[T]) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (r *record[T]) Value() any { return r.materialize().Value() }

func (r *record[T]) materialize() traits.Mapper {
	if r.full == nil {
		m := make(map[string]any, len(r.kind.fields))
		for i, f := range r.kind.fields {
			m[f.name] = r.at(i)
		}
		r.full = types.NewStringInterfaceMap(types.DefaultTypeAdapter, m)
	}
	return r.full
}
