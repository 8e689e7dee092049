package ledger

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// vocabularyJSON is the vocabulary shipped with the binary. Changing a term's
// meaning changes how recorded events are read: add terms, never repurpose
// one.
//
//go:embed vocabulary.json
var vocabularyJSON []byte

// dpvNamespace is the namespace of every W3C DPV term IRI.
const dpvNamespace = "https://w3id.org/dpv#"

// Sensitive classes: the kinds of sensitive personal information of PIPL
// Art. 28, plus identity documents, which GB/T 35273-2020 Annex B lists as
// sensitive (Art. 28's list is open: "等").
const (
	ClassBiometric        = "biometric"
	ClassReligiousBelief  = "religious-belief"
	ClassSpecificIdentity = "specific-identity"
	ClassMedicalHealth    = "medical-health"
	ClassFinancialAccount = "financial-account"
	ClassWhereabouts      = "whereabouts"
	ClassMinorUnder14     = "minor-under-14"
	ClassIdentityDocument = "identity-document"
)

var sensitiveClasses = map[string]bool{
	ClassBiometric: true, ClassReligiousBelief: true, ClassSpecificIdentity: true,
	ClassMedicalHealth: true, ClassFinancialAccount: true, ClassWhereabouts: true,
	ClassMinorUnder14: true, ClassIdentityDocument: true,
}

var (
	// termIDPattern is the form of a vocabulary term id: lowercase kebab-case.
	termIDPattern = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	// extensionPattern is the form of an extension term: "x-", a namespace
	// of 1-32 and a term of 1-64 characters from [a-z0-9-], each starting
	// with a letter or digit.
	extensionPattern = regexp.MustCompile(`^x-[a-z0-9][a-z0-9-]{0,31}\.[a-z0-9][a-z0-9-]{0,63}$`)
)

// maxTermIDLength bounds the id of a vocabulary term.
const maxTermIDLength = 64

// Term is what every vocabulary entry has.
type Term struct {
	// ID is the term's identifier as events carry it, e.g. "face".
	ID string `json:"id"`
	// Label is the English label.
	Label string `json:"label"`
	// LabelZH is the Chinese label; empty where none is natural.
	LabelZH string `json:"labelZh,omitempty"`
	// LegalRef names the legal text the term comes from, e.g.
	// "PIPL Art. 28". Empty for extension terms.
	LegalRef string `json:"legalRef"`
	// Extension is true for an extension term ("x-<namespace>.<term>"),
	// which the vocabulary does not define; its Label is its ID.
	Extension bool `json:"-"`
}

// Category is a kind of personal information, such as "face" or "phone".
type Category struct {
	Term
	// Sensitive is true for sensitive personal information (PIPL Art. 28),
	// which needs separate consent (Art. 29) or another basis, and a
	// stated purpose and necessity. Never true for extension categories.
	Sensitive bool `json:"sensitive,omitempty"`
	// SensitiveClass is one of the Class* constants when Sensitive is true,
	// empty otherwise.
	SensitiveClass string `json:"sensitiveClass,omitempty"`
}

// Purpose is why data is processed, such as "public-safety".
type Purpose struct {
	Term
}

// LegalBasis is one of the legal bases of PIPL Art. 13(1)-(7).
type LegalBasis struct {
	Term
}

// PlaceKind is a kind of place where images or identity-recognition data may
// be captured.
type PlaceKind struct {
	Term
	// Prohibited is true for private areas where capture equipment must not
	// be installed at all (hotel rooms, dormitories, toilets...). An event
	// recording capture there is still valid; it raises a finding.
	Prohibited bool `json:"prohibited,omitempty"`
	// Public is true for places open to the unspecified public for their
	// use (PIPL Art. 26): streets, squares, transport hubs, shops, the
	// public areas of hospitals. The common areas of a residential
	// compound are not public: a compound is a private place whose common
	// parts are incidental to it.
	Public bool `json:"public,omitempty"`
}

