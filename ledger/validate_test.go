package ledger

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// vtNow is the ledger's clock in these tests.
var vtNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func vtID(t testing.TB) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// vtEvent returns a minimal valid event of operation op.
func vtEvent(t testing.TB, op piledgerv1.Operation) *piledgerv1.Event {
	e := &piledgerv1.Event{
		EventId:        vtID(t),
		SubjectRef:     "cust-1001",
		Operation:      op,
		OccurredAt:     timestamppb.New(vtNow.Add(-time.Hour)),
		Processor:      "acme-retail",
		DataCategories: []string{"face"},
		Purpose:        "access-control",
	}
	switch op {
	case piledgerv1.Operation_OPERATION_PROVIDE, piledgerv1.Operation_OPERATION_ENTRUST:
		e.Recipient = &piledgerv1.Recipient{Processor: "partner-co"}
	case piledgerv1.Operation_OPERATION_TRANSFER_ABROAD:
		e.Recipient = &piledgerv1.Recipient{Processor: "partner-co", Country: "SG"}
	case piledgerv1.Operation_OPERATION_ACCESS:
		e.Access = &piledgerv1.Access{Actor: "officer-17", Reason: "case 2026-0142"}
	case piledgerv1.Operation_OPERATION_CONSENT_GRANTED, piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN:
		e.DataCategories = nil
	case piledgerv1.Operation_OPERATION_PURPOSE_ENDED:
		e.DataCategories, e.SubjectRef, e.Purpose = nil, "", "epidemic-prevention"
	}
	return e
}

// allOps lists every valid operation.
func allOps() []piledgerv1.Operation {
	var ops []piledgerv1.Operation
	for n := range piledgerv1.Operation_name {
		if n != 0 {
			ops = append(ops, piledgerv1.Operation(n))
		}
	}
	slices.Sort(ops)
	return ops
}

// violations runs ValidateBatch and returns the violated field paths, or nil.
func violations(t *testing.T, events []*piledgerv1.Event, lim Limits) []FieldViolation {
	t.Helper()
	err := ValidateBatch(events, vtNow, lim)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("error %v is not ErrInvalidEvent", err)
	}
	var ie *InvalidEventError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T is not an *InvalidEventError", err)
	}
	if len(ie.Violations) == 0 {
		t.Fatal("InvalidEventError without violations")
	}
	return ie.Violations
}

func fields(vs []FieldViolation) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Field)
	}
	return out
}

func TestValidateBatchAcceptsValidEvents(t *testing.T) {
	for _, op := range allOps() {
		t.Run(op.String(), func(t *testing.T) {
			if vs := violations(t, []*piledgerv1.Event{vtEvent(t, op)}, DefaultLimits()); vs != nil {
				t.Fatalf("minimal valid event rejected: %+v", vs)
			}
		})
	}

	full := vtEvent(t, piledgerv1.Operation_OPERATION_COLLECT)
	full.System = "gate-cam-7"
	full.DataCategories = []string{"face", "x-acme.loyalty-id", "video-footage"}
	full.Purpose = "x-acme.footfall"
	full.LegalBasis = "consent"
	full.Consent = &piledgerv1.Consent{Separate: true, Reference: "consent/2026/77"}
	full.Retention = &piledgerv1.Retention{
		KeepFor:          durationpb.New(90 * 24 * time.Hour),
		Minimum:          durationpb.New(30 * 24 * time.Hour),
		UntilPurposeEnds: "public-safety",
	}
	full.Place = &piledgerv1.Place{Kind: "public-square", NoticeSignRef: "sign-12", LocationRef: "东门 north gate"}
	full.Attributes = map[string]string{"camera.model": "X-200", "note": "中文 ok", "empty": ""}

	access := vtEvent(t, piledgerv1.Operation_OPERATION_ACCESS)
	access.Access.Kind = piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE
	access.LegalBasis = "legal-duty"

	abroad := vtEvent(t, piledgerv1.Operation_OPERATION_TRANSFER_ABROAD)
	abroad.Recipient.System = "crm.eu-1"
	abroad.Retention = &piledgerv1.Retention{KeepUntil: timestamppb.New(vtNow.AddDate(1, 0, 0))}

	skewed := vtEvent(t, piledgerv1.Operation_OPERATION_STORE)
	skewed.OccurredAt = timestamppb.New(vtNow.Add(DefaultMaxFutureSkew))

	transmit := vtEvent(t, piledgerv1.Operation_OPERATION_TRANSMIT)
	transmit.Recipient = &piledgerv1.Recipient{Processor: "acme-retail", System: "archive"}

	purposeEndedForOne := vtEvent(t, piledgerv1.Operation_OPERATION_PURPOSE_ENDED)
	purposeEndedForOne.SubjectRef = "cust-1001"

	// Unlawful but well formed: the ledger records these and raises findings.
	noConsentFace := vtEvent(t, piledgerv1.Operation_OPERATION_COLLECT)
	noConsentFace.Purpose = "marketing"
	noConsentFace.LegalBasis = "consent"
	noConsentFace.Consent = &piledgerv1.Consent{Separate: false}
	hotelCamera := vtEvent(t, piledgerv1.Operation_OPERATION_COLLECT)
	hotelCamera.Place = &piledgerv1.Place{Kind: "hotel-room"}
	hotelCamera.Purpose = "public-safety"
	shortFootage := vtEvent(t, piledgerv1.Operation_OPERATION_COLLECT)
	shortFootage.DataCategories = []string{"video-footage"}
	shortFootage.OccurredAt = timestamppb.New(vtNow.AddDate(0, 0, -20))
	shortFootage.Retention = &piledgerv1.Retention{KeepFor: durationpb.New(10 * 24 * time.Hour)}
	earlyDestroy := vtEvent(t, piledgerv1.Operation_OPERATION_DESTROY)
	earlyDestroy.DataCategories = []string{"video-footage"}
	earlyDestroy.OccurredAt = timestamppb.New(vtNow.AddDate(0, 0, -10))

	batch := []*piledgerv1.Event{full, access, abroad, skewed, transmit, purposeEndedForOne,
		noConsentFace, hotelCamera, shortFootage, earlyDestroy}
	if vs := violations(t, batch, DefaultLimits()); vs != nil {
		t.Fatalf("valid batch rejected: %+v", vs)
	}
}

