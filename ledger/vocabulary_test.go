package ledger

import (
	"strings"
	"testing"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

func TestVocabularyEmbeddedFileParses(t *testing.T) {
	if _, err := parseVocabulary(vocabularyJSON); err != nil {
		t.Fatalf("embedded vocabulary.json: %v", err)
	}
	v := DefaultVocabulary()
	if v == nil || v != DefaultVocabulary() {
		t.Fatal("DefaultVocabulary must return one shared vocabulary")
	}
}

func TestVocabularyDPVTerms(t *testing.T) {
	v := DefaultVocabulary()
	want := map[piledgerv1.Operation]string{
		piledgerv1.Operation_OPERATION_COLLECT:           "Collect",
		piledgerv1.Operation_OPERATION_STORE:             "Store",
		piledgerv1.Operation_OPERATION_USE:               "Use",
		piledgerv1.Operation_OPERATION_PROCESS:           "Transform",
		piledgerv1.Operation_OPERATION_TRANSMIT:          "Transmit",
		piledgerv1.Operation_OPERATION_PROVIDE:           "Share",
		piledgerv1.Operation_OPERATION_ENTRUST:           "Share",
		piledgerv1.Operation_OPERATION_DISCLOSE:          "Disseminate",
		piledgerv1.Operation_OPERATION_TRANSFER_ABROAD:   "CrossBorderTransfer",
		piledgerv1.Operation_OPERATION_DESTROY:           "Destruct",
		piledgerv1.Operation_OPERATION_ACCESS:            "Access",
		piledgerv1.Operation_OPERATION_CONSENT_GRANTED:   "ConsentGiven",
		piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN: "ConsentWithdrawn",
		piledgerv1.Operation_OPERATION_PURPOSE_ENDED:     "ActivityCompleted",
	}
	for n := range piledgerv1.Operation_name {
		op := piledgerv1.Operation(n)
		if op == piledgerv1.Operation_OPERATION_UNSPECIFIED {
			continue
		}
		if _, ok := want[op]; !ok {
			t.Errorf("%s: missing from this test", op)
		}
	}
	for op, term := range want {
		if got := v.DPVTerm(op); got != "https://w3id.org/dpv#"+term {
			t.Errorf("DPVTerm(%s) = %q, want dpv:%s", op, got, term)
		}
		ot, ok := v.Operation(op)
		if !ok || ot.Operation != op || ot.ID == "" || ot.Label == "" || ot.LabelZH == "" || ot.LegalRef == "" {
			t.Errorf("Operation(%s) = %+v, %v", op, ot, ok)
		}
	}
	for _, op := range []piledgerv1.Operation{piledgerv1.Operation_OPERATION_UNSPECIFIED, 99, -1} {
		if got := v.DPVTerm(op); got != "" {
			t.Errorf("DPVTerm(%d) = %q, want empty", op, got)
		}
		if _, ok := v.Operation(op); ok {
			t.Errorf("Operation(%d) ok, want not found", op)
		}
	}
}

func TestVocabularyCategories(t *testing.T) {
	v := DefaultVocabulary()
	tests := []struct {
		id        string
		ok        bool
		sensitive bool
		class     string
	}{
		{"face", true, true, ClassBiometric},
		{"fingerprint", true, true, ClassBiometric},
		{"iris", true, true, ClassBiometric},
		{"voiceprint", true, true, ClassBiometric},
		{"gait", true, true, ClassBiometric},
		{"religious-belief", true, true, ClassReligiousBelief},
		{"specific-identity", true, true, ClassSpecificIdentity},
		{"medical-health", true, true, ClassMedicalHealth},
		{"health-code-status", true, true, ClassMedicalHealth},
		{"nucleic-acid-test-result", true, true, ClassMedicalHealth},
		{"bank-account", true, true, ClassFinancialAccount},
		{"payment-account", true, true, ClassFinancialAccount},
		{"location", true, true, ClassWhereabouts},
		{"trajectory", true, true, ClassWhereabouts},
		{"travel-history", true, true, ClassWhereabouts},
		{"minor-under-14", true, true, ClassMinorUnder14},
		{"id-number", true, true, ClassIdentityDocument},
		{"name", true, false, ""},
		{"phone", true, false, ""},
		{"email", true, false, ""},
		{"address", true, false, ""},
		{"license-plate", true, false, ""},
		{"video-footage", true, false, ""},
		{"x-acme.loyalty-id", true, false, ""},
		{"x-acme.face", true, false, ""}, // extensions are never sensitive
		{"Face", false, false, ""},
		{"unknown-thing", false, false, ""},
		{"", false, false, ""},
	}
	for _, tt := range tests {
		c, ok := v.Category(tt.id)
		if ok != tt.ok || c.Sensitive != tt.sensitive || c.SensitiveClass != tt.class {
			t.Errorf("Category(%q) = %+v, %v; want ok=%v sensitive=%v class=%q", tt.id, c, ok, tt.ok, tt.sensitive, tt.class)
		}
		if ok && c.ID != tt.id {
			t.Errorf("Category(%q).ID = %q", tt.id, c.ID)
		}
		if ok && c.Extension != strings.HasPrefix(tt.id, "x-") {
			t.Errorf("Category(%q).Extension = %v", tt.id, c.Extension)
		}
		if got := v.IsSensitive(tt.id); got != tt.sensitive {
			t.Errorf("IsSensitive(%q) = %v, want %v", tt.id, got, tt.sensitive)
		}
	}

	// Every class of PIPL Art. 28 has at least one category.
	classes := map[string]bool{}
	for _, c := range v.categories {
		classes[c.SensitiveClass] = true
	}
	for class := range sensitiveClasses {
		if !classes[class] {
			t.Errorf("no category of sensitive class %q", class)
		}
	}
}

func TestVocabularyPurposesAndLegalBases(t *testing.T) {
	v := DefaultVocabulary()
	for _, id := range []string{"public-safety", "epidemic-prevention", "access-control", "marketing",
		"service-provision", "contract-performance", "hr-management", "legal-obligation", "research", "x-acme.loyalty"} {
		if p, ok := v.Purpose(id); !ok || p.ID != id {
			t.Errorf("Purpose(%q) = %+v, %v", id, p, ok)
		}
	}
	for _, id := range []string{"", "Marketing", "x-.marketing", "fun"} {
		if _, ok := v.Purpose(id); ok {
			t.Errorf("Purpose(%q) ok, want unknown", id)
		}
	}

	bases := []string{"consent", "contract-or-hr", "legal-duty", "public-health-emergency",
		"news-public-interest", "publicly-disclosed", "other-law"}
	for i, id := range bases {
		b, ok := v.LegalBasis(id)
		want := "PIPL Art. 13(" + string(rune('1'+i)) + ")"
		if !ok || b.LegalRef != want || b.Label == "" || b.LabelZH == "" {
			t.Errorf("LegalBasis(%q) = %+v, %v; want legalRef %q", id, b, ok, want)
		}
	}
	if len(v.legalBases) != len(bases) {
		t.Errorf("vocabulary has %d legal bases, want the %d of PIPL Art. 13", len(v.legalBases), len(bases))
	}
	if _, ok := v.LegalBasis("x-acme.legitimate-interest"); ok {
		t.Error("extension legal bases must be rejected")
	}
}

func TestVocabularyPlaceKinds(t *testing.T) {
	v := DefaultVocabulary()
	tests := map[string]bool{
		"public-street": false, "public-square": false, "transport-hub": false, "shop": false,
		"residential-compound": false, "office": false, "school": false, "hospital": false,
		"hotel-room": true, "dormitory": true, "bath": true, "toilet": true, "fitting-room": true,
		"changing-room": true, "private-compartment": true, "nursing-room": true,
	}
	for id, prohibited := range tests {
		k, ok := v.PlaceKind(id)
		if !ok || k.Prohibited != prohibited || k.LegalRef == "" {
			t.Errorf("PlaceKind(%q) = %+v, %v; want prohibited=%v", id, k, ok, prohibited)
		}
	}
	if _, ok := v.PlaceKind("x-acme.basement"); ok {
		t.Error("extension place kinds must be rejected")
	}
}

func TestVocabularyExtensionTerms(t *testing.T) {
	tests := map[string]bool{
		"x-acme.loyalty-id":                   true,
		"x-a.b":                               true,
		"x-0.9":                               true,
		"x-" + strings.Repeat("n", 32) + ".t": true,
		"x-n." + strings.Repeat("t", 64):      true,
		"x-" + strings.Repeat("n", 33) + ".t": false,
		"x-n." + strings.Repeat("t", 65):      false,
		"x-acme":                              false,
		"x-acme.":                             false,
		"x-.term":                             false,
		"x-Acme.term":                         false,
		"x-acme.Term":                         false,
		"x-acme.te_rm":                        false,
		"x-acme.te.rm":                        false,
		"x--acme.term":                        false,
		"x-acme.-term":                        false,
		"y-acme.term":                         false,
		"acme.term":                           false,
		"x-acme.term\n":                       false,
		"":                                    false,
	}
	for id, want := range tests {
		if got := IsExtensionTerm(id); got != want {
			t.Errorf("IsExtensionTerm(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestVocabularyParseRejects(t *testing.T) {
	// ops is a valid operations array, so each case breaks one thing.
	var ops strings.Builder
	for n := 1; n < len(piledgerv1.Operation_name); n++ {
		if n > 1 {
			ops.WriteString(",")
		}
		op := piledgerv1.Operation(n)
		ops.WriteString(`{"operation":"` + op.String() + `","id":"op-` + string(rune('a'+n)) + `","dpv":"https://w3id.org/dpv#X","label":"L","legalRef":"R"}`)
	}
	valid := `{"version":1,"categories":[%C],"purposes":[],"legalBases":[],"placeKinds":[],"operations":[` + ops.String() + `]}`
	with := func(cats string) string { return strings.Replace(valid, "%C", cats, 1) }
	if _, err := parseVocabulary([]byte(with(`{"id":"name","label":"Name","legalRef":"PIPL Art. 4"}`))); err != nil {
		t.Fatalf("baseline vocabulary rejected: %v", err)
	}
	tests := map[string]string{
		"not json":                `{`,
		"unknown field":           with(`{"id":"name","label":"Name","legalRef":"R","colour":"red"}`),
		"trailing data":           with(``) + `{}`,
		"bad version":             strings.Replace(with(``), `"version":1`, `"version":2`, 1),
		"bad id":                  with(`{"id":"Name","label":"Name","legalRef":"R"}`),
		"reserved prefix":         with(`{"id":"x-name","label":"Name","legalRef":"R"}`),
		"duplicate id":            with(`{"id":"name","label":"N","legalRef":"R"},{"id":"name","label":"N","legalRef":"R"}`),
		"missing label":           with(`{"id":"name","legalRef":"R"}`),
		"missing legal ref":       with(`{"id":"name","label":"N"}`),
		"sensitive without class": with(`{"id":"face","label":"F","legalRef":"R","sensitive":true}`),
		"class without sensitive": with(`{"id":"face","label":"F","legalRef":"R","sensitiveClass":"biometric"}`),
		"unknown sensitive class": with(`{"id":"face","label":"F","legalRef":"R","sensitive":true,"sensitiveClass":"nosy"}`),
		"operation missing":       strings.Replace(with(``), `{"operation":"OPERATION_COLLECT"`, `{"operation":"OPERATION_UNSPECIFIED"`, 1),
		"operation mapped twice":  strings.Replace(with(``), `"OPERATION_STORE"`, `"OPERATION_COLLECT"`, 1),
		"unknown operation":       strings.Replace(with(``), `"OPERATION_STORE"`, `"OPERATION_FROB"`, 1),
		"dpv outside namespace":   strings.Replace(with(``), `https://w3id.org/dpv#X`, `https://example.com/Collect`, 1),
		"dpv namespace only":      strings.Replace(with(``), `https://w3id.org/dpv#X`, `https://w3id.org/dpv#`, 1),
	}
	for name, data := range tests {
		if _, err := parseVocabulary([]byte(data)); err == nil {
			t.Errorf("%s: parsed, want error", name)
		}
	}
}
