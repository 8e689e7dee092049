package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/api/client"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestEveryOperation appends one event of each operation type, with every
// field the type has, and reads the log back: the server accepts each, and
// each decrypted event is exactly the protobuf event the type stands for.
func TestEveryOperation(t *testing.T) {
	at := time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC()
	until := at.Add(400 * 24 * time.Hour)
	id := func() string { return uuid.Must(uuid.NewV7()).String() }
	attrs := map[string]string{"lane": "2"}
	consent := &client.Consent{Separate: true, Reference: "consent-77"}
	pbConsent := &piledgerv1.Consent{Separate: true, Reference: "consent-77"}
	retention := &client.Retention{KeepFor: 720 * time.Hour, Minimum: 30 * 24 * time.Hour}
	pbRetention := &piledgerv1.Retention{KeepFor: durationpb.New(720 * time.Hour), Minimum: durationpb.New(30 * 24 * time.Hour)}
	recipient := client.Recipient{Processor: "logistics-hk", Country: "HK", System: "wms"}
	pbRecipient := &piledgerv1.Recipient{Processor: "logistics-hk", Country: "HK", System: "wms"}
	base := func(op piledgerv1.Operation, eventID string) *piledgerv1.Event {
		return &piledgerv1.Event{EventId: eventID, SubjectRef: "C-1042", Operation: op, OccurredAt: timestamppb.New(at),
			Processor: "acme-shop", System: "crm", Attributes: attrs}
	}
	with := func(e *piledgerv1.Event, f func(*piledgerv1.Event)) *piledgerv1.Event { f(e); return e }

	var events []client.Event
	var want []*piledgerv1.Event
	add := func(e client.Event, w *piledgerv1.Event) { events, want = append(events, e), append(want, w) }

	i := id()
	add(client.Collect{EventID: i, Subject: "C-1042", Categories: []string{"face"}, Purpose: "access-control", LegalBasis: "consent",
		Consent: consent, Retention: retention, Place: &client.Place{Kind: "shop", NoticeSignRef: "sign-1", LocationRef: "door-3"},
		OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_COLLECT, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.LegalBasis, e.Consent, e.Retention = []string{"face"}, "access-control", "consent", pbConsent, pbRetention
			e.Place = &piledgerv1.Place{Kind: "shop", NoticeSignRef: "sign-1", LocationRef: "door-3"}
		}))
	i = id()
	add(client.Store{EventID: i, Subject: "C-1042", Categories: []string{"face"}, Purpose: "access-control", LegalBasis: "consent",
		Consent: consent, Retention: &client.Retention{KeepUntil: until}, OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_STORE, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.LegalBasis, e.Consent = []string{"face"}, "access-control", "consent", pbConsent
			e.Retention = &piledgerv1.Retention{KeepUntil: timestamppb.New(until)}
		}))
	i = id()
	add(client.Use{EventID: i, Subject: "C-1042", Categories: []string{"phone"}, Purpose: "marketing", LegalBasis: "consent",
		Consent: consent, OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_USE, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.LegalBasis, e.Consent = []string{"phone"}, "marketing", "consent", pbConsent
		}))
	i = id()
	add(client.Process{EventID: i, Subject: "C-1042", Categories: []string{"phone", "address"}, Purpose: "marketing", LegalBasis: "consent",
		Consent: consent, Retention: &client.Retention{UntilPurposeEnds: "marketing"}, OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_PROCESS, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.LegalBasis, e.Consent = []string{"phone", "address"}, "marketing", "consent", pbConsent
			e.Retention = &piledgerv1.Retention{UntilPurposeEnds: "marketing"}
		}))
	i = id()
	add(client.Transmit{EventID: i, Subject: "C-1042", Categories: []string{"address"}, Purpose: "service-provision", LegalBasis: "contract-or-hr",
		Consent: consent, Retention: retention, Recipient: &client.Recipient{Processor: "acme-shop", System: "warehouse"},
		OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_TRANSMIT, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.LegalBasis, e.Consent, e.Retention = []string{"address"}, "service-provision", "contract-or-hr", pbConsent, pbRetention
			e.Recipient = &piledgerv1.Recipient{Processor: "acme-shop", System: "warehouse"}
		}))
	for _, op := range []piledgerv1.Operation{piledgerv1.Operation_OPERATION_PROVIDE, piledgerv1.Operation_OPERATION_ENTRUST, piledgerv1.Operation_OPERATION_TRANSFER_ABROAD} {
		i = id()
		var e client.Event
		switch op {
		case piledgerv1.Operation_OPERATION_PROVIDE:
			e = client.Provide{EventID: i, Subject: "C-1042", Categories: []string{"name"}, Purpose: "contract-performance", Recipient: recipient,
				LegalBasis: "contract-or-hr", Consent: consent, Retention: retention, OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs}
		case piledgerv1.Operation_OPERATION_ENTRUST:
			e = client.Entrust{EventID: i, Subject: "C-1042", Categories: []string{"name"}, Purpose: "contract-performance", Recipient: recipient,
				LegalBasis: "contract-or-hr", Consent: consent, Retention: retention, OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs}
		default:
			e = client.TransferAbroad{EventID: i, Subject: "C-1042", Categories: []string{"name"}, Purpose: "contract-performance", Recipient: recipient,
				LegalBasis: "contract-or-hr", Consent: consent, Retention: retention, OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs}
		}
		add(e, with(base(op, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.LegalBasis, e.Consent, e.Retention, e.Recipient = []string{"name"}, "contract-performance", "contract-or-hr", pbConsent, pbRetention, pbRecipient
		}))
	}
	i = id()
	add(client.Disclose{EventID: i, Subject: "C-1042", Categories: []string{"name"}, Purpose: "news-reporting", LegalBasis: "news-public-interest",
		Consent: consent, Retention: retention, OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_DISCLOSE, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.LegalBasis, e.Consent, e.Retention = []string{"name"}, "news-reporting", "news-public-interest", pbConsent, pbRetention
		}))
	i = id()
	add(client.Destroy{EventID: i, Subject: "C-1042", Categories: []string{"face"}, Purpose: "access-control", OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_DESTROY, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose = []string{"face"}, "access-control"
		}))
	i = id()
	add(client.Access{EventID: i, Subject: "C-1042", Categories: []string{"video-footage"}, Actor: "officer-88", Reason: "case 2026-114",
		Kind: client.AccessRetrieve, Purpose: "public-safety", LegalBasis: "legal-duty", OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_ACCESS, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.LegalBasis = []string{"video-footage"}, "public-safety", "legal-duty"
			e.Access = &piledgerv1.Access{Actor: "officer-88", Reason: "case 2026-114", Kind: piledgerv1.AccessKind_ACCESS_KIND_RETRIEVE}
		}))
	i = id()
	add(client.ConsentGranted{EventID: i, Subject: "C-1042", Purpose: "marketing", Categories: []string{"phone"}, Consent: consent,
		OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_CONSENT_GRANTED, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.Consent = []string{"phone"}, "marketing", pbConsent
		}))
	i = id()
	add(client.ConsentWithdrawn{EventID: i, Subject: "C-1042", Purpose: "marketing", Categories: []string{"phone"}, Consent: consent,
		OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, i), func(e *piledgerv1.Event) {
			e.DataCategories, e.Purpose, e.Consent = []string{"phone"}, "marketing", pbConsent
		}))
	i = id()
	add(client.PurposeEnded{EventID: i, Subject: "C-1042", Purpose: "epidemic-prevention", OccurredAt: at, Processor: "acme-shop", System: "crm", Attributes: attrs},
		with(base(piledgerv1.Operation_OPERATION_PURPOSE_ENDED, i), func(e *piledgerv1.Event) { e.Purpose = "epidemic-prevention" }))
	i = id()
	add(client.PurposeEnded{EventID: i, Purpose: "epidemic-prevention", OccurredAt: at, Processor: "acme-shop"},
		&piledgerv1.Event{EventId: i, Operation: piledgerv1.Operation_OPERATION_PURPOSE_ENDED, OccurredAt: timestamppb.New(at), Processor: "acme-shop", Purpose: "epidemic-prevention"})
	i = id()
	pb := with(base(piledgerv1.Operation_OPERATION_STORE, i), func(e *piledgerv1.Event) { e.DataCategories = []string{"email"} })
	add(client.Proto(pb), proto.Clone(pb).(*piledgerv1.Event))

	if len(events) != 16 {
		t.Fatalf("%d events built, want one per operation (14) plus a subject-less purpose end and a Proto", len(events))
	}
	c := newClient(t, serverAddr)
	receipts, err := c.Append(t.Context(), events...)
	if err != nil {
		t.Fatalf("Append: %v (violations %v)", err, client.FieldViolations(err))
	}
	var got []*piledgerv1.LogEntry
	if err := shared.led.Entries(context.Background(), receipts[0].Index, uint64(len(receipts)), func(e *piledgerv1.LogEntry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read back %d entries, want %d", len(got), len(want))
	}
	for k, e := range got {
		if !proto.Equal(e.GetEvent(), want[k]) {
			t.Errorf("event %d (%v):\n got %v\nwant %v", k, want[k].GetOperation(), e.GetEvent(), want[k])
		}
	}
}

