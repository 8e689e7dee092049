package client

import (
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Event is one event to append: a value of one of the operation types of this
// package ([Collect], [Store], [Use], [Process], [Transmit], [Provide],
// [Entrust], [Disclose], [TransferAbroad], [Destroy], [Access],
// [ConsentGranted], [ConsentWithdrawn], [PurposeEnded]), or a protobuf event
// wrapped by [Proto]. Each operation type has exactly the fields its operation
// allows, so the compiler catches a recipient on a collection or an access
// without an actor field.
//
// Fields every operation type has:
//
//   - EventID: the idempotency key, a UUIDv7 in canonical form. Leave it
//     empty to have one generated when the event is emitted: once, before
//     the first attempt, and reused by every retry. Set it yourself to make
//     re-emitting after a crash of your own process safe.
//   - OccurredAt: when it happened; the zero time means now.
//   - Processor: the personal-information handler that did it; empty means
//     the client's [WithProcessor].
//   - System: the system inside the processor ("gate-cam-7"), optional.
//   - Attributes: free-form key/value pairs, treated as personal data.
//
// The server validates every event (see the event contract in
// proto/piledger/v1/event.proto); this package does not repeat the checks.
// Vocabulary terms (categories, purposes, legal bases, place kinds) are
// plain strings from the ledger's vocabulary or extension terms
// "x-<namespace>.<term>".
type Event interface {
	// build returns a new protobuf event the caller does not share.
	build() *piledgerv1.Event
}

// Consent names the consent an operation relies on.
type Consent struct {
	// Separate is true for a separate consent (PIPL Arts. 23, 25, 26, 29, 39
	// require one for sensitive data, provision, disclosure, public-place
	// images and transfer abroad).
	Separate bool
	// Reference points to the consent record in your systems.
	Reference string
}

// Retention says how long data may and must be kept. Zero fields are unset;
// at least one must be set.
type Retention struct {
	// KeepFor: destroy this long after OccurredAt.
	KeepFor time.Duration
	// KeepUntil: destroy at this time. Not together with KeepFor.
	KeepUntil time.Time
	// Minimum: keep at least this long (camera footage: 30 days).
	Minimum time.Duration
	// UntilPurposeEnds: destroy when this purpose ends.
	UntilPurposeEnds string
}

// Recipient is who received the data.
type Recipient struct {
	// Processor is the receiving processor's id. Required.
	Processor string
	// Country is the recipient's ISO 3166-1 alpha-2 code. Required for
	// TransferAbroad.
	Country string
	// System is the receiving system, if known.
	System string
}

// Place is where image or identity-recognition capture took place.
type Place struct {
	// Kind is a place kind of the vocabulary ("public-street",
	// "hotel-room"...). Required.
	Kind string
	// NoticeSignRef points to the visible notice sign, if one is posted.
	NoticeSignRef string
	// LocationRef is your reference to the place or device location.
	LocationRef string
}

// AccessKind says how data was accessed. The zero value states nothing
// (treated as a view).
type AccessKind int

// The access kinds.
const (
	AccessView AccessKind = iota + 1
	AccessCopy
	AccessRetrieve
)

// Collect records that the processor obtained a person's data (dpv:Collect).
type Collect struct {
	EventID    string
	Subject    string   // Required: the person's reference in your systems; stored only as a pseudonym.
	Categories []string // Required: the data categories collected ("face", "phone").
	Purpose    string   // Required.
	LegalBasis string   // PIPL Art. 13 basis, optional.
	Consent    *Consent // The consent relied upon, if any.
	Retention  *Retention
	Place      *Place // Where an image or identity-recognition capture happened.
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Store records that the processor stored a person's data (dpv:Store).
type Store struct {
	EventID    string
	Subject    string   // Required.
	Categories []string // Required.
	Purpose    string
	LegalBasis string
	Consent    *Consent
	Retention  *Retention
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Use records that the processor used a person's data (dpv:Use).
type Use struct {
	EventID    string
	Subject    string   // Required.
	Categories []string // Required.
	Purpose    string   // Required.
	LegalBasis string
	Consent    *Consent
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Process records that the processor transformed, derived or analysed a
// person's data (dpv:Transform).
type Process struct {
	EventID    string
	Subject    string   // Required.
	Categories []string // Required.
	Purpose    string   // Required.
	LegalBasis string
	Consent    *Consent
	Retention  *Retention
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Transmit records that data moved between systems inside the processor
// (dpv:Transmit).
type Transmit struct {
	EventID    string
	Subject    string   // Required.
	Categories []string // Required.
	Purpose    string
	LegalBasis string
	Consent    *Consent
	Retention  *Retention
	Recipient  *Recipient // The receiving system, optional.
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Provide records that data was provided to a third party (dpv:Share).
type Provide struct {
	EventID    string
	Subject    string    // Required.
	Categories []string  // Required.
	Purpose    string    // Required.
	Recipient  Recipient // Required.
	LegalBasis string
	Consent    *Consent
	Retention  *Retention
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Entrust records that data was entrusted to a processor acting on the
// processor's behalf (PIPL Art. 21).
type Entrust struct {
	EventID    string
	Subject    string    // Required.
	Categories []string  // Required.
	Purpose    string    // Required.
	Recipient  Recipient // Required.
	LegalBasis string
	Consent    *Consent
	Retention  *Retention
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Disclose records that data was made public (dpv:Disseminate).
type Disclose struct {
	EventID    string
	Subject    string   // Required.
	Categories []string // Required.
	Purpose    string   // Required.
	LegalBasis string
	Consent    *Consent
	Retention  *Retention
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// TransferAbroad records that data left the country
// (dpv:CrossBorderTransfer).
type TransferAbroad struct {
	EventID    string
	Subject    string    // Required.
	Categories []string  // Required.
	Purpose    string    // Required.
	Recipient  Recipient // Required, with Country.
	LegalBasis string
	Consent    *Consent
	Retention  *Retention
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Destroy records that data was destroyed (dpv:Destruct).
type Destroy struct {
	EventID    string
	Subject    string   // Required.
	Categories []string // Required: the categories destroyed.
	Purpose    string
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Access records that someone viewed, copied or retrieved data
// (dpv:Access): every access leaves a trace.
type Access struct {
	EventID    string
	Subject    string   // Required.
	Categories []string // Required: the categories accessed.
	Actor      string   // Required: who (an officer id, an employee id).
	Reason     string   // Why (a case number, an approval reference); without one, an access to image data raises a finding.
	Kind       AccessKind
	Purpose    string
	LegalBasis string
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// ConsentGranted records that the person granted consent for a purpose.
type ConsentGranted struct {
	EventID    string
	Subject    string // Required.
	Purpose    string // Required.
	Categories []string
	Consent    *Consent // Separate consent, reference to the record.
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// ConsentWithdrawn records that the person withdrew consent for a purpose.
type ConsentWithdrawn struct {
	EventID    string
	Subject    string // Required.
	Purpose    string // Required.
	Categories []string
	Consent    *Consent
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// PurposeEnded records that a purpose ended (epidemic prevention is over):
// data kept until that purpose ends is due for destruction. Without a
// Subject it concerns every subject of the processor.
type PurposeEnded struct {
	EventID    string
	Subject    string
	Purpose    string // Required.
	OccurredAt time.Time
	Processor  string
	System     string
	Attributes map[string]string
}

// Proto wraps a protobuf event, for events built or decoded elsewhere
// (NDJSON files, another service). The event is copied when it is emitted;
// the caller keeps ownership of e. Empty event id, occurredAt and processor
// are filled in as for the other event types.
func Proto(e *piledgerv1.Event) Event { return protoEvent{e} }

type protoEvent struct{ e *piledgerv1.Event }

func (p protoEvent) build() *piledgerv1.Event {
	if p.e == nil {
		return nil
	}
	return proto.Clone(p.e).(*piledgerv1.Event)
}

// common holds the fields every operation type has.
type common struct {
	op         piledgerv1.Operation
	eventID    string
	subject    string
	occurredAt time.Time
	processor  string
	system     string
	attributes map[string]string
}

func (c common) event() *piledgerv1.Event {
	e := &piledgerv1.Event{
		EventId:    c.eventID,
		SubjectRef: c.subject,
		Operation:  c.op,
		Processor:  c.processor,
		System:     c.system,
	}
	if !c.occurredAt.IsZero() {
		e.OccurredAt = timestamppb.New(c.occurredAt)
	}
	if len(c.attributes) > 0 {
		e.Attributes = maps.Clone(c.attributes)
	}
	return e
}

func categories(c []string) []string {
	if len(c) == 0 {
		return nil
	}
	return slices.Clone(c)
}

func (c *Consent) proto() *piledgerv1.Consent {
	if c == nil {
		return nil
	}
	return &piledgerv1.Consent{Separate: c.Separate, Reference: c.Reference}
}

func (r *Retention) proto() *piledgerv1.Retention {
	if r == nil {
		return nil
	}
	out := &piledgerv1.Retention{UntilPurposeEnds: r.UntilPurposeEnds}
	if r.KeepFor != 0 {
		out.KeepFor = durationpb.New(r.KeepFor)
	}
	if !r.KeepUntil.IsZero() {
		out.KeepUntil = timestamppb.New(r.KeepUntil)
	}
	if r.Minimum != 0 {
		out.Minimum = durationpb.New(r.Minimum)
	}
	return out
}

func (r *Recipient) proto() *piledgerv1.Recipient {
	if r == nil {
		return nil
	}
	return &piledgerv1.Recipient{Processor: r.Processor, Country: r.Country, System: r.System}
}

func (p *Place) proto() *piledgerv1.Place {
	if p == nil {
		return nil
	}
	return &piledgerv1.Place{Kind: p.Kind, NoticeSignRef: p.NoticeSignRef, LocationRef: p.LocationRef}
}

func (e Collect) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_COLLECT, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent, ev.Retention, ev.Place = e.Consent.proto(), e.Retention.proto(), e.Place.proto()
	return ev
}

func (e Store) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_STORE, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent, ev.Retention = e.Consent.proto(), e.Retention.proto()
	return ev
}

func (e Use) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_USE, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent = e.Consent.proto()
	return ev
}

func (e Process) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_PROCESS, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent, ev.Retention = e.Consent.proto(), e.Retention.proto()
	return ev
}

func (e Transmit) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_TRANSMIT, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent, ev.Retention, ev.Recipient = e.Consent.proto(), e.Retention.proto(), e.Recipient.proto()
	return ev
}

func (e Provide) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_PROVIDE, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent, ev.Retention, ev.Recipient = e.Consent.proto(), e.Retention.proto(), e.Recipient.proto()
	return ev
}

func (e Entrust) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_ENTRUST, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent, ev.Retention, ev.Recipient = e.Consent.proto(), e.Retention.proto(), e.Recipient.proto()
	return ev
}

func (e Disclose) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_DISCLOSE, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent, ev.Retention = e.Consent.proto(), e.Retention.proto()
	return ev
}

func (e TransferAbroad) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_TRANSFER_ABROAD, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Consent, ev.Retention, ev.Recipient = e.Consent.proto(), e.Retention.proto(), e.Recipient.proto()
	return ev
}

func (e Destroy) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_DESTROY, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose = categories(e.Categories), e.Purpose
	return ev
}

func (e Access) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_ACCESS, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.LegalBasis = categories(e.Categories), e.Purpose, e.LegalBasis
	ev.Access = &piledgerv1.Access{Actor: e.Actor, Reason: e.Reason, Kind: piledgerv1.AccessKind(e.Kind)}
	return ev
}

func (e ConsentGranted) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_CONSENT_GRANTED, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.Consent = categories(e.Categories), e.Purpose, e.Consent.proto()
	return ev
}

func (e ConsentWithdrawn) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.DataCategories, ev.Purpose, ev.Consent = categories(e.Categories), e.Purpose, e.Consent.proto()
	return ev
}

func (e PurposeEnded) build() *piledgerv1.Event {
	ev := common{piledgerv1.Operation_OPERATION_PURPOSE_ENDED, e.EventID, e.Subject, e.OccurredAt, e.Processor, e.System, e.Attributes}.event()
	ev.Purpose = e.Purpose
	return ev
}
