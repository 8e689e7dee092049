package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// emitFlags are the flags of `piledger emit`.
type emitFlags struct {
	conn    connFlags
	file    string
	output  string
	timeout time.Duration
	event   eventFlags
}

// eventFlags describe one event on the command line.
type eventFlags struct {
	eventID, subject, operation, occurredAt, processor, system string
	categories                                                 []string
	purpose, legalBasis                                        string
	separateConsent                                            bool
	consentRef                                                 string
	keepFor, minimum                                           time.Duration
	untilPurposeEnds                                           string
	recipient, recipientCountry                                string
	place, noticeSign                                          string
	accessActor, accessReason, accessKind                      string
	attributes                                                 map[string]string
}

// eventFlagNames are the flags that build an event; they cannot be combined
// with --file.
var eventFlagNames = []string{
	"event-id", "subject", "operation", "occurred-at", "processor", "system", "category",
	"purpose", "legal-basis", "separate-consent", "consent-ref", "keep-for", "min-retention",
	"until-purpose-ends", "recipient", "recipient-country", "place", "notice-sign",
	"access-actor", "access-reason", "access-kind", "attr",
}

func newEmitCmd(getenv func(string) string) *cobra.Command {
	var fl emitFlags
	cmd := &cobra.Command{
		Use:   "emit",
		Short: "Append events to a running piledger",
		Long: `Append events to a running piledger over gRPC and print their receipts.

The events come either from flags (one event), or from --file: a JSON array of
events, or newline-delimited JSON with one event per line ("-" reads stdin).
Events are protobuf JSON with lowerCamelCase names; unknown fields are errors.
A missing eventId on the command line is generated (UUIDv7) and a missing
--occurred-at is now. Prefer --file for real subject references: command lines
end up in shell history and process lists.

Exit status: 0 when every event is recorded, 2 when the events are rejected
(each field violation is printed on its own line; nothing was recorded), 1 on
any other failure.`,
		Example: `  piledger emit --operation collect --subject C-1042 --processor acme-gates \
    --category face --purpose access-control --place public-street
  piledger emit --file events.ndjson --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := fl.conn.resolve(getenv); err != nil {
				return err
			}
			events, err := emitEvents(cmd, &fl)
			if err != nil {
				return err
			}
			return emit(cmd.Context(), fl, events, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addConnFlags(cmd, &fl.conn)
	f := cmd.Flags()
	f.StringVarP(&fl.file, "file", "f", "", `events file: JSON array or NDJSON; "-" reads stdin`)
	f.StringVarP(&fl.output, "output", "o", "table", "output: table or json")
	f.DurationVar(&fl.timeout, "timeout", 30*time.Second, "how long to wait for the receipts")

	ev := &fl.event
	f.StringVar(&ev.eventID, "event-id", "", "event id, a UUIDv7 (default: generated)")
	f.StringVar(&ev.subject, "subject", "", "the data subject's reference in your systems")
	f.StringVar(&ev.operation, "operation", "", "what happened: collect, store, use, process, transmit, provide, entrust, disclose, transfer-abroad, destroy, access, consent-granted, consent-withdrawn, purpose-ended")
	f.StringVar(&ev.occurredAt, "occurred-at", "", "when it happened, RFC 3339 (default: now)")
	f.StringVar(&ev.processor, "processor", "", "the processor (handler) that did it")
	f.StringVar(&ev.system, "system", "", "the system inside the processor")
	f.StringSliceVar(&ev.categories, "category", nil, "data category (repeatable, or comma-separated)")
	f.StringVar(&ev.purpose, "purpose", "", "purpose, from the vocabulary")
	f.StringVar(&ev.legalBasis, "legal-basis", "", "legal basis, from the vocabulary")
	f.BoolVar(&ev.separateConsent, "separate-consent", false, "the consent relied upon was a separate consent")
	f.StringVar(&ev.consentRef, "consent-ref", "", "reference to the consent record")
	f.DurationVar(&ev.keepFor, "keep-for", 0, "retention: keep this long after occurred-at (e.g. 720h)")
	f.DurationVar(&ev.minimum, "min-retention", 0, "retention: keep at least this long")
	f.StringVar(&ev.untilPurposeEnds, "until-purpose-ends", "", "retention: keep until this purpose ends")
	f.StringVar(&ev.recipient, "recipient", "", "the receiving processor")
	f.StringVar(&ev.recipientCountry, "recipient-country", "", "the recipient's country, ISO 3166-1 alpha-2")
	f.StringVar(&ev.place, "place", "", "kind of place of the capture, from the vocabulary")
	f.StringVar(&ev.noticeSign, "notice-sign", "", "reference to the posted notice sign")
	f.StringVar(&ev.accessActor, "access-actor", "", "who accessed the data")
	f.StringVar(&ev.accessReason, "access-reason", "", "why the data was accessed")
	f.StringVar(&ev.accessKind, "access-kind", "", "how the data was accessed: view, copy or retrieve")
	f.StringToStringVar(&ev.attributes, "attr", nil, "attribute key=value (repeatable)")
	withEnv(cmd, getenv, withConnFlags("output", "timeout")...)
	return cmd
}

// emitEvents returns the events to append, from --file or from the event
// flags.
func emitEvents(cmd *cobra.Command, fl *emitFlags) ([]*piledgerv1.Event, error) {
	if fl.output != "table" && fl.output != "json" {
		return nil, usageError(fmt.Errorf("--output %q: want table or json", fl.output))
	}
	var eventFlagSet []string
	for _, name := range eventFlagNames {
		if cmd.Flags().Changed(name) {
			eventFlagSet = append(eventFlagSet, "--"+name)
		}
	}
	switch {
	case fl.file != "" && len(eventFlagSet) > 0:
		return nil, usageError(fmt.Errorf("--file cannot be combined with %s", strings.Join(eventFlagSet, ", ")))
	case fl.file == "-":
		return readEvents(cmd.InOrStdin())
	case fl.file != "":
		f, err := os.Open(fl.file)
		if err != nil {
			return nil, usageError(err)
		}
		defer f.Close()
		return readEvents(f)
	case len(eventFlagSet) == 0:
		return nil, usageError(errors.New("nothing to emit: give --file, or describe the event with --operation, --subject, --processor, ..."))
	default:
		e, err := fl.event.build(time.Now())
		if err != nil {
			return nil, err
		}
		return []*piledgerv1.Event{e}, nil
	}
}

// readEvents reads a JSON array of events, or a sequence of JSON events
// (NDJSON), in protobuf JSON form. Unknown fields are errors.
func readEvents(r io.Reader) ([]*piledgerv1.Event, error) {
	br := bufio.NewReader(r)
	var raws []json.RawMessage
	d := json.NewDecoder(br)
	if first, err := firstNonSpace(br); err == nil && first == '[' {
		if err := d.Decode(&raws); err != nil {
			return nil, usageError(fmt.Errorf("events file: %w", err))
		}
		if _, err := d.Token(); !errors.Is(err, io.EOF) {
			return nil, usageError(errors.New("events file: unexpected data after the JSON array"))
		}
	} else {
		for {
			var raw json.RawMessage
			if err := d.Decode(&raw); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, usageError(fmt.Errorf("events file: event %d: %w", len(raws), err))
			}
			raws = append(raws, raw)
		}
	}
	if len(raws) == 0 {
		return nil, usageError(errors.New("events file: no events"))
	}
	events := make([]*piledgerv1.Event, len(raws))
	for i, raw := range raws {
		events[i] = new(piledgerv1.Event)
		if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(raw, events[i]); err != nil {
			return nil, usageError(fmt.Errorf("events file: event %d: %w", i, err))
		}
	}
	return events, nil
}

// firstNonSpace returns the first byte that is not JSON white space, without
// consuming it.
func firstNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.Peek(1)
		if err != nil {
			return 0, err
		}
		if !bytes.ContainsAny(b, " \t\r\n") {
			return b[0], nil
		}
		_, _ = br.ReadByte()
	}
}

// build returns the event the flags describe. Only the form of the flags is
// checked here; the server validates the event.
func (ev *eventFlags) build(now time.Time) (*piledgerv1.Event, error) {
	e := &piledgerv1.Event{
		EventId:        ev.eventID,
		SubjectRef:     ev.subject,
		Processor:      ev.processor,
		System:         ev.system,
		DataCategories: ev.categories,
		Purpose:        ev.purpose,
		LegalBasis:     ev.legalBasis,
		Attributes:     ev.attributes,
	}
	if e.EventId == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("generate event id: %w", err)
		}
		e.EventId = id.String()
	}
	op, err := parseEnum("--operation", ev.operation, "OPERATION_", piledgerv1.Operation_value)
	if err != nil {
		return nil, err
	}
	e.Operation = piledgerv1.Operation(op)
	occurred := now
	if ev.occurredAt != "" {
		if occurred, err = time.Parse(time.RFC3339Nano, ev.occurredAt); err != nil {
			return nil, usageError(fmt.Errorf("--occurred-at: want RFC 3339, such as 2026-11-25T09:30:00Z"))
		}
	}
	e.OccurredAt = timestamppb.New(occurred)
	if ev.separateConsent || ev.consentRef != "" {
		e.Consent = &piledgerv1.Consent{Separate: ev.separateConsent, Reference: ev.consentRef}
	}
	if ev.keepFor != 0 || ev.minimum != 0 || ev.untilPurposeEnds != "" {
		e.Retention = &piledgerv1.Retention{UntilPurposeEnds: ev.untilPurposeEnds}
		if ev.keepFor != 0 {
			e.Retention.KeepFor = durationpb.New(ev.keepFor)
		}
		if ev.minimum != 0 {
			e.Retention.Minimum = durationpb.New(ev.minimum)
		}
	}
	if ev.recipient != "" || ev.recipientCountry != "" {
		e.Recipient = &piledgerv1.Recipient{Processor: ev.recipient, Country: ev.recipientCountry}
	}
	if ev.place != "" || ev.noticeSign != "" {
		e.Place = &piledgerv1.Place{Kind: ev.place, NoticeSignRef: ev.noticeSign}
	}
	if ev.accessActor != "" || ev.accessReason != "" || ev.accessKind != "" {
		kind, err := parseEnum("--access-kind", ev.accessKind, "ACCESS_KIND_", piledgerv1.AccessKind_value)
		if err != nil && ev.accessKind != "" {
			return nil, err
		}
		e.Access = &piledgerv1.Access{Actor: ev.accessActor, Reason: ev.accessReason, Kind: piledgerv1.AccessKind(kind)}
	}
	return e, nil
}

// parseEnum maps a lowercase, dash-separated name ("transfer-abroad") or the
// full enum name ("OPERATION_TRANSFER_ABROAD") to its value.
func parseEnum(flag, s, prefix string, values map[string]int32) (int32, error) {
	name := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	if v, ok := values[prefix+strings.TrimPrefix(name, prefix)]; ok && v != 0 {
		return v, nil
	}
	var valid []string
	for n, v := range values {
		if v != 0 {
			valid = append(valid, strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(n, prefix)), "_", "-"))
		}
	}
	slices.Sort(valid)
	return 0, usageError(fmt.Errorf("%s %q: want one of %s", flag, s, strings.Join(valid, ", ")))
}

// emit appends events and prints the receipts.
func emit(ctx context.Context, fl emitFlags, events []*piledgerv1.Event, stdout, stderr io.Writer) error {
	client, conn, err := fl.conn.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if fl.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fl.timeout)
		defer cancel()
	}
	resp, err := client.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: events})
	if err != nil {
		return rpcError(err, fl.conn.server, stderr)
	}
	if fl.output == "json" {
		b, err := protojson.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tEVENT ID\tBLOCK\tRECORDED AT\tDUPLICATE\tPSEUDONYM")
	for _, r := range resp.GetReceipts() {
		fmt.Fprintf(tw, "%d\t%s\t%d/%d\t%s\t%t\t%s\n", r.GetIndex(), r.GetEventId(), r.GetBlockSequence(), r.GetBlockOffset(),
			r.GetRecordedAt().AsTime().Format(time.RFC3339Nano), r.GetDuplicate(), r.GetPseudonym())
	}
	return tw.Flush()
}