// TestDefaults checks what Emit fills in: a UUIDv7 id, the time and the
// client's processor; and that a nil event fails without being sent.
func TestDefaults(t *testing.T) {
	c := newClient(t, serverAddr, client.WithBatching(1, 1<<20, 0))
	before := time.Now()
	p := c.Emit(t.Context(), client.Store{Subject: "C-7", Categories: []string{"email"}})
	r, err := p.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if u, err := uuid.Parse(p.EventID()); err != nil || u.Version() != 7 || r.EventID != p.EventID() {
		t.Errorf("generated event id %q (%v), want a UUIDv7", p.EventID(), err)
	}
	var got *piledgerv1.LogEntry
	if err := shared.led.Entries(t.Context(), r.Index, 1, func(e *piledgerv1.LogEntry) error { got = e; return nil }); err != nil {
		t.Fatal(err)
	}
	ev := got.GetEvent()
	if ev.GetProcessor() != "city-police" || ev.GetOccurredAt().AsTime().Before(before.Truncate(time.Second)) || ev.GetOccurredAt().AsTime().After(time.Now()) {
		t.Errorf("event %v: want processor city-police and occurredAt about now", ev)
	}
	for _, e := range []client.Event{nil, client.Proto(nil)} {
		if _, err := c.Emit(t.Context(), e).Get(t.Context()); err == nil {
			t.Errorf("Emit(%v) succeeded", e)
		}
	}
}
