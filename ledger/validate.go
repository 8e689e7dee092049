package ledger

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Default limits on what one append may carry. They bound the work and
// memory one request can cost; raising them costs memory per request, not
// correctness.
const (
	// DefaultMaxBatchEvents caps the events of one batch.
	DefaultMaxBatchEvents = 1000
	// DefaultMaxEventBytes caps one event's protobuf encoding. An event
	// describes a fact, not the data itself: 64 KiB is generous.
	DefaultMaxEventBytes = 64 << 10
	// DefaultMaxRefBytes caps references: subjectRef, consent.reference,
	// place.noticeSignRef, place.locationRef and access.actor.
	DefaultMaxRefBytes = 256
	// DefaultMaxReasonBytes caps access.reason.
	DefaultMaxReasonBytes = 1024
	// DefaultMaxCategories caps dataCategories.
	DefaultMaxCategories = 32
	// DefaultMaxAttributes caps the number of attributes.
	DefaultMaxAttributes = 32
	// DefaultMaxAttributeValueBytes caps one attribute value.
	DefaultMaxAttributeValueBytes = 1024
	// DefaultMaxFutureSkew is how far past the ledger's clock occurredAt may
	// be: emitters' clocks drift, but an event cannot come from the future.
	DefaultMaxFutureSkew = 5 * time.Minute
	// DefaultEarliestOccurredAtUnix is the earliest occurredAt accepted by
	// default, 2000-01-01T00:00:00Z, in Unix seconds. It admits back-filled
	// history and catches zero and epoch timestamps and unit mistakes.
	DefaultEarliestOccurredAtUnix = 946684800
)

// MaxRetention is the longest retention duration an event may state (100
// years). It is part of the event contract, not a tunable limit.
const MaxRetention = 36525 * 24 * time.Hour

// maxViolations caps the violations one rejected batch lists, so that the
// error of a pathological batch stays small.
const maxViolations = 1000

// Limits bounds what one append may carry. A Limits must pass Validate;
// DefaultLimits does. Limits is comparable.
type Limits struct {
	// MaxBatchEvents caps the events of one batch.
	MaxBatchEvents int
	// MaxEventBytes caps one event's protobuf encoding (proto.Size).
	MaxEventBytes int
	// MaxRefBytes caps each reference field (see DefaultMaxRefBytes).
	MaxRefBytes int
	// MaxReasonBytes caps access.reason.
	MaxReasonBytes int
	// MaxCategories caps dataCategories.
	MaxCategories int
	// MaxAttributes caps the number of attributes.
	MaxAttributes int
	// MaxAttributeValueBytes caps one attribute value.
	MaxAttributeValueBytes int
	// MaxFutureSkew is how far past the ledger's clock occurredAt may be.
	MaxFutureSkew time.Duration
	// EarliestOccurredAt is the earliest occurredAt accepted.
	EarliestOccurredAt time.Time
}

// DefaultLimits returns the Default* limits.
func DefaultLimits() Limits {
	return Limits{
		MaxBatchEvents:         DefaultMaxBatchEvents,
		MaxEventBytes:          DefaultMaxEventBytes,
		MaxRefBytes:            DefaultMaxRefBytes,
		MaxReasonBytes:         DefaultMaxReasonBytes,
		MaxCategories:          DefaultMaxCategories,
		MaxAttributes:          DefaultMaxAttributes,
		MaxAttributeValueBytes: DefaultMaxAttributeValueBytes,
		MaxFutureSkew:          DefaultMaxFutureSkew,
		EarliestOccurredAt:     time.Unix(DefaultEarliestOccurredAtUnix, 0).UTC(),
	}
}