// OperationTerm describes an Operation.
type OperationTerm struct {
	Term
	// Operation is the enum value described.
	Operation piledgerv1.Operation `json:"-"`
	// DPV is the IRI of the W3C Data Privacy Vocabulary term for the
	// operation, e.g. "https://w3id.org/dpv#Collect".
	DPV string `json:"dpv"`
}

// Vocabulary is the set of terms events may use: data categories, purposes,
// legal bases, place kinds, and the DPV term of every operation. A
// Vocabulary is immutable and safe for concurrent use; lookups return
// copies.
type Vocabulary struct {
	categories map[string]Category
	purposes   map[string]Purpose
	legalBases map[string]LegalBasis
	placeKinds map[string]PlaceKind
	operations map[piledgerv1.Operation]OperationTerm
}

var defaultVocabulary = sync.OnceValue(func() *Vocabulary {
	v, err := parseVocabulary(vocabularyJSON)
	if err != nil {
		// Unreachable in a released binary: TestDefaultVocabulary parses
		// the embedded file.
		panic(err)
	}
	return v
})

// DefaultVocabulary returns the vocabulary shipped with the binary. It is
// parsed on first use and shared; it never panics in a binary whose tests
// passed (the embedded file is checked by the package tests).
func DefaultVocabulary() *Vocabulary { return defaultVocabulary() }

// IsExtensionTerm reports whether id has the extension form
// "x-<namespace>.<term>": namespace 1-32 and term 1-64 characters of
// [a-z0-9-], each starting with a letter or digit, e.g. "x-acme.loyalty-id".
func IsExtensionTerm(id string) bool { return extensionPattern.MatchString(id) }

func extensionTerm(id string) Term { return Term{ID: id, Label: id, Extension: true} }

// Category returns the data category id. ok is false when id is neither a
// vocabulary category nor a well-formed extension term; an extension
// category is returned with Extension set and is never sensitive.
func (v *Vocabulary) Category(id string) (c Category, ok bool) {
	if c, ok := v.categories[id]; ok {
		return c, true
	}
	if IsExtensionTerm(id) {
		return Category{Term: extensionTerm(id)}, true
	}
	return Category{}, false
}

// IsSensitive reports whether categoryID is a sensitive category of the
// vocabulary. Unknown and extension categories are not sensitive.
func (v *Vocabulary) IsSensitive(categoryID string) bool {
	return v.categories[categoryID].Sensitive
}

// Purpose returns the purpose id. ok is false when id is neither a
// vocabulary purpose nor a well-formed extension term.
func (v *Vocabulary) Purpose(id string) (p Purpose, ok bool) {
	if p, ok := v.purposes[id]; ok {
		return p, true
	}
	if IsExtensionTerm(id) {
		return Purpose{Term: extensionTerm(id)}, true
	}
	return Purpose{}, false
}

// LegalBasis returns the legal basis id. Legal bases are closed: there are
// no extension legal bases.
func (v *Vocabulary) LegalBasis(id string) (LegalBasis, bool) {
	b, ok := v.legalBases[id]
	return b, ok
}

// PlaceKind returns the place kind id. Place kinds are closed: whether
// capture is prohibited must be known, so there are no extension kinds.
func (v *Vocabulary) PlaceKind(id string) (PlaceKind, bool) {
	k, ok := v.placeKinds[id]
	return k, ok
}

// Operation returns the description of op; ok is false for
// OPERATION_UNSPECIFIED and values the vocabulary does not know.
func (v *Vocabulary) Operation(op piledgerv1.Operation) (OperationTerm, bool) {
	t, ok := v.operations[op]
	return t, ok
}

// DPVTerm returns the W3C DPV term IRI of op, such as
// "https://w3id.org/dpv#Collect", or "" for OPERATION_UNSPECIFIED and
// unknown values.
func (v *Vocabulary) DPVTerm(op piledgerv1.Operation) string {
	return v.operations[op].DPV
}

