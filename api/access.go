package api

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Every look is recorded: a successful read of a person's records by anyone
// but that person appends, before the records leave the server, one
// OPERATION_ACCESS event per person to the log, under processor "piledger"
// (the ledger itself), so that it shows in the person's timeline. The event
// says who (access.actor: the verified identity), why (access.reason: the
// caller's x-piledger-reason), how (access.kind), what (the data
// categories returned, and the method in attributes) and when (occurredAt).
// If the events cannot be appended, the records are not sent.

// AccessLog appends events the ledger writes itself about subjects it knows
// by pseudonym. *ledger.Ledger implements it (AppendPseudonymous).
type AccessLog interface {
	AppendPseudonymous(ctx context.Context, events []*piledgerv1.Event) ([]*piledgerv1.Receipt, error)
}

const (
	// accessSystem is the system of access events: the api.
	accessSystem = "api"
	// anyRecordCategory is the data category of an access that returned no
	// categorized data (an empty page of a subject's events).
	anyRecordCategory = "x-piledger.ledger-records"
	// accessBatchEvents bounds the events of one access append (the ledger
	// takes at most ledger.DefaultMaxBatchEvents).
	accessBatchEvents = 500
	// streamAccessChunk is how many streamed messages are held back to be
	// recorded together before they are sent.
	streamAccessChunk = 128
	// maxActorBytes is the ledger's limit on access.actor.
	maxActorBytes = ledger.DefaultMaxRefBytes
)

// accessed collects the subjects a response shows, with the data categories
// shown of each.
type accessed map[string]map[string]bool

func (a accessed) add(pseudonym string, categories ...string) {
	if !crypto.IsPseudonym(pseudonym) {
		return
	}
	cats, ok := a[pseudonym]
	if !ok {
		cats = make(map[string]bool)
		a[pseudonym] = cats
	}
	for _, c := range categories {
		if c != "" {
			cats[c] = true
		}
	}
}

// collect adds what msg shows. requested is the subject the request named,
// if any.
func (a accessed) collect(msg proto.Message, requested string) {
	switch m := msg.(type) {
	case *piledgerv1.DataMap:
		a.add(requested)
		for _, h := range m.GetHoldings() {
			a.add(requested, h.GetDataCategory())
		}
	case *piledgerv1.ListSubjectEventsResponse:
		a.add(requested)
		for _, e := range m.GetSubjectEvents() {
			a.add(requested, e.GetEvent().GetDataCategories()...)
		}
	case *piledgerv1.SubjectExport:
		a.add(requested)
		for _, h := range m.GetDataMap().GetHoldings() {
			a.add(requested, h.GetDataCategory())
		}
		for _, e := range m.GetEvents() {
			a.add(requested, e.GetEvent().GetDataCategories()...)
		}
		for _, c := range m.GetConsents() {
			a.add(requested, c.GetDataCategories()...)
		}
	case *piledgerv1.ListDueHoldingsResponse:
		for _, h := range m.GetHoldings() {
			a.add(holdingSubject(h.GetName()), h.GetDataCategory())
		}
	case *piledgerv1.ListFindingsResponse:
		// A finding names its subject and shows what was done with their
		// data, and its holding when it has one. An erased subject's
		// finding shows no holding: no record, as for a shredded entry.
		for _, f := range m.GetFindings() {
			if !f.GetShredded() {
				a.add(f.GetPseudonym(), f.GetHolding().GetDataCategory())
			}
		}
	case *piledgerv1.LogEntry:
		// A shredded entry shows its clear header only: no record.
		if m.GetEvent() != nil && !m.GetShredded() {
			a.add(m.GetHeader().GetPseudonym(), m.GetEvent().GetDataCategories()...)
		}
	}
}

// holdingSubject returns the pseudonym of "subjects/{pseudonym}/holdings/...".
func holdingSubject(name string) string {
	rest, ok := strings.CutPrefix(name, "subjects/")
	if !ok {
		return ""
	}
	p, _, _ := strings.Cut(rest, "/")
	return p
}

// minus returns what a shows that done does not already cover, and adds it
// to done.
func (a accessed) minus(done accessed) accessed {
	out := make(accessed)
	for p, cats := range a {
		seen, ok := done[p]
		if !ok {
			seen = make(map[string]bool)
			done[p] = seen
			out[p] = cats
			continue
		}
		for c := range cats {
			if !seen[c] {
				out.add(p, c)
			}
		}
	}
	for p, cats := range out {
		for c := range cats {
			done[p][c] = true
		}
	}
	return out
}

// recordAccess appends the access events of one call. It returns an error
// (the ledger's) when they could not all be appended; the caller must then
// not send the records.
func (s *security) recordAccess(ctx context.Context, method string, id *Identity, rule *accessRule, reason string, a accessed) error {
	if len(a) == 0 {
		return nil
	}
	now := time.Now().Truncate(time.Millisecond)
	attrs := map[string]string{"method": method, "credential": id.Credential, "role": id.Role.String()}
	if id.Issuer != "" {
		attrs["issuer"] = id.Issuer
	}
	if id.KeyID != "" {
		attrs["apiKeyId"] = id.KeyID
	}
	actor := id.actor()
	if len(actor) > maxActorBytes {
		attrs["actor"] = actor // the full identity; access.actor is capped
		actor = truncateUTF8(actor, maxActorBytes)
	}
	if reason == "" {
		reason = rule.emitterReason
	}
	pseudonyms := make([]string, 0, len(a))
	for p := range a {
		pseudonyms = append(pseudonyms, p)
	}
	slices.Sort(pseudonyms)
	var events []*piledgerv1.Event
	for _, p := range pseudonyms {
		cats := make([]string, 0, len(a[p]))
		for c := range a[p] {
			cats = append(cats, c)
		}
		if len(cats) == 0 {
			cats = append(cats, anyRecordCategory)
		}
		slices.Sort(cats)
		for chunk := range slices.Chunk(cats, ledger.DefaultMaxCategories) {
			eid, err := uuid.NewV7()
			if err != nil {
				return fmt.Errorf("api: access event id: %w", err)
			}
			events = append(events, &piledgerv1.Event{
				EventId:        eid.String(),
				SubjectRef:     p,
				Operation:      piledgerv1.Operation_OPERATION_ACCESS,
				OccurredAt:     timestamppb.New(now),
				Processor:      LedgerProcessor,
				System:         accessSystem,
				DataCategories: chunk,
				Access:         &piledgerv1.Access{Actor: actor, Reason: reason, Kind: rule.kind},
				Attributes:     attrs,
			})
		}
	}
	for batch := range slices.Chunk(events, accessBatchEvents) {
		if _, err := s.access.AppendPseudonymous(ctx, batch); err != nil {
			return fmt.Errorf("api: record access: %w", err)
		}
		s.metrics.accessEvents.WithLabelValues(methodLabel(method)).Add(float64(len(batch)))
	}
	return nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
