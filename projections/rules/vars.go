package rules

import (
	"strings"
	"sync"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The variables rules see, as records (record.go) over the input protos.
// The keys of each are fixed (docs/RULES.md lists them) and always present:
// what the input lacks is the zero value of the key's type ("", false, 0,
// duration("0s"), timestamp(0)), so a condition never fails on a missing
// key. Proto getters are nil-safe, and a nil Timestamp reads as the Unix
// epoch.

// Field constructors, one per CEL type.

func str[T any](name string, get func(T) string) field[T] {
	return field[T]{name, func(s T) ref.Val { return types.String(get(s)) }}
}

func boolean[T any](name string, get func(T) bool) field[T] {
	return field[T]{name, func(s T) ref.Val { return types.Bool(get(s)) }}
}

func integer[T any](name string, get func(T) int64) field[T] {
	return field[T]{name, func(s T) ref.Val { return types.Int(get(s)) }}
}

func timestamp[T any](name string, get func(T) *timestamppb.Timestamp) field[T] {
	return field[T]{name, func(s T) ref.Val { return types.Timestamp{Time: get(s).AsTime()} }}
}

func duration[T any](name string, get func(T) *durationpb.Duration) field[T] {
	return field[T]{name, func(s T) ref.Val { return types.Duration{Duration: get(s).AsDuration()} }}
}

func stringList[T any](name string, get func(T) []string) field[T] {
	return field[T]{name, func(s T) ref.Val {
		l := get(s)
		if l == nil {
			l = []string{}
		}
		return types.NewStringList(types.DefaultTypeAdapter, l)
	}}
}

func sub[T, U any](name string, kind *recordKind[U], get func(T) U) field[T] {
	return field[T]{name, func(s T) ref.Val { return kind.of(get(s)) }}
}

// enumIDs maps the values of a proto enum to ids in the vocabulary's style
// by trimming prefix and kebab-casing the rest (HOLDING_STATE_DESTROYED_EARLY
// to "destroyed-early"); the zero value maps to "".
func enumIDs(names map[int32]string, prefix string) map[int32]string {
	ids := make(map[int32]string, len(names))
	for n, name := range names {
		if n != 0 {
			ids[n] = strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", "-")
		}
	}
	return ids
}

// The id tables, built once.
var (
	stateIDs      = enumIDs(piledgerv1.HoldingState_name, "HOLDING_STATE_")
	provenanceIDs = enumIDs(piledgerv1.Provenance_name, "PROVENANCE_")
	basisIDs      = enumIDs(piledgerv1.DeadlineBasis_name, "DEADLINE_BASIS_")
	accessKindIDs = enumIDs(piledgerv1.AccessKind_name, "ACCESS_KIND_")
)

// operationIDs maps operations to their vocabulary ids ("collect",
// "transfer-abroad") and back.
type operationIDs struct {
	id map[piledgerv1.Operation]string
	op map[string]piledgerv1.Operation
}

var operations = sync.OnceValue(func() operationIDs {
	v := ledger.DefaultVocabulary()
	t := operationIDs{id: map[piledgerv1.Operation]string{}, op: map[string]piledgerv1.Operation{}}
	for n := range piledgerv1.Operation_name {
		if term, ok := v.Operation(piledgerv1.Operation(n)); ok {
			t.id[term.Operation] = term.ID
			t.op[term.ID] = term.Operation
		}
	}
	return t
})

// operationOf is the entry's operation: the event's, or the clear
// header's when the event does not say.
func operationOf(e *piledgerv1.LogEntry) piledgerv1.Operation {
	if op := e.GetEvent().GetOperation(); op != piledgerv1.Operation_OPERATION_UNSPECIFIED {
		return op
	}
	return e.GetHeader().GetOperation()
}

// eventKind is the event variable, over a log entry.
var eventKind = newKind(
	str("id", func(e *piledgerv1.LogEntry) string { return e.GetEvent().GetEventId() }),
	integer("index", func(e *piledgerv1.LogEntry) int64 { return int64(e.GetIndex()) }),
	str("operation", func(e *piledgerv1.LogEntry) string { return operations().id[operationOf(e)] }),
	str("processor", func(e *piledgerv1.LogEntry) string { return e.GetEvent().GetProcessor() }),
	str("system", func(e *piledgerv1.LogEntry) string { return e.GetEvent().GetSystem() }),
	timestamp("occurred", func(e *piledgerv1.LogEntry) *timestamppb.Timestamp { return e.GetEvent().GetOccurredAt() }),
	timestamp("recorded", func(e *piledgerv1.LogEntry) *timestamppb.Timestamp { return e.GetHeader().GetRecordedAt() }),
	stringList("categories", func(e *piledgerv1.LogEntry) []string { return e.GetEvent().GetDataCategories() }),
	stringList("sensitive_categories", func(e *piledgerv1.LogEntry) []string {
		var out []string
		for _, c := range e.GetEvent().GetDataCategories() {
			if ledger.DefaultVocabulary().IsSensitive(c) {
				out = append(out, c)
			}
		}
		return out
	}),
	str("purpose", func(e *piledgerv1.LogEntry) string { return e.GetEvent().GetPurpose() }),
	str("legal_basis", func(e *piledgerv1.LogEntry) string { return e.GetEvent().GetLegalBasis() }),
	boolean("consent", func(e *piledgerv1.LogEntry) bool { return e.GetEvent().GetConsent() != nil }),
	boolean("separate_consent", func(e *piledgerv1.LogEntry) bool { return e.GetEvent().GetConsent().GetSeparate() }),
	str("consent_ref", func(e *piledgerv1.LogEntry) string { return e.GetEvent().GetConsent().GetReference() }),
	sub("retention", retentionKind, func(e *piledgerv1.LogEntry) *piledgerv1.Retention { return e.GetEvent().GetRetention() }),
	sub("recipient", recipientKind, func(e *piledgerv1.LogEntry) *piledgerv1.Recipient { return e.GetEvent().GetRecipient() }),
	sub("place", placeKind, func(e *piledgerv1.LogEntry) *piledgerv1.Place { return e.GetEvent().GetPlace() }),
	sub("access", accessKind, func(e *piledgerv1.LogEntry) *piledgerv1.Access { return e.GetEvent().GetAccess() }),
	field[*piledgerv1.LogEntry]{"attributes", func(e *piledgerv1.LogEntry) ref.Val {
		a := e.GetEvent().GetAttributes()
		if a == nil {
			a = map[string]string{}
		}
		return types.NewStringStringMap(types.DefaultTypeAdapter, a)
	}},
)

var retentionKind = newKind(
	duration("keep_for", (*piledgerv1.Retention).GetKeepFor),
	timestamp("keep_until", (*piledgerv1.Retention).GetKeepUntil),
	boolean("has_keep_until", func(r *piledgerv1.Retention) bool { return r.GetKeepUntil() != nil }),
	duration("minimum", (*piledgerv1.Retention).GetMinimum),
	str("until_purpose_ends", (*piledgerv1.Retention).GetUntilPurposeEnds),
)

var recipientKind = newKind(
	str("processor", (*piledgerv1.Recipient).GetProcessor),
	str("system", (*piledgerv1.Recipient).GetSystem),
	str("country", (*piledgerv1.Recipient).GetCountry),
)

// placeKind's public and prohibited come from the vocabulary's place kind.
var placeKind = newKind(
	str("kind", (*piledgerv1.Place).GetKind),
	str("notice_sign", (*piledgerv1.Place).GetNoticeSignRef),
	str("location", (*piledgerv1.Place).GetLocationRef),
	boolean("public", func(p *piledgerv1.Place) bool {
		k, _ := ledger.DefaultVocabulary().PlaceKind(p.GetKind())
		return k.Public
	}),
	boolean("prohibited", func(p *piledgerv1.Place) bool {
		k, _ := ledger.DefaultVocabulary().PlaceKind(p.GetKind())
		return k.Prohibited
	}),
)

// accessKind's kind is "" when the event records no access, and "view"
// when it does without saying how.
var accessKind = newKind(
	str("actor", (*piledgerv1.Access).GetActor),
	str("reason", (*piledgerv1.Access).GetReason),
	str("kind", func(a *piledgerv1.Access) string {
		if a == nil {
			return ""
		}
		if id := accessKindIDs[int32(a.GetKind())]; id != "" {
			return id
		}
		return "view"
	}),
)

// subjectKind is the subject variable: erased is true when the event is
// sealed under a key generation after the first, that is the subject was
// erased (its key destroyed) before.
var subjectKind = newKind(
	boolean("erased", func(e *piledgerv1.LogEntry) bool { return e.GetHeader().GetKeyGeneration() > 1 }),
	integer("key_generation", func(e *piledgerv1.LogEntry) int64 { return int64(e.GetHeader().GetKeyGeneration()) }),
)

// holdingKind is the holding variable and the elements of holdings, over
// an evaluated holding.
var holdingKind = newKind(
	str("id", (*piledgerv1.Holding).GetName),
	str("processor", (*piledgerv1.Holding).GetProcessor),
	str("system", (*piledgerv1.Holding).GetSystem),
	str("category", (*piledgerv1.Holding).GetDataCategory),
	boolean("sensitive", (*piledgerv1.Holding).GetSensitive),
	str("purpose", (*piledgerv1.Holding).GetPurpose),
	str("legal_basis", (*piledgerv1.Holding).GetLegalBasis),
	boolean("consent", func(h *piledgerv1.Holding) bool { return h.GetConsent() != nil }),
	boolean("separate_consent", func(h *piledgerv1.Holding) bool { return h.GetConsent().GetSeparate() }),
	boolean("consent_based", func(h *piledgerv1.Holding) bool {
		return h.GetLegalBasis() == "consent" || (h.GetLegalBasis() == "" && h.GetConsent() != nil)
	}),
	timestamp("obtained", (*piledgerv1.Holding).GetObtainTime),
	str("provenance", func(h *piledgerv1.Holding) string { return provenanceIDs[int32(h.GetProvenance())] }),
	str("source_processor", (*piledgerv1.Holding).GetSourceProcessor),
	str("country", (*piledgerv1.Holding).GetCountry),
	str("place_kind", (*piledgerv1.Holding).GetPlaceKind),
	sub("retention", retentionKind, (*piledgerv1.Holding).GetRetention),
	boolean("open", func(h *piledgerv1.Holding) bool { return h.GetDestroyTime() == nil }),
	boolean("destroyed", func(h *piledgerv1.Holding) bool { return h.GetDestroyTime() != nil }),
	timestamp("destroyed_at", (*piledgerv1.Holding).GetDestroyTime),
	boolean("disclosed", func(h *piledgerv1.Holding) bool { return h.GetDiscloseTime() != nil }),
	boolean("consent_withdrawn", func(h *piledgerv1.Holding) bool { return h.GetConsentWithdrawTime() != nil }),
	timestamp("consent_withdrawn_at", (*piledgerv1.Holding).GetConsentWithdrawTime),
	boolean("purpose_ended", func(h *piledgerv1.Holding) bool { return h.GetPurposeEndTime() != nil }),
	timestamp("purpose_ended_at", (*piledgerv1.Holding).GetPurposeEndTime),
	str("state", func(h *piledgerv1.Holding) string { return stateIDs[int32(h.GetState())] }),
	boolean("has_deadline", func(h *piledgerv1.Holding) bool { return h.GetDestroyDueTime() != nil }),
	timestamp("deadline", (*piledgerv1.Holding).GetDestroyDueTime),
	str("deadline_basis", func(h *piledgerv1.Holding) string { return basisIDs[int32(h.GetDeadlineBasis())] }),
	timestamp("earliest_destroy", (*piledgerv1.Holding).GetEarliestDestroyTime),
)

// consentKind is an element of consents, over a consent-granted event.
var consentKind = newKind(
	str("processor", (*piledgerv1.Event).GetProcessor),
	str("purpose", (*piledgerv1.Event).GetPurpose),
	timestamp("occurred", (*piledgerv1.Event).GetOccurredAt),
	boolean("separate", func(e *piledgerv1.Event) bool { return e.GetConsent().GetSeparate() }),
	stringList("categories", (*piledgerv1.Event).GetDataCategories),
)
