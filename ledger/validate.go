package ledger

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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

// IsIdentifier reports whether s is a valid processor or system id: 1-128
// characters from [a-z0-9._-], starting with a letter or digit.
func IsIdentifier(s string) bool {
	if len(s) == 0 || len(s) > 128 || !isLowerAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// isCountryCode reports whether s has the form of an ISO 3166-1 alpha-2
// code: two uppercase ASCII letters.
func isCountryCode(s string) bool {
	return len(s) == 2 && 'A' <= s[0] && s[0] <= 'Z' && 'A' <= s[1] && s[1] <= 'Z'
}

// isAttributeKey reports whether s is 1-64 characters from [A-Za-z0-9_.-].
func isAttributeKey(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLowerAlnum(c) && !('A' <= c && c <= 'Z') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

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
		v.addBatch("must contain at least one event")
	case len(events) > lim.MaxBatchEvents:
		v.addBatch(fmt.Sprintf("must contain at most %d events", lim.MaxBatchEvents))
	default:
		ids := make(map[string]int, len(events))
		for i, e := range events {
			if v.full {
				break
			}
			v.ev = i
			v.event(e, ids)
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

// validator collects the violations of one batch. Fields are named relative
// to the event being checked (ev) and turned into full paths only when a
// violation is recorded: a valid event allocates no path strings.
type validator struct {
	lim   Limits
	now   time.Time
	vocab *Vocabulary
	ev    int // index of the event being checked
	vs    []FieldViolation
	full  bool
}

// add records a violation on field of the current event ("" for the event
// itself). desc must never contain the field's value.
func (v *validator) add(field, desc string) {
	path := fmt.Sprintf("events[%d]", v.ev)
	if field != "" {
		path += "." + field
	}
	v.addPath(path, desc)
}

// addBatch records a violation on the batch as a whole.
func (v *validator) addBatch(desc string) { v.addPath("events", desc) }

func (v *validator) addPath(path, desc string) {
	if len(v.vs) >= maxViolations {
		v.full = true
		return
	}
	v.vs = append(v.vs, FieldViolation{Field: path, Description: desc})
}

func (v *validator) event(e *piledgerv1.Event, ids map[string]int) {
	if e == nil {
		v.add("", "must be set")
		return
	}
	if n := proto.Size(e); n > v.lim.MaxEventBytes {
		v.add("", fmt.Sprintf("must encode to at most %d bytes", v.lim.MaxEventBytes))
		return
	}
	if hasUnknownFields(e.ProtoReflect()) {
		v.add("", "carries fields unknown to this version of the event contract")
	}

	switch id := e.GetEventId(); {
	case id == "":
		v.add("eventId", "is required")
	case !isCanonicalUUIDv7(id):
		v.add("eventId", "must be a UUIDv7 in canonical form (lowercase hex, 8-4-4-4-12)")
	default:
		if j, dup := ids[id]; dup {
			v.add("eventId", fmt.Sprintf("duplicates events[%d].eventId", j))
		} else {
			ids[id] = v.ev
		}
	}

	op := e.GetOperation()
	rule, opOK := opRules[op]
	if !opOK {
		v.add("operation", "must be a known operation other than OPERATION_UNSPECIFIED")
		rule = anyRule
	}

	// present checks a field's presence against the rule and reports
	// whether its content should be checked.
	present := func(field string, set bool, pr presence) bool {
		switch {
		case pr == required && !set:
			v.add(field, "is required for "+op.String())
		case pr == forbidden && set:
			v.add(field, "must not be set: it does not apply to "+op.String())
			return false
		}
		return set
	}

	if present("subjectRef", e.GetSubjectRef() != "", rule.subjectRef) {
		v.text("subjectRef", e.GetSubjectRef(), v.lim.MaxRefBytes)
	}

	var occurred time.Time // zero unless occurredAt is valid
	switch ts := e.GetOccurredAt(); {
	case ts == nil:
		v.add("occurredAt", "is required")
	case ts.CheckValid() != nil:
		v.add("occurredAt", "must be a valid timestamp")
	case ts.AsTime().After(v.now.Add(v.lim.MaxFutureSkew)):
		v.add("occurredAt", fmt.Sprintf("must not be more than %s ahead of the ledger's clock", v.lim.MaxFutureSkew))
	case ts.AsTime().Before(v.lim.EarliestOccurredAt):
		v.add("occurredAt", "must not be before "+v.lim.EarliestOccurredAt.UTC().Format(time.RFC3339))
	default:
		occurred = ts.AsTime()
	}

	if e.GetProcessor() == "" {
		v.add("processor", "is required")
	} else {
		v.identifier("processor", e.GetProcessor())
	}
	if e.GetSystem() != "" {
		v.identifier("system", e.GetSystem())
	}

	if cats := e.GetDataCategories(); present("dataCategories", len(cats) > 0, rule.categories) {
		v.categories(cats)
	}
	if present("purpose", e.GetPurpose() != "", rule.purpose) {
		v.purpose("purpose", e.GetPurpose())
	}
	if present("legalBasis", e.GetLegalBasis() != "", rule.legalBasis) {
		if _, ok := v.vocab.LegalBasis(e.GetLegalBasis()); !ok {
			v.add("legalBasis", "must be a legal basis of the vocabulary (PIPL Art. 13)")
		}
	}
	if c := e.GetConsent(); present("consent", c != nil, rule.consent) && c.GetReference() != "" {
		v.text("consent.reference", c.GetReference(), v.lim.MaxRefBytes)
	}
	if present("retention", e.GetRetention() != nil, rule.retention) {
		v.retention(e.GetRetention(), occurred)
	}
	if present("recipient", e.GetRecipient() != nil, rule.recipient) {
		v.recipient(e.GetRecipient(), rule.countryRequired, op)
	}
	if present("place", e.GetPlace() != nil, rule.place) {
		v.place(e.GetPlace())
	}
	if present("access", e.GetAccess() != nil, rule.access) {
		v.access(e.GetAccess())
	}
	v.attributes(e.GetAttributes())
}

// text checks a free-text field: at most max bytes of valid UTF-8 without
// control characters.
func (v *validator) text(field, s string, max int) {
	if desc := textProblem(s, max); desc != "" {
		v.add(field, desc)
	}
}

// textProblem describes what is wrong with a free-text value, or returns "".
func textProblem(s string, max int) string {
	switch {
	case len(s) > max:
		return fmt.Sprintf("must be at most %d bytes", max)
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case strings.ContainsFunc(s, unicode.IsControl):
		return "must not contain control characters"
	}
	return ""
}

// identifier checks a processor or system id.
func (v *validator) identifier(field, s string) {
	if !IsIdentifier(s) {
		v.add(field, "must be an identifier of 1-128 characters from [a-z0-9._-], starting with a letter or digit")
	}
}

func (v *validator) categories(cats []string) {
	if len(cats) > v.lim.MaxCategories {
		v.add("dataCategories", fmt.Sprintf("must have at most %d entries", v.lim.MaxCategories))
		return
	}
	for j, c := range cats {
		if _, ok := v.vocab.Category(c); !ok {
			v.add(fmt.Sprintf("dataCategories[%d]", j), "must be a data category of the vocabulary or an extension term x-<namespace>.<term>")
			continue
		}
		// At most MaxCategories (a few dozen) entries: a quadratic scan
		// beats a map.
		if k := slices.Index(cats[:j], c); k >= 0 {
			v.add(fmt.Sprintf("dataCategories[%d]", j), fmt.Sprintf("duplicates dataCategories[%d]", k))
		}
	}
}

func (v *validator) purpose(field, id string) {
	if _, ok := v.vocab.Purpose(id); !ok {
		v.add(field, "must be a purpose of the vocabulary or an extension term x-<namespace>.<term>")
	}
}

func (v *validator) retention(r *piledgerv1.Retention, occurred time.Time) {
	if r.GetKeepFor() == nil && r.GetKeepUntil() == nil && r.GetMinimum() == nil && r.GetUntilPurposeEnds() == "" {
		v.add("retention", "must set at least one of keepFor, keepUntil, minimum and untilPurposeEnds")
		return
	}
	keepFor, keepForOK := v.duration("retention.keepFor", r.GetKeepFor())
	minimum, minimumOK := v.duration("retention.minimum", r.GetMinimum())
	if keepForOK && minimumOK && minimum > keepFor {
		v.add("retention.minimum", "must not exceed keepFor")
	}
	if ku := r.GetKeepUntil(); ku != nil {
		switch {
		case r.GetKeepFor() != nil:
			v.add("retention.keepUntil", "must not be set together with keepFor")
		case ku.CheckValid() != nil:
			v.add("retention.keepUntil", "must be a valid timestamp")
		case occurred.IsZero():
			// Nothing to compare with; occurredAt's violation is reported.
		case ku.AsTime().Before(occurred):
			v.add("retention.keepUntil", "must not be before occurredAt")
		case minimumOK && ku.AsTime().Before(occurred.Add(minimum)):
			v.add("retention.minimum", "must not exceed the time from occurredAt to keepUntil")
		}
	}
	if r.GetUntilPurposeEnds() != "" {
		v.purpose("retention.untilPurposeEnds", r.GetUntilPurposeEnds())
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

func (v *validator) recipient(r *piledgerv1.Recipient, countryRequired bool, op piledgerv1.Operation) {
	if r.GetProcessor() == "" {
		v.add("recipient.processor", "is required")
	} else {
		v.identifier("recipient.processor", r.GetProcessor())
	}
	switch c := r.GetCountry(); {
	case c == "" && countryRequired:
		v.add("recipient.country", "is required for "+op.String())
	case c != "" && !isCountryCode(c):
		v.add("recipient.country", "must be an ISO 3166-1 alpha-2 code (two uppercase letters)")
	}
	if r.GetSystem() != "" {
		v.identifier("recipient.system", r.GetSystem())
	}
}

func (v *validator) place(pl *piledgerv1.Place) {
	if pl.GetKind() == "" {
		v.add("place.kind", "is required")
	} else if _, ok := v.vocab.PlaceKind(pl.GetKind()); !ok {
		v.add("place.kind", "must be a place kind of the vocabulary")
	}
	if pl.GetNoticeSignRef() != "" {
		v.text("place.noticeSignRef", pl.GetNoticeSignRef(), v.lim.MaxRefBytes)
	}
	if pl.GetLocationRef() != "" {
		v.text("place.locationRef", pl.GetLocationRef(), v.lim.MaxRefBytes)
	}
}

func (v *validator) access(a *piledgerv1.Access) {
	if a.GetActor() == "" {
		v.add("access.actor", "is required")
	} else {
		v.text("access.actor", a.GetActor(), v.lim.MaxRefBytes)
	}
	// An access without a reason is well-formed and recorded: leaving the
	// reason out breaks a rule (a finding), and rejecting the event would
	// lose the trace the rule asks for.
	if a.GetReason() != "" {
		v.text("access.reason", a.GetReason(), v.lim.MaxReasonBytes)
	}
	if _, ok := piledgerv1.AccessKind_name[int32(a.GetKind())]; !ok {
		v.add("access.kind", "must be a known access kind")
	}
}

// attributes checks the free-form attributes. Violations are reported in
// key order; valid attributes are checked without sorting.
func (v *validator) attributes(attrs map[string]string) {
	if len(attrs) > v.lim.MaxAttributes {
		v.add("attributes", fmt.Sprintf("must have at most %d entries", v.lim.MaxAttributes))
		return
	}
	valid := true
	for k, val := range attrs {
		if !isAttributeKey(k) || textProblem(val, v.lim.MaxAttributeValueBytes) != "" {
			valid = false
			break
		}
	}
	if valid {
		return
	}
	badKeys := 0
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		if !isAttributeKey(k) {
			badKeys++ // a bad key may be personal data: keep it out of the path
			continue
		}
		v.text("attributes."+k, attrs[k], v.lim.MaxAttributeValueBytes)
	}
	if badKeys > 0 {
		v.add("attributes", fmt.Sprintf("has %d key(s) that are not 1-64 characters from [A-Za-z0-9_.-]", badKeys))
	}
}

// isCanonicalUUIDv7 reports whether s is an RFC 9562 version 7 UUID in
// canonical form: 36 characters, lowercase hex, hyphens at 8-4-4-4-12, the
// version digit 7 and the RFC 9562 variant (10xx).
func isCanonicalUUIDv7(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return s[14] == '7' && strings.IndexByte("89ab", s[19]) >= 0
}

// hasUnknownFields reports whether m or a message in it carries fields this
// version of the contract does not define (possible in binary input). Only
// singular message fields can nest: the contract has no repeated or map
// fields of messages.
func hasUnknownFields(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() || !m.Has(fd) {
			continue
		}
		if hasUnknownFields(m.Get(fd).Message()) {
			return true
		}
	}
	return false
}