func TestValidateBatchRejects(t *testing.T) {
	type mut = func(e *piledgerv1.Event)
	one := func(op piledgerv1.Operation, m mut) func(t *testing.T) []*piledgerv1.Event {
		return func(t *testing.T) []*piledgerv1.Event {
			e := vtEvent(t, op)
			m(e)
			return []*piledgerv1.Event{e}
		}
	}
	const (
		collect  = piledgerv1.Operation_OPERATION_COLLECT
		store    = piledgerv1.Operation_OPERATION_STORE
		use      = piledgerv1.Operation_OPERATION_USE
		provide  = piledgerv1.Operation_OPERATION_PROVIDE
		transfer = piledgerv1.Operation_OPERATION_TRANSFER_ABROAD
		destroy  = piledgerv1.Operation_OPERATION_DESTROY
		access   = piledgerv1.Operation_OPERATION_ACCESS
		ended    = piledgerv1.Operation_OPERATION_PURPOSE_ENDED
		granted  = piledgerv1.Operation_OPERATION_CONSENT_GRANTED
	)
	dur := durationpb.New
	ts := timestamppb.New
	day := 24 * time.Hour

	type testCase struct {
		name  string
		batch func(t *testing.T) []*piledgerv1.Event
		lim   func(*Limits)
		want  []string
	}
	tests := []testCase{
		// Batch.
		{name: "nil batch", batch: func(*testing.T) []*piledgerv1.Event { return nil }, want: []string{"events"}},
		{name: "empty batch", batch: func(*testing.T) []*piledgerv1.Event { return []*piledgerv1.Event{} }, want: []string{"events"}},
		{name: "batch over limit", lim: func(l *Limits) { l.MaxBatchEvents = 2 },
			batch: func(t *testing.T) []*piledgerv1.Event {
				return []*piledgerv1.Event{vtEvent(t, collect), vtEvent(t, collect), vtEvent(t, collect)}
			}, want: []string{"events"}},
		{name: "nil event", batch: func(t *testing.T) []*piledgerv1.Event {
			return []*piledgerv1.Event{vtEvent(t, collect), nil}
		}, want: []string{"events[1]"}},
		{name: "event over size", lim: func(l *Limits) { l.MaxEventBytes = 64 },
			batch: one(collect, func(e *piledgerv1.Event) { e.SubjectRef = strings.Repeat("s", 100) }),
			want:  []string{"events[0]"}},
		{name: "unknown fields", batch: one(collect, func(e *piledgerv1.Event) {
			e.ProtoReflect().SetUnknown([]byte{0xf8, 0x06, 0x01}) // field 111, varint 1
		}), want: []string{"events[0]"}},
		{name: "unknown fields in a nested message", batch: one(collect, func(e *piledgerv1.Event) {
			e.Place = &piledgerv1.Place{Kind: "shop"}
			e.Place.ProtoReflect().SetUnknown([]byte{0xf8, 0x06, 0x01})
		}), want: []string{"events[0]"}},

		// eventId.
		{name: "eventId missing", batch: one(collect, func(e *piledgerv1.Event) { e.EventId = "" }), want: []string{"events[0].eventId"}},
		{name: "eventId not a UUID", batch: one(collect, func(e *piledgerv1.Event) { e.EventId = "evt-1" }), want: []string{"events[0].eventId"}},
		{name: "eventId UUIDv4", batch: one(collect, func(e *piledgerv1.Event) { e.EventId = uuid.NewString() }), want: []string{"events[0].eventId"}},
		{name: "eventId uppercase", batch: one(collect, func(e *piledgerv1.Event) { e.EventId = strings.ToUpper(e.EventId) }), want: []string{"events[0].eventId"}},
		{name: "eventId urn form", batch: one(collect, func(e *piledgerv1.Event) { e.EventId = "urn:uuid:" + e.EventId }), want: []string{"events[0].eventId"}},
		{name: "eventId braces", batch: one(collect, func(e *piledgerv1.Event) { e.EventId = "{" + e.EventId + "}" }), want: []string{"events[0].eventId"}},
		{name: "eventId without hyphens", batch: one(collect, func(e *piledgerv1.Event) { e.EventId = strings.ReplaceAll(e.EventId, "-", "") }), want: []string{"events[0].eventId"}},
		{name: "eventId wrong variant", batch: one(collect, func(e *piledgerv1.Event) {
			b := []byte(e.EventId)
			b[19] = 'c' // variant bits 110: Microsoft
			e.EventId = string(b)
		}), want: []string{"events[0].eventId"}},
		{name: "duplicate eventId", batch: func(t *testing.T) []*piledgerv1.Event {
			a, b, c := vtEvent(t, collect), vtEvent(t, store), vtEvent(t, use)
			c.EventId = a.EventId
			return []*piledgerv1.Event{a, b, c}
		}, want: []string{"events[2].eventId"}},

		// subjectRef.
		{name: "subjectRef missing", batch: one(collect, func(e *piledgerv1.Event) { e.SubjectRef = "" }), want: []string{"events[0].subjectRef"}},
		{name: "subjectRef too long", batch: one(collect, func(e *piledgerv1.Event) { e.SubjectRef = strings.Repeat("a", DefaultMaxRefBytes+1) }), want: []string{"events[0].subjectRef"}},
		{name: "subjectRef bad UTF-8", batch: one(collect, func(e *piledgerv1.Event) { e.SubjectRef = "cust-\xff" }), want: []string{"events[0].subjectRef"}},
		{name: "subjectRef control character", batch: one(collect, func(e *piledgerv1.Event) { e.SubjectRef = "cust\n1" }), want: []string{"events[0].subjectRef"}},
		{name: "subjectRef C1 control character", batch: one(collect, func(e *piledgerv1.Event) { e.SubjectRef = "cust\u00851" }), want: []string{"events[0].subjectRef"}},

		// operation.
		{name: "operation unspecified", batch: one(collect, func(e *piledgerv1.Event) { e.Operation = 0 }), want: []string{"events[0].operation"}},
		{name: "operation unknown", batch: one(collect, func(e *piledgerv1.Event) { e.Operation = 99 }), want: []string{"events[0].operation"}},
		{name: "operation unknown, other fields still checked", batch: one(collect, func(e *piledgerv1.Event) {
			e.Operation = -3
			e.Purpose = "nope"
		}), want: []string{"events[0].operation", "events[0].purpose"}},

		// occurredAt.
		{name: "occurredAt missing", batch: one(collect, func(e *piledgerv1.Event) { e.OccurredAt = nil }), want: []string{"events[0].occurredAt"}},
		{name: "occurredAt invalid", batch: one(collect, func(e *piledgerv1.Event) { e.OccurredAt.Nanos = -1 }), want: []string{"events[0].occurredAt"}},
		{name: "occurredAt out of range", batch: one(collect, func(e *piledgerv1.Event) { e.OccurredAt.Seconds = 1 << 62 }), want: []string{"events[0].occurredAt"}},
		{name: "occurredAt in the future", batch: one(collect, func(e *piledgerv1.Event) {
			e.OccurredAt = ts(vtNow.Add(DefaultMaxFutureSkew + time.Second))
		}), want: []string{"events[0].occurredAt"}},
		{name: "occurredAt epoch", batch: one(collect, func(e *piledgerv1.Event) { e.OccurredAt = ts(time.Unix(0, 0)) }), want: []string{"events[0].occurredAt"}},
		{name: "occurredAt before a custom floor", lim: func(l *Limits) { l.EarliestOccurredAt = vtNow.Add(-time.Minute) },
			batch: one(collect, func(*piledgerv1.Event) {}), want: []string{"events[0].occurredAt"}},

		// processor and system.
		{name: "processor missing", batch: one(collect, func(e *piledgerv1.Event) { e.Processor = "" }), want: []string{"events[0].processor"}},
		{name: "processor free text", batch: one(collect, func(e *piledgerv1.Event) { e.Processor = "Acme Retail Ltd" }), want: []string{"events[0].processor"}},
		{name: "processor leading dot", batch: one(collect, func(e *piledgerv1.Event) { e.Processor = ".acme" }), want: []string{"events[0].processor"}},
		{name: "processor too long", batch: one(collect, func(e *piledgerv1.Event) { e.Processor = strings.Repeat("a", 129) }), want: []string{"events[0].processor"}},
		{name: "processor bad UTF-8", batch: one(collect, func(e *piledgerv1.Event) { e.Processor = "acme\xc3" }), want: []string{"events[0].processor"}},
		{name: "system free text", batch: one(collect, func(e *piledgerv1.Event) { e.System = "Gate Cam 7" }), want: []string{"events[0].system"}},

		// dataCategories.
		{name: "dataCategories unknown", batch: one(collect, func(e *piledgerv1.Event) { e.DataCategories = []string{"name", "shoe-size"} }), want: []string{"events[0].dataCategories[1]"}},
		{name: "dataCategories bad extension", batch: one(collect, func(e *piledgerv1.Event) { e.DataCategories = []string{"x-Acme.id"} }), want: []string{"events[0].dataCategories[0]"}},
		{name: "dataCategories empty string", batch: one(collect, func(e *piledgerv1.Event) { e.DataCategories = []string{""} }), want: []string{"events[0].dataCategories[0]"}},
		{name: "dataCategories duplicate", batch: one(collect, func(e *piledgerv1.Event) { e.DataCategories = []string{"face", "name", "face"} }), want: []string{"events[0].dataCategories[2]"}},
		{name: "dataCategories over limit", lim: func(l *Limits) { l.MaxCategories = 2 },
			batch: one(collect, func(e *piledgerv1.Event) { e.DataCategories = []string{"face", "name", "bogus"} }), want: []string{"events[0].dataCategories"}},
		{name: "dataCategories on purpose ended", batch: one(ended, func(e *piledgerv1.Event) { e.DataCategories = []string{"face"} }), want: []string{"events[0].dataCategories"}},

		// purpose and legalBasis.
		{name: "purpose unknown", batch: one(collect, func(e *piledgerv1.Event) { e.Purpose = "fun" }), want: []string{"events[0].purpose"}},
		{name: "purpose bad extension", batch: one(collect, func(e *piledgerv1.Event) { e.Purpose = "x-acme" }), want: []string{"events[0].purpose"}},
		{name: "legalBasis unknown", batch: one(collect, func(e *piledgerv1.Event) { e.LegalBasis = "legitimate-interest" }), want: []string{"events[0].legalBasis"}},
		{name: "legalBasis extension", batch: one(collect, func(e *piledgerv1.Event) { e.LegalBasis = "x-acme.basis" }), want: []string{"events[0].legalBasis"}},
		{name: "legalBasis on destroy", batch: one(destroy, func(e *piledgerv1.Event) { e.LegalBasis = "consent" }), want: []string{"events[0].legalBasis"}},
		{name: "legalBasis on consent granted", batch: one(granted, func(e *piledgerv1.Event) { e.LegalBasis = "consent" }), want: []string{"events[0].legalBasis"}},

		// consent.
		{name: "consent on destroy", batch: one(destroy, func(e *piledgerv1.Event) { e.Consent = &piledgerv1.Consent{} }), want: []string{"events[0].consent"}},
		{name: "consent on access", batch: one(access, func(e *piledgerv1.Event) { e.Consent = &piledgerv1.Consent{Separate: true} }), want: []string{"events[0].consent"}},
		{name: "consent reference control character", batch: one(granted, func(e *piledgerv1.Event) {
			e.Consent = &piledgerv1.Consent{Reference: "ref\x00"}
		}), want: []string{"events[0].consent.reference"}},

		// recipient.
		{name: "recipient processor missing", batch: one(provide, func(e *piledgerv1.Event) { e.Recipient.Processor = "" }), want: []string{"events[0].recipient.processor"}},
		{name: "recipient processor free text", batch: one(provide, func(e *piledgerv1.Event) { e.Recipient.Processor = "Partner Co." }), want: []string{"events[0].recipient.processor"}},
		{name: "recipient system free text", batch: one(provide, func(e *piledgerv1.Event) { e.Recipient.System = "CRM #2" }), want: []string{"events[0].recipient.system"}},
		{name: "recipient country missing on transfer abroad", batch: one(transfer, func(e *piledgerv1.Event) { e.Recipient.Country = "" }), want: []string{"events[0].recipient.country"}},
		{name: "recipient country lowercase", batch: one(transfer, func(e *piledgerv1.Event) { e.Recipient.Country = "sg" }), want: []string{"events[0].recipient.country"}},
		{name: "recipient country alpha-3", batch: one(provide, func(e *piledgerv1.Event) { e.Recipient.Country = "SGP" }), want: []string{"events[0].recipient.country"}},
		{name: "recipient on destroy", batch: one(destroy, func(e *piledgerv1.Event) { e.Recipient = &piledgerv1.Recipient{Processor: "x"} }), want: []string{"events[0].recipient"}},
		{name: "recipient on collect", batch: one(collect, func(e *piledgerv1.Event) { e.Recipient = &piledgerv1.Recipient{Processor: "x"} }), want: []string{"events[0].recipient"}},

		// place.
		{name: "place kind missing", batch: one(collect, func(e *piledgerv1.Event) { e.Place = &piledgerv1.Place{LocationRef: "l"} }), want: []string{"events[0].place.kind"}},
		{name: "place kind unknown", batch: one(collect, func(e *piledgerv1.Event) { e.Place = &piledgerv1.Place{Kind: "moon"} }), want: []string{"events[0].place.kind"}},
		{name: "place kind extension", batch: one(collect, func(e *piledgerv1.Event) { e.Place = &piledgerv1.Place{Kind: "x-acme.attic"} }), want: []string{"events[0].place.kind"}},
		{name: "place refs too long", batch: one(collect, func(e *piledgerv1.Event) {
			e.Place = &piledgerv1.Place{Kind: "shop", NoticeSignRef: strings.Repeat("n", 257), LocationRef: "\x7f"}
		}), want: []string{"events[0].place.noticeSignRef", "events[0].place.locationRef"}},
		{name: "place on use", batch: one(use, func(e *piledgerv1.Event) { e.Place = &piledgerv1.Place{Kind: "shop"} }), want: []string{"events[0].place"}},

		// access.
		{name: "access missing", batch: one(access, func(e *piledgerv1.Event) { e.Access = nil }), want: []string{"events[0].access"}},
		{name: "access actor missing (a missing reason is a finding, not malformed)", batch: one(access, func(e *piledgerv1.Event) { e.Access = &piledgerv1.Access{} }),
			want: []string{"events[0].access.actor"}},
		{name: "access reason too long", batch: one(access, func(e *piledgerv1.Event) { e.Access.Reason = strings.Repeat("r", DefaultMaxReasonBytes+1) }), want: []string{"events[0].access.reason"}},
		{name: "access actor bad UTF-8", batch: one(access, func(e *piledgerv1.Event) { e.Access.Actor = "\xed\xa0\x80" }), want: []string{"events[0].access.actor"}},
		{name: "access kind unknown", batch: one(access, func(e *piledgerv1.Event) { e.Access.Kind = 42 }), want: []string{"events[0].access.kind"}},
		{name: "access on collect", batch: one(collect, func(e *piledgerv1.Event) { e.Access = &piledgerv1.Access{Actor: "a", Reason: "r"} }), want: []string{"events[0].access"}},

		// retention.
		{name: "retention empty", batch: one(collect, func(e *piledgerv1.Event) { e.Retention = &piledgerv1.Retention{} }), want: []string{"events[0].retention"}},
		{name: "retention on destroy", batch: one(destroy, func(e *piledgerv1.Event) { e.Retention = &piledgerv1.Retention{KeepFor: dur(day)} }), want: []string{"events[0].retention"}},
		{name: "retention on use", batch: one(use, func(e *piledgerv1.Event) { e.Retention = &piledgerv1.Retention{KeepFor: dur(day)} }), want: []string{"events[0].retention"}},
		{name: "retention keepFor negative", batch: one(store, func(e *piledgerv1.Event) { e.Retention = &piledgerv1.Retention{KeepFor: dur(-day)} }), want: []string{"events[0].retention.keepFor"}},
		{name: "retention keepFor over 100 years", batch: one(store, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{KeepFor: dur(MaxRetention + time.Second)}
		}), want: []string{"events[0].retention.keepFor"}},
		{name: "retention keepFor 100 years", batch: one(store, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{KeepFor: dur(MaxRetention), Minimum: dur(MaxRetention + 1)}
		}), want: []string{"events[0].retention.minimum"}},
		{name: "retention keepFor far out of range", batch: one(store, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{KeepFor: &durationpb.Duration{Seconds: 315_000_000_000}}
		}), want: []string{"events[0].retention.keepFor"}},
		{name: "retention minimum invalid", batch: one(store, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{Minimum: &durationpb.Duration{Seconds: 1, Nanos: -1}}
		}), want: []string{"events[0].retention.minimum"}},
		{name: "retention minimum over keepFor", batch: one(collect, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{KeepFor: dur(10 * day), Minimum: dur(30 * day)}
		}), want: []string{"events[0].retention.minimum"}},
		{name: "retention keepFor and keepUntil", batch: one(collect, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{KeepFor: dur(day), KeepUntil: ts(vtNow.Add(day))}
		}), want: []string{"events[0].retention.keepUntil"}},
		{name: "retention keepUntil invalid", batch: one(collect, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{KeepUntil: &timestamppb.Timestamp{Nanos: 2e9}}
		}), want: []string{"events[0].retention.keepUntil"}},
		{name: "retention keepUntil before occurredAt", batch: one(collect, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{KeepUntil: ts(vtNow.Add(-2 * time.Hour))}
		}), want: []string{"events[0].retention.keepUntil"}},
		{name: "retention minimum past keepUntil", batch: one(collect, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{KeepUntil: ts(vtNow.Add(10 * day)), Minimum: dur(30 * day)}
		}), want: []string{"events[0].retention.minimum"}},
		{name: "retention untilPurposeEnds unknown", batch: one(collect, func(e *piledgerv1.Event) {
			e.Retention = &piledgerv1.Retention{UntilPurposeEnds: "forever"}
		}), want: []string{"events[0].retention.untilPurposeEnds"}},

		// attributes.
		{name: "attribute key invalid", batch: one(collect, func(e *piledgerv1.Event) {
			e.Attributes = map[string]string{"ok": "v", "bad key": "v", "": "v", strings.Repeat("k", 65): "v"}
		}), want: []string{"events[0].attributes"}},
		{name: "attribute value too long", batch: one(collect, func(e *piledgerv1.Event) {
			e.Attributes = map[string]string{"a": "v", "note": strings.Repeat("v", DefaultMaxAttributeValueBytes+1)}
		}), want: []string{"events[0].attributes.note"}},
		{name: "attribute values bad", batch: one(collect, func(e *piledgerv1.Event) {
			e.Attributes = map[string]string{"z.ctl": "a\rb", "a.utf8": "\xff"}
		}), want: []string{"events[0].attributes.a.utf8", "events[0].attributes.z.ctl"}},
		{name: "attributes over limit", lim: func(l *Limits) { l.MaxAttributes = 1 },
			batch: one(collect, func(e *piledgerv1.Event) { e.Attributes = map[string]string{"a": "1", "b": "2"} }),
			want:  []string{"events[0].attributes"}},

		// Several events, several violations, in event and field order.
		{name: "violations in order", batch: func(t *testing.T) []*piledgerv1.Event {
			a := vtEvent(t, collect)
			a.Processor, a.EventId = "", ""
			b := vtEvent(t, store)
			c := vtEvent(t, transfer)
			c.Recipient.Country = "XXX"
			c.Attributes = map[string]string{"k": "\x01"}
			c.DataCategories = nil
			return []*piledgerv1.Event{a, b, c}
		}, want: []string{"events[0].eventId", "events[0].processor",
			"events[2].dataCategories", "events[2].recipient.country", "events[2].attributes.k"}},
	}

	// Required fields, operation by operation.
	requiredFor := func(field string, clear mut, ops ...piledgerv1.Operation) {
		for _, op := range ops {
			tests = append(tests, testCase{
				name:  fmt.Sprintf("%s required for %s", field, op),
				batch: one(op, clear),
				want:  []string{"events[0]." + field},
			})
		}
	}
	requiredFor("dataCategories", func(e *piledgerv1.Event) { e.DataCategories = nil },
		collect, store, use, piledgerv1.Operation_OPERATION_PROCESS, piledgerv1.Operation_OPERATION_TRANSMIT, provide,
		piledgerv1.Operation_OPERATION_ENTRUST, piledgerv1.Operation_OPERATION_DISCLOSE, transfer, destroy, access)
	requiredFor("purpose", func(e *piledgerv1.Event) { e.Purpose = "" },
		collect, use, piledgerv1.Operation_OPERATION_PROCESS, provide, piledgerv1.Operation_OPERATION_ENTRUST,
		piledgerv1.Operation_OPERATION_DISCLOSE, transfer, granted, piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, ended)
	requiredFor("recipient", func(e *piledgerv1.Event) { e.Recipient = nil },
		provide, piledgerv1.Operation_OPERATION_ENTRUST, transfer)
	requiredFor("subjectRef", func(e *piledgerv1.Event) { e.SubjectRef = "" },
		store, use, destroy, access, granted, piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := DefaultLimits()
			if tt.lim != nil {
				tt.lim(&lim)
			}
			got := fields(violations(t, tt.batch(t), lim))
			if !slices.Equal(got, tt.want) {
				t.Errorf("violations on %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateBatchOptionalFields(t *testing.T) {
	// Fields an operation may omit: the minimal events of
	// TestValidateBatchAcceptsValidEvents already omit them; here they are
	// absent where the contract makes them optional.
	e := vtEvent(t, piledgerv1.Operation_OPERATION_STORE)
	e.Purpose = ""
	d := vtEvent(t, piledgerv1.Operation_OPERATION_DESTROY)
	d.Purpose = ""
	a := vtEvent(t, piledgerv1.Operation_OPERATION_ACCESS)
	a.Purpose = ""
	g := vtEvent(t, piledgerv1.Operation_OPERATION_CONSENT_GRANTED)
	g.DataCategories = []string{"face"}
	g.Consent = &piledgerv1.Consent{Separate: true, Reference: "c-1"}
	if vs := violations(t, []*piledgerv1.Event{e, d, a, g}, DefaultLimits()); vs != nil {
		t.Fatalf("rejected: %+v", vs)
	}
}

func TestValidateBatchDescriptionsNeverEchoValues(t *testing.T) {
	const marker = "zq7marker"
	e := &piledgerv1.Event{
		EventId:        marker,
		SubjectRef:     marker + "\x00",
		Operation:      piledgerv1.Operation_OPERATION_TRANSFER_ABROAD,
		OccurredAt:     timestamppb.New(vtNow),
		Processor:      "Bad " + marker,
		System:         marker + " sys",
		DataCategories: []string{marker, "x-" + marker},
		Purpose:        marker,
		LegalBasis:     marker,
		Consent:        &piledgerv1.Consent{Reference: marker + "\xff"},
		Retention:      &piledgerv1.Retention{UntilPurposeEnds: marker},
		Recipient:      &piledgerv1.Recipient{Processor: marker + "!", Country: marker, System: marker + "?"},
		Attributes: map[string]string{
			marker + " key":  "v",
			"value":          marker + "\x1b",
			"long":           strings.Repeat(marker, 200),
			"ok." + "marker": "x",
		},
	}
	place := vtEvent(t, piledgerv1.Operation_OPERATION_COLLECT)
	place.Place = &piledgerv1.Place{Kind: marker, NoticeSignRef: marker + "\n", LocationRef: strings.Repeat(marker, 50)}
	acc := vtEvent(t, piledgerv1.Operation_OPERATION_ACCESS)
	acc.EventId = e.EventId
	acc.Access = &piledgerv1.Access{Actor: marker + "\t", Reason: marker + "\xc0"}

	err := ValidateBatch([]*piledgerv1.Event{e, place, acc}, vtNow, DefaultLimits())
	var ie *InvalidEventError
	if !errors.As(err, &ie) {
		t.Fatalf("got %v, want an *InvalidEventError", err)
	}
	if len(ie.Violations) < 15 {
		t.Errorf("only %d violations: %+v", len(ie.Violations), ie.Violations)
	}
	for _, v := range ie.Violations {
		if strings.Contains(strings.ToLower(v.Field+v.Description), marker) {
			t.Errorf("violation echoes a value: %+v", v)
		}
	}
	if strings.Contains(err.Error(), marker) {
		t.Errorf("error message echoes a value: %v", err)
	}
}

func TestValidateBatchCapsViolations(t *testing.T) {
	var batch []*piledgerv1.Event
	for range 600 {
		e := vtEvent(t, piledgerv1.Operation_OPERATION_COLLECT)
		e.SubjectRef, e.Processor = "", ""
		batch = append(batch, e)
	}
	vs := violations(t, batch, DefaultLimits())
	if len(vs) != maxViolations+1 {
		t.Fatalf("%d violations, want %d", len(vs), maxViolations+1)
	}
	if last := vs[len(vs)-1]; last.Field != "events" {
		t.Errorf("last violation %+v, want one on events saying more were dropped", last)
	}
}

func TestValidateBatchRejectsBadLimits(t *testing.T) {
	err := ValidateBatch([]*piledgerv1.Event{vtEvent(t, piledgerv1.Operation_OPERATION_COLLECT)}, vtNow, Limits{})
	if err == nil || errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("got %v, want a limits error that is not ErrInvalidEvent", err)
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("DefaultLimits: %v", err)
	}
	if got := DefaultLimits().EarliestOccurredAt; !got.Equal(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("EarliestOccurredAt = %v", got)
	}
	tests := map[string]func(*Limits){
		"MaxBatchEvents":         func(l *Limits) { l.MaxBatchEvents = 0 },
		"MaxEventBytes":          func(l *Limits) { l.MaxEventBytes = -1 },
		"MaxRefBytes":            func(l *Limits) { l.MaxRefBytes = 0 },
		"MaxReasonBytes":         func(l *Limits) { l.MaxReasonBytes = 0 },
		"MaxCategories":          func(l *Limits) { l.MaxCategories = 0 },
		"MaxAttributes":          func(l *Limits) { l.MaxAttributes = 0 },
		"MaxAttributeValueBytes": func(l *Limits) { l.MaxAttributeValueBytes = 0 },
		"MaxFutureSkew":          func(l *Limits) { l.MaxFutureSkew = -time.Second },
		"EarliestOccurredAt":     func(l *Limits) { l.EarliestOccurredAt = time.Time{} },
	}
	for name, breakIt := range tests {
		l := DefaultLimits()
		breakIt(&l)
		if err := l.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Validate() = %v, want an error naming it", name, err)
		}
	}
	l := DefaultLimits()
	l.MaxFutureSkew = 0
	if err := l.Validate(); err != nil {
		t.Errorf("zero MaxFutureSkew: %v", err)
	}
}