// vocabularyFile is the layout of vocabulary.json.
type vocabularyFile struct {
	Version    int          `json:"version"`
	Categories []Category   `json:"categories"`
	Purposes   []Purpose    `json:"purposes"`
	LegalBases []LegalBasis `json:"legalBases"`
	PlaceKinds []PlaceKind  `json:"placeKinds"`
	Operations []struct {
		OperationTerm
		Name string `json:"operation"`
	} `json:"operations"`
}

// parseVocabulary decodes and checks a vocabulary file: unknown fields,
// malformed or duplicate ids, missing labels or legal references,
// inconsistent sensitivity, and operations not mapped exactly once to a DPV
// term are errors.
func parseVocabulary(data []byte) (*Vocabulary, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f vocabularyFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("ledger: vocabulary: %w", err)
	}
	if dec.More() {
		return nil, errors.New("ledger: vocabulary: trailing data")
	}
	var errs []error
	if f.Version != 1 {
		errs = append(errs, fmt.Errorf("unsupported version %d", f.Version))
	}
	seen := map[string]bool{} // "kind/id": ids are unique within a kind
	check := func(kind string, t Term) {
		switch {
		case len(t.ID) > maxTermIDLength || !termIDPattern.MatchString(t.ID):
			errs = append(errs, fmt.Errorf("%s %q: id must be kebab-case [a-z0-9-], at most %d characters", kind, t.ID, maxTermIDLength))
		case strings.HasPrefix(t.ID, "x-"):
			errs = append(errs, fmt.Errorf("%s %q: the x- prefix is reserved for extensions", kind, t.ID))
		case seen[kind+"/"+t.ID]:
			errs = append(errs, fmt.Errorf("%s %q: duplicate id", kind, t.ID))
		}
		seen[kind+"/"+t.ID] = true
		if t.Label == "" || t.LegalRef == "" {
			errs = append(errs, fmt.Errorf("%s %q: label and legalRef are required", kind, t.ID))
		}
	}
	v := &Vocabulary{
		categories: map[string]Category{},
		purposes:   map[string]Purpose{},
		legalBases: map[string]LegalBasis{},
		placeKinds: map[string]PlaceKind{},
		operations: map[piledgerv1.Operation]OperationTerm{},
	}
	for _, c := range f.Categories {
		check("category", c.Term)
		if c.Sensitive != sensitiveClasses[c.SensitiveClass] {
			errs = append(errs, fmt.Errorf("category %q: a sensitive category needs a known sensitiveClass, others none", c.ID))
		}
		v.categories[c.ID] = c
	}
	for _, p := range f.Purposes {
		check("purpose", p.Term)
		v.purposes[p.ID] = p
	}
	for _, b := range f.LegalBases {
		check("legal basis", b.Term)
		v.legalBases[b.ID] = b
	}
	for _, k := range f.PlaceKinds {
		check("place kind", k.Term)
		v.placeKinds[k.ID] = k
	}
	for _, o := range f.Operations {
		check("operation", o.Term)
		n, known := piledgerv1.Operation_value[o.Name]
		op := piledgerv1.Operation(n)
		switch {
		case !known || op == piledgerv1.Operation_OPERATION_UNSPECIFIED:
			errs = append(errs, fmt.Errorf("operation %q: not a valid Operation", o.Name))
			continue
		case v.operations[op].DPV != "":
			errs = append(errs, fmt.Errorf("operation %q: mapped twice", o.Name))
		case !strings.HasPrefix(o.DPV, dpvNamespace) || len(o.DPV) == len(dpvNamespace):
			errs = append(errs, fmt.Errorf("operation %q: dpv must be an IRI in %s", o.Name, dpvNamespace))
		}
		t := o.OperationTerm
		t.Operation = op
		v.operations[op] = t
	}
	for _, n := range slices.Sorted(maps.Keys(piledgerv1.Operation_name)) {
		if op := piledgerv1.Operation(n); op != piledgerv1.Operation_OPERATION_UNSPECIFIED && v.operations[op].DPV == "" {
			errs = append(errs, fmt.Errorf("operation %s: no DPV term", op))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ledger: vocabulary: %w", err)
	}
	return v, nil
}
