package rules

import (
	"testing"

	"cel.dev/cel-go/common/types"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestEveryKeyHasAValue: over an empty input every key of every variable
// has the zero value of the type it has on the fully populated sample, so
// a condition that passed the sample never meets a missing key.
func TestEveryKeyHasAValue(t *testing.T) {
	s := sampleFor(ScopeEventHolding)
	var check func(path string, zero, full keyed)
	check = func(path string, zero, full keyed) {
		for _, k := range full.keyNames() {
			z, f := zero.value(k), full.value(k)
			switch {
			case z == nil || types.IsUnknownOrError(z):
				t.Errorf("%s.%s: no value on an empty input: %v", path, k, z)
			case z.Type() != f.Type():
				t.Errorf("%s.%s: %s on an empty input, %s on the sample", path, k, z.Type().TypeName(), f.Type().TypeName())
			}
			if zk, ok := z.(keyed); ok {
				check(path+"."+k, zk, f.(keyed))
			}
		}
	}
	empty := &piledgerv1.LogEntry{Event: &piledgerv1.Event{}}
	check("event", eventKind.of(empty), eventKind.of(s.entry))
	check("event", eventKind.of(&piledgerv1.LogEntry{}), eventKind.of(s.entry))
	check("subject", subjectKind.of(empty), subjectKind.of(s.entry))
	check("holding", holdingKind.of(&piledgerv1.Holding{}), holdingKind.of(s.holdings[0]))
	check("holding", holdingKind.of(nil), holdingKind.of(s.holdings[0]))
	check("consents[0]", consentKind.of(&piledgerv1.Event{}), consentKind.of(s.consents[0]))
}

// TestRecordsAreCELMaps: records behave as CEL maps with string keys in
// every operation a condition can apply to a map, and iterate in a fixed
// order.
func TestRecordsAreCELMaps(t *testing.T) {
	conditions := []string{
		`size(event.place) == 5`,
		`"kind" in event.place && !("colour" in event.place)`,
		`has(event.place.kind) && event.place["notice_sign"] == "sample-sign"`,
		`event.place.map(k, k) == ["kind", "notice_sign", "location", "public", "prohibited"]`,
		`event.place.all(k, k != "") && event.place.exists(k, k == "public")`,
		`event.retention == event.retention && event.place != event.retention`,
		`event.place == {"kind": "public-street", "notice_sign": "sample-sign", "location": "sample-location", "public": true, "prohibited": false}`,
		`{"processor": "sample-recipient", "system": "sample-archive", "country": "HK"} == event.recipient`,
		`holdings[0] == holding && holdings.exists(h, h.id == holding.id)`,
		`consents.map(c, c.processor) == ["sample-processor"]`,
		`event.attributes == {"sample": "value"} && event.categories == ["face", "name"]`,
		`event.sensitive_categories == ["face"] && event.retention.minimum == duration("720h")`,
		`subject.key_generation == 1 && !subject.erased && now == event.occurred`,
		`holding.state == "destroyed" && holding.deadline_basis == "keep-until" && holding.provenance == "collected"`,
		`event.operation == "collect" && event.access.kind == "view"`,
		`sets.intersects(event.categories, ["face", "video-footage"]) && event.place.kind.upperAscii() == "PUBLIC-STREET"`,
	}
	for _, c := range conditions {
		prg, err := compile(ScopeEventHolding, c)
		if err != nil {
			t.Errorf("%s: %v", c, err)
			continue
		}
		out, _, err := prg.Eval(sampleFor(ScopeEventHolding).activation())
		if err != nil || out != types.True {
			t.Errorf("%s = %v, %v; want true", c, out, err)
		}
	}
}

// TestPlaces: places open to the unspecified public are public (PIPL Art.
// 26); the common areas of a residential compound, offices and schools are
// not; private areas are prohibited.
func TestPlaces(t *testing.T) {
	tests := []struct {
		kind               string
		public, prohibited bool
	}{
		{"public-street", true, false},
		{"public-square", true, false},
		{"transport-hub", true, false},
		{"shop", true, false},
		{"hospital", true, false},
		{"residential-compound", false, false},
		{"office", false, false},
		{"school", false, false},
		{"hotel-room", false, true},
		{"dormitory", false, true},
		{"bath", false, true},
		{"fitting-room", false, true},
		{"", false, false},
		{"no-such-kind", false, false},
	}
	for _, tt := range tests {
		p := placeKind.of(&piledgerv1.Place{Kind: tt.kind})
		if p.value("public") != types.Bool(tt.public) || p.value("prohibited") != types.Bool(tt.prohibited) {
			t.Errorf("%q: public %v, prohibited %v; want %v, %v", tt.kind, p.value("public"), p.value("prohibited"), tt.public, tt.prohibited)
		}
	}
}