func FuzzValidateBatch(f *testing.F) {
	lim := DefaultLimits()
	for _, op := range allOps() {
		e := vtEvent(f, op)
		e.Attributes = map[string]string{"k": "v"}
		e.Retention = &piledgerv1.Retention{KeepFor: durationpb.New(time.Hour), Minimum: durationpb.New(time.Minute)}
		b, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xf8, 0x06, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e piledgerv1.Event
		if err := proto.Unmarshal(data, &e); err != nil {
			return
		}
		err := ValidateBatch([]*piledgerv1.Event{&e}, vtNow, lim)
		var ie *InvalidEventError
		if err != nil && !errors.As(err, &ie) {
			t.Fatalf("unexpected error type %T: %v", err, err)
		}
		if err == nil {
			// An accepted event re-encodes and stays accepted.
			b, merr := proto.Marshal(&e)
			if merr != nil {
				t.Fatalf("accepted event does not marshal: %v", merr)
			}
			var again piledgerv1.Event
			if uerr := proto.Unmarshal(b, &again); uerr != nil {
				t.Fatalf("accepted event does not round-trip: %v", uerr)
			}
			if verr := ValidateBatch([]*piledgerv1.Event{&again}, vtNow, lim); verr != nil {
				t.Fatalf("round-tripped event rejected: %v", verr)
			}
		}
	})
}