// Validate reports every limit that cannot work: counts and sizes must be
// positive, MaxFutureSkew must not be negative and EarliestOccurredAt must
// be set.
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxBatchEvents", l.MaxBatchEvents},
		{"MaxEventBytes", l.MaxEventBytes},
		{"MaxRefBytes", l.MaxRefBytes},
		{"MaxReasonBytes", l.MaxReasonBytes},
		{"MaxCategories", l.MaxCategories},
		{"MaxAttributes", l.MaxAttributes},
		{"MaxAttributeValueBytes", l.MaxAttributeValueBytes},
	} {
		if f.v < 1 {
			errs = append(errs, fmt.Errorf("%s must be >= 1, got %d", f.name, f.v))
		}
	}
	if l.MaxFutureSkew < 0 {
		errs = append(errs, fmt.Errorf("MaxFutureSkew must not be negative, got %s", l.MaxFutureSkew))
	}
	if l.EarliestOccurredAt.IsZero() {
		errs = append(errs, errors.New("EarliestOccurredAt is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	return nil
}

// presence says whether a field must, may or must not be set for an
// operation.
type presence uint8

const (
	forbidden presence = iota
	optional
	required
)

// opRule is the shape of an event of one operation.
type opRule struct {
	subjectRef, categories, purpose, legalBasis, consent,
	retention, recipient, place, access presence
	// countryRequired is true when recipient.country is required.
	countryRequired bool
}

// opRules is which fields each operation requires, allows and forbids.
// Fields that do not belong to an operation are rejected: the ledger would
// otherwise record statements nobody can interpret.
var opRules = func() map[piledgerv1.Operation]opRule {
	const f, o, r = forbidden, optional, required
	return map[piledgerv1.Operation]opRule{
		//                                         subject cats purpose basis consent retention recipient place access
		piledgerv1.Operation_OPERATION_COLLECT:           {r, r, r, o, o, o, f, o, f, false},
		piledgerv1.Operation_OPERATION_STORE:             {r, r, o, o, o, o, f, f, f, false},
		piledgerv1.Operation_OPERATION_USE:               {r, r, r, o, o, f, f, f, f, false},
		piledgerv1.Operation_OPERATION_PROCESS:           {r, r, r, o, o, o, f, f, f, false},
		piledgerv1.Operation_OPERATION_TRANSMIT:          {r, r, o, o, o, o, o, f, f, false},
		piledgerv1.Operation_OPERATION_PROVIDE:           {r, r, r, o, o, o, r, f, f, false},
		piledgerv1.Operation_OPERATION_ENTRUST:           {r, r, r, o, o, o, r, f, f, false},
		piledgerv1.Operation_OPERATION_DISCLOSE:          {r, r, r, o, o, o, f, f, f, false},
		piledgerv1.Operation_OPERATION_TRANSFER_ABROAD:   {r, r, r, o, o, o, r, f, f, true},
		piledgerv1.Operation_OPERATION_DESTROY:           {r, r, o, f, f, f, f, f, f, false},
		piledgerv1.Operation_OPERATION_ACCESS:            {r, r, o, o, f, f, f, f, r, false},
		piledgerv1.Operation_OPERATION_CONSENT_GRANTED:   {r, o, r, f, o, f, f, f, f, false},
		piledgerv1.Operation_OPERATION_CONSENT_WITHDRAWN: {r, o, r, f, o, f, f, f, f, false},
		piledgerv1.Operation_OPERATION_PURPOSE_ENDED:     {o, f, r, f, f, f, f, f, f, false},
	}
}()

// anyRule is used when the operation is invalid: fields are checked for
// form only, without piling up violations that depend on the operation.
var anyRule = opRule{optional, optional, optional, optional, optional, optional, optional, optional, optional, false}

var (
	identifierPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	countryPattern    = regexp.MustCompile(`^[A-Z]{2}$`)
	attrKeyPattern    = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
)

// IsIdentifier reports whether s is a valid processor or system id: 1-128
// characters from [a-z0-9._-], starting with a letter or digit.
func IsIdentifier(s string) bool { return identifierPattern.MatchString(s) }

// ValidateBatch checks a batch of events against the event contract and the
// default vocabulary, with now as the ledger's clock. It returns nil when
// every event is well formed, or an *InvalidEventError (errors.Is
// ErrInvalidEvent) listing every violation found, in event and field order,
// up to 1000 (a final violation on "events" says when more were dropped).
// It returns another error only when lim fails Validate.
//
// Field paths use the lowerCamelCase JSON names and the event index, such
// as "events[2].recipient.country" or "events[1].attributes.<key>";
// descriptions never contain a field's value. An empty batch and a batch
// over lim.MaxBatchEvents are rejected on "events" without looking at the
// events.
//
// Only malformed events are rejected. An event recording something
// unlawful (a face collected without separate consent, a camera in a hotel
// room, footage destroyed too early) is valid: the ledger records it and
// the rule engine raises a finding.
//
// ValidateBatch does not modify the events and is safe for concurrent use.
func ValidateBatch(events []*piledgerv1.Event, now time.Time, lim Limits) error {
	if err := lim.Validate(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	v := validator{lim: lim, now: now, vocab: DefaultVocabulary()}
	switch {
	case len(events) == 0:
		v.add("events", "must contain at least one event")
	case len(events) > lim.MaxBatchEvents:
		v.add("events", fmt.Sprintf("must contain at most %d events", lim.MaxBatchEvents))
	default:
		ids := make(map[string]int, len(events))
		for i, e := range events {
			if v.full {
				break
			}
			v.event(i, e, ids)
		}
	}
	if len(v.vs) == 0 {
		return nil
	}
	if v.full {
		v.vs = append(v.vs, FieldViolation{Field: "events", Description: fmt.Sprintf("has more violations than the %d listed", maxViolations)})
	}
	return &InvalidEventError{Violations: v.vs}
}

type validator struct {
	lim   Limits
	now   time.Time
	vocab *Vocabulary
	vs    []FieldViolation
	full  bool
}

// add records a violation. desc must never contain the field's value.
func (v *validator) add(field, desc string) {
	if len(v.vs) >= maxViolations {
		v.full = true
		return
	}
	v.vs = append(v.vs, FieldViolation{Field: field, Description: desc})
}

func (v *validator) event(i int, e *piledgerv1.Event, ids map[string]int) {
	p := fmt.Sprintf("events[%d]", i)
	if e == nil {
		v.add(p, "must be set")
		return
	}
	if n := proto.Size(e); n > v.lim.MaxEventBytes {
		v.add(p, fmt.Sprintf("must encode to at most %d bytes", v.lim.MaxEventBytes))
		return
	}
	if hasUnknownFields(e.ProtoReflect()) {
		v.add(p, "carries fields unknown to this version of the event contract")
	}

	switch id := e.GetEventId(); {
	case id == "":
		v.add(p+".eventId", "is required")
	case !isCanonicalUUIDv7(id):
		v.add(p+".eventId", "must be a UUIDv7 in canonical form (lowercase hex, 8-4-4-4-12)")
	default:
		if j, dup := ids[id]; dup {
			v.add(p+".eventId", fmt.Sprintf("duplicates events[%d].eventId", j))
		} else {
			ids[id] = i
		}
	}

	op := e.GetOperation()
	rule, opOK := opRules[op]
	if !opOK {
		v.add(p+".operation", "must be a known operation other than OPERATION_UNSPECIFIED")
		rule = anyRule
	}
	opName := op.String()

	// present checks a field's presence against the rule and reports
	// whether its content should be checked.
	present := func(field string, set bool, pr presence) bool {
		switch {
		case pr == required && !set:
			v.add(field, "is required for "+opName)
		case pr == forbidden && set:
			v.add(field, "must not be set: it does not apply to "+opName)
			return false
		}
		return set
	}

	if present(p+".subjectRef", e.GetSubjectRef() != "", rule.subjectRef) {
		v.text(p+".subjectRef", e.GetSubjectRef(), v.lim.MaxRefBytes)
	}

	var occurred time.Time // zero unless occurredAt is valid
	switch ts := e.GetOccurredAt(); {
	case ts == nil:
		v.add(p+".occurredAt", "is required")
	case ts.CheckValid() != nil:
		v.add(p+".occurredAt", "must be a valid timestamp")
	case ts.AsTime().After(v.now.Add(v.lim.MaxFutureSkew)):
		v.add(p+".occurredAt", fmt.Sprintf("must not be more than %s ahead of the ledger's clock", v.lim.MaxFutureSkew))
	case ts.AsTime().Before(v.lim.EarliestOccurredAt):
		v.add(p+".occurredAt", "must not be before "+v.lim.EarliestOccurredAt.UTC().Format(time.RFC3339))
	default:
		occurred = ts.AsTime()
	}

	if e.GetProcessor() == "" {
		v.add(p+".processor", "is required")
	} else {
		v.identifier(p+".processor", e.GetProcessor())
	}
	if e.GetSystem() != "" {
		v.identifier(p+".system", e.GetSystem())
	}

	if cats := e.GetDataCategories(); present(p+".dataCategories", len(cats) > 0, rule.categories) {
		v.categories(p+".dataCategories", cats)
	}
	if present(p+".purpose", e.GetPurpose() != "", rule.purpose) {
		v.purpose(p+".purpose", e.GetPurpose())
	}
	if present(p+".legalBasis", e.GetLegalBasis() != "", rule.legalBasis) {
		if _, ok := v.vocab.LegalBasis(e.GetLegalBasis()); !ok {
			v.add(p+".legalBasis", "must be a legal basis of the vocabulary (PIPL Art. 13)")
		}
	}
	if c := e.GetConsent(); present(p+".consent", c != nil, rule.consent) && c.GetReference() != "" {
		v.text(p+".consent.reference", c.GetReference(), v.lim.MaxRefBytes)
	}
	if present(p+".retention", e.GetRetention() != nil, rule.retention) {
		v.retention(p+".retention", e.GetRetention(), occurred)
	}
	if present(p+".recipient", e.GetRecipient() != nil, rule.recipient) {
		v.recipient(p+".recipient", e.GetRecipient(), rule.countryRequired, opName)
	}
	if present(p+".place", e.GetPlace() != nil, rule.place) {
		v.place(p+".place", e.GetPlace())
	}
	if present(p+".access", e.GetAccess() != nil, rule.access) {
		v.access(p+".access", e.GetAccess())
	}
	v.attributes(p+".attributes", e.GetAttributes())
}

// text checks a free-text field: at most max bytes of valid UTF-8 without
// control characters.
func (v *validator) text(field, s string, max int) {
	switch {
	case len(s) > max:
		v.add(field, fmt.Sprintf("must be at most %d bytes", max))
	case !utf8.ValidString(s):
		v.add(field, "must be valid UTF-8")
	case strings.ContainsFunc(s, unicode.IsControl):
		v.add(field, "must not contain control characters")
	}
}

// identifier checks a processor or system id.
func (v *validator) identifier(field, s string) {
	if !identifierPattern.MatchString(s) {
		v.add(field, "must be an identifier of 1-128 characters from [a-z0-9._-], starting with a letter or digit")
	}
}

func (v *validator) categories(field string, cats []string) {
	if len(cats) > v.lim.MaxCategories {
		v.add(field, fmt.Sprintf("must have at most %d entries", v.lim.MaxCategories))
		return
	}
	seen := make(map[string]int, len(cats))
	for j, c := range cats {
		fj := fmt.Sprintf("%s[%d]", field, j)
		if _, ok := v.vocab.Category(c); !ok {
			v.add(fj, "must be a data category of the vocabulary or an extension term x-<namespace>.<term>")
			continue
		}
		if k, dup := seen[c]; dup {
			v.add(fj, fmt.Sprintf("duplicates dataCategories[%d]", k))
			continue
		}
		seen[c] = j
	}
}

func (v *validator) purpose(field, id string) {
	if _, ok := v.vocab.Purpose(id); !ok {
		v.add(field, "must be a purpose of the vocabulary or an extension term x-<namespace>.<term>")
	}
}

func (v *validator) retention(p string, r *piledgerv1.Retention, occurred time.Time) {
	if r.GetKeepFor() == nil && r.GetKeepUntil() == nil && r.GetMinimum() == nil && r.GetUntilPurposeEnds() == "" {
		v.add(p, "must set at least one of keepFor, keepUntil, minimum and untilPurposeEnds")
		return
	}
	keepFor, keepForOK := v.duration(p+".keepFor", r.GetKeepFor())
	minimum, minimumOK := v.duration(p+".minimum", r.GetMinimum())
	if keepForOK && minimumOK && minimum > keepFor {
		v.add(p+".minimum", "must not exceed keepFor")
	}
	if ku := r.GetKeepUntil(); ku != nil {
		switch {
		case r.GetKeepFor() != nil:
			v.add(p+".keepUntil", "must not be set together with keepFor")
		case ku.CheckValid() != nil:
			v.add(p+".keepUntil", "must be a valid timestamp")
		case occurred.IsZero():
			// Nothing to compare with; occurredAt's violation is reported.
		case ku.AsTime().Before(occurred):
			v.add(p+".keepUntil", "must not be before occurredAt")
		case minimumOK && ku.AsTime().Before(occurred.Add(minimum)):
			v.add(p+".minimum", "must not exceed the time from occurredAt to keepUntil")
		}
	}
	if r.GetUntilPurposeEnds() != "" {
		v.purpose(p+".untilPurposeEnds", r.GetUntilPurposeEnds())
	}
}

// duration checks an optional retention duration and returns it with
// ok = true when it is set and valid.
func (v *validator) duration(field string, d *durationpb.Duration) (time.Duration, bool) {
	switch {
	case d == nil:
		return 0, false
	case d.CheckValid() != nil:
		v.add(field, "must be a valid duration")
	case d.GetSeconds() < 0 || d.GetNanos() < 0:
		v.add(field, "must not be negative")
	case d.AsDuration() > MaxRetention:
		v.add(field, "must not exceed 100 years")
	default:
		return d.AsDuration(), true
	}
	return 0, false
}

func (v *validator) recipient(p string, r *piledgerv1.Recipient, countryRequired bool, opName string) {
	if r.GetProcessor() == "" {
		v.add(p+".processor", "is required")
	} else {
		v.identifier(p+".processor", r.GetProcessor())
	}
	switch c := r.GetCountry(); {
	case c == "" && countryRequired:
		v.add(p+".country", "is required for "+opName)
	case c != "" && !countryPattern.MatchString(c):
		v.add(p+".country", "must be an ISO 3166-1 alpha-2 code (two uppercase letters)")
	}
	if r.GetSystem() != "" {
		v.identifier(p+".system", r.GetSystem())
	}
}

func (v *validator) place(p string, pl *piledgerv1.Place) {
	if pl.GetKind() == "" {
		v.add(p+".kind", "is required")
	} else if _, ok := v.vocab.PlaceKind(pl.GetKind()); !ok {
		v.add(p+".kind", "must be a place kind of the vocabulary")
	}
	if pl.GetNoticeSignRef() != "" {
		v.text(p+".noticeSignRef", pl.GetNoticeSignRef(), v.lim.MaxRefBytes)
	}
	if pl.GetLocationRef() != "" {
		v.text(p+".locationRef", pl.GetLocationRef(), v.lim.MaxRefBytes)
	}
}

func (v *validator) access(p string, a *piledgerv1.Access) {
	if a.GetActor() == "" {
		v.add(p+".actor", "is required")
	} else {
		v.text(p+".actor", a.GetActor(), v.lim.MaxRefBytes)
	}
	// An access without a reason is well-formed and recorded: leaving the
	// reason out breaks a rule (a finding), and rejecting the event would
	// lose the trace the rule asks for.
	if a.GetReason() != "" {
		v.text(p+".reason", a.GetReason(), v.lim.MaxReasonBytes)
	}
	if _, ok := piledgerv1.AccessKind_name[int32(a.GetKind())]; !ok {
		v.add(p+".kind", "must be a known access kind")
	}
}

func (v *validator) attributes(p string, attrs map[string]string) {
	if len(attrs) > v.lim.MaxAttributes {
		v.add(p, fmt.Sprintf("must have at most %d entries", v.lim.MaxAttributes))
		return
	}
	badKeys := 0
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		if !attrKeyPattern.MatchString(k) {
			badKeys++ // a bad key may be personal data: keep it out of the path
			continue
		}
		v.text(p+"."+k, attrs[k], v.lim.MaxAttributeValueBytes)
	}
	if badKeys > 0 {
		v.add(p, fmt.Sprintf("has %d key(s) that are not 1-64 characters from [A-Za-z0-9_.-]", badKeys))
	}
}

// isCanonicalUUIDv7 reports whether s is an RFC 9562 version 7 UUID in
// canonical form: 36 characters, lowercase hex, hyphens at 8-4-4-4-12.
func isCanonicalUUIDv7(s string) bool {
	if len(s) != 36 {
		return false
	}
	u, err := uuid.Parse(s)
	return err == nil && u.Version() == 7 && u.Variant() == uuid.RFC4122 && u.String() == s
}

// hasUnknownFields reports whether m or a message in it carries fields this
// version of the contract does not define (possible in binary input).
func hasUnknownFields(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		if fd.Message() != nil && !fd.IsList() && !fd.IsMap() && hasUnknownFields(val.Message()) {
			found = true
		}
		return !found
	})
	return found
}