// TestFormChecksMatchTheirGrammar checks the hand-written form checks
// against the regular expressions that state their grammar, on edge cases
// and on random strings over the relevant alphabets.
func TestFormChecksMatchTheirGrammar(t *testing.T) {
	checks := []struct {
		name    string
		check   func(string) bool
		grammar *regexp.Regexp
		alpha   string
		maxLen  int
	}{
		{"IsIdentifier", IsIdentifier, regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`), "az09._-A\n é", 130},
		{"isCountryCode", isCountryCode, regexp.MustCompile(`^[A-Z]{2}$`), "AZaz0 ", 3},
		{"isAttributeKey", isAttributeKey, regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`), "aZ09_.- /\x00é", 66},
		{"isCanonicalUUIDv7", isCanonicalUUIDv7, regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`), "", 0},
	}
	edge := []string{"", "a", "-a", ".a", "_a", "a-", "A", "aa", "AA", "ZZ", "A1", "0", "a b", "a\n", "é",
		strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("a", 128), strings.Repeat("a", 129),
		"0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "0190A3C4-5B6D-7E8F-9A0B-1C2D3E4F5A6B", "0190a3c4-5b6d-4e8f-9a0b-1c2d3e4f5a6b",
		"0190a3c4-5b6d-7e8f-ca0b-1c2d3e4f5a6b", "0190a3c45b6d7e8f9a0b1c2d3e4f5a6b", "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6bb",
		"{0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6}"}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range checks {
		inputs := slices.Clone(edge)
		for range 20000 {
			if c.alpha == "" { // UUIDs: mutate one character of a valid id
				b := []byte(uuid.Must(uuid.NewV7()).String())
				b[rng.IntN(len(b))] = "0123456789abcdefABCDEF-7g"[rng.IntN(25)]
				inputs = append(inputs, string(b))
				continue
			}
			r := []rune(c.alpha)
			var sb strings.Builder
			for range rng.IntN(c.maxLen + 1) {
				sb.WriteRune(r[rng.IntN(len(r))])
			}
			inputs = append(inputs, sb.String())
		}
		for _, in := range inputs {
			if got, want := c.check(in), c.grammar.MatchString(in); got != want {
				t.Errorf("%s(%q) = %v, grammar says %v", c.name, in, got, want)
			}
		}
	}
}
