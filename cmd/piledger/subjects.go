package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// readFlags are the flags of the read-model commands (where, timeline,
// export, due).
type readFlags struct {
	conn     connFlags
	output   string
	timeout  time.Duration
	minIndex int64 // -1: do not wait
	me       bool  // the caller's own records (a data subject's token), no REF
}

// addMeFlag defines --me on a command about one subject.
func addMeFlag(cmd *cobra.Command, fl *readFlags) {
	cmd.Flags().BoolVar(&fl.me, "me", false, `your own records, as the data subject of your token (PILEDGER_TOKEN): no REF, nothing resolved ("subjects/me")`)
}

// addReadFlags defines the read-model commands' flags with the given
// default output and binds them to the environment.
func addReadFlags(cmd *cobra.Command, getenv func(string) string, fl *readFlags, output string) {
	addConnFlags(cmd, &fl.conn)
	f := cmd.Flags()
	f.StringVarP(&fl.output, "output", "o", output, "output: table or json")
	f.DurationVar(&fl.timeout, "timeout", 30*time.Second, "how long to wait for the answer")
	f.Int64Var(&fl.minIndex, "min-index", -1, "read your writes: wait until the read models include the event at this log index (a receipt's index)")
	withEnv(cmd, getenv, withConnFlags("output", "timeout")...)
}

// readClients are the clients of one command run.
type readClients struct {
	subjects piledgerv1.SubjectServiceClient
	holdings piledgerv1.HoldingServiceClient
	server   string
	closer   io.Closer
}

// open checks the flags and dials the server.
func (fl *readFlags) open(ctx context.Context, getenv func(string) string) (context.Context, *readClients, context.CancelFunc, error) {
	if fl.output != "table" && fl.output != "json" {
		return nil, nil, nil, usageError(fmt.Errorf("--output %q: want table or json", fl.output))
	}
	if err := fl.conn.resolve(getenv); err != nil {
		return nil, nil, nil, err
	}
	_, closer, err := fl.conn.dial()
	if err != nil {
		return nil, nil, nil, err
	}
	cc, ok := closer.(grpc.ClientConnInterface)
	if !ok {
		closer.Close()
		return nil, nil, nil, errors.New("internal: the connection is not a gRPC client connection")
	}
	cancel := func() {}
	if fl.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, fl.timeout)
	}
	return ctx, &readClients{
		subjects: piledgerv1.NewSubjectServiceClient(cc),
		holdings: piledgerv1.NewHoldingServiceClient(cc),
		server:   fl.conn.server,
		closer:   closer,
	}, cancel, nil
}

func (fl *readFlags) index() *uint64 {
	if fl.minIndex < 0 {
		return nil
	}
	i := uint64(fl.minIndex)
	return &i
}

// oneSubject checks that a command got exactly its REF argument; anything
// else is a usage error (exit 2).
func oneSubject(cmd *cobra.Command, args []string) error {
	if me, _ := cmd.Flags().GetBool("me"); me {
		if len(args) != 0 {
			return usageError(fmt.Errorf("--me takes no REF argument (see '%s --help')", cmd.CommandPath()))
		}
		return nil
	}
	if len(args) != 1 {
		return usageError(fmt.Errorf("want one REF argument, or --me, got %d (see '%s --help')", len(args), cmd.CommandPath()))
	}
	return nil
}

// subjectArg reads the REF argument: the subject's reference, or "-" to
// read it from the first line of stdin (which keeps it out of shell history
// and process lists).
func subjectArg(cmd *cobra.Command, args []string) (string, error) {
	ref := args[0]
	if ref == "-" {
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		ref = strings.TrimRight(line, "\r\n")
	}
	if ref == "" {
		return "", usageError(errors.New("REF is empty"))
	}
	return ref, nil
}

// subjectRun returns the RunE of a command about one subject: it reads
// REF, dials the server, resolves REF to its pseudonym and calls fn with it.
func (fl *readFlags) subjectRun(getenv func(string) string, fn func(ctx context.Context, cmd *cobra.Command, c *readClients, pseudonym string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		var ref string
		if !fl.me {
			var err error
			if ref, err = subjectArg(cmd, args); err != nil {
				return err
			}
		}
		ctx, c, cancel, err := fl.open(cmd.Context(), getenv)
		if err != nil {
			return err
		}
		defer cancel()
		defer c.closer.Close()
		if fl.me {
			return fn(ctx, cmd, c, "me") // the server names the caller's own pseudonym
		}
		p, err := c.resolve(ctx, ref, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		return fn(ctx, cmd, c, p)
	}
}

// resolve turns a subject reference into its pseudonym, over the body of
// subjects:resolve: the reference never goes into a URL.
func (c *readClients) resolve(ctx context.Context, ref string, stderr io.Writer) (string, error) {
	res, err := c.subjects.ResolveSubject(ctx, &piledgerv1.ResolveSubjectRequest{SubjectRef: ref})
	if err != nil {
		return "", c.error(err, stderr)
	}
	return res.GetPseudonym(), nil
}

// error turns a failed call into an actionable error. NOT_FOUND means no
// event of the subject is recorded.
func (c *readClients) error(err error, stderr io.Writer) error {
	if status.Code(err) == codes.NotFound {
		return errors.New("no events are recorded for this subject (if you just appended some, pass a receipt's index with --min-index)")
	}
	return rpcError(err, c.server, stderr)
}

const (
	cliUse = `REF is the subject's reference in your systems; "-" reads it from the first
line of stdin, which keeps it out of shell history and process lists. It is
sent only in the body of subjects:resolve; every other call names the subject
by its pseudonym. A data subject passes --me instead, with their own token
(PILEDGER_TOKEN): nothing is resolved, the server answers for "subjects/me".`
)

func newWhereCmd(getenv func(string) string) *cobra.Command {
	var fl readFlags
	cmd := &cobra.Command{
		Use:   "where REF | where --me",
		Short: "Show where a subject's data is held, and when it is destroyed",
		Long: `Show every holding of a subject's data: which processor and system hold which
category, since when, why, how they obtained it, and when it must be (or was)
destroyed.

` + cliUse + `

--output json prints the DataMap (protobuf JSON).`,
		Example: `  echo C-104211 | piledger where -
  piledger where C-104211 --output json`,
		Args: oneSubject,
		RunE: fl.subjectRun(getenv, func(ctx context.Context, cmd *cobra.Command, c *readClients, p string) error {
			dm, err := c.subjects.GetDataMap(ctx, &piledgerv1.GetDataMapRequest{Name: "subjects/" + p + "/datamap", MinIndex: fl.index()})
			if err != nil {
				return c.error(err, cmd.ErrOrStderr())
			}
			if fl.output == "json" {
				return printJSON(cmd.OutOrStdout(), dm)
			}
			return printDataMap(cmd.OutOrStdout(), dm)
		}),
	}
	addReadFlags(cmd, getenv, &fl, "table")
	addMeFlag(cmd, &fl)
	return cmd
}

func newTimelineCmd(getenv func(string) string) *cobra.Command {
	var (
		fl    readFlags
		limit int
	)
	cmd := &cobra.Command{
		Use:   "timeline REF | timeline --me",
		Short: "Show a subject's events, newest first, including every access",
		Long: `Show what happened to a subject's data, newest first: collections, uses,
provisions, destructions, consents, and every access with who and why.

` + cliUse + `

--output json prints one SubjectEvent per line (NDJSON).`,
		Args: oneSubject,
		PreRunE: func(*cobra.Command, []string) error {
			if limit < 0 {
				return usageError(errors.New("--limit must not be negative"))
			}
			return nil
		},
		RunE: fl.subjectRun(getenv, func(ctx context.Context, cmd *cobra.Command, c *readClients, p string) error {
			w := cmd.OutOrStdout()
			var tw *tabwriter.Writer
			if fl.output == "table" {
				tw = newEventTable(w)
				defer tw.Flush()
			}
			req := &piledgerv1.ListSubjectEventsRequest{Parent: "subjects/" + p, PageSize: 200, MinIndex: fl.index()}
			printed := 0
			for {
				page, err := c.subjects.ListSubjectEvents(ctx, req)
				if err != nil {
					return c.error(err, cmd.ErrOrStderr())
				}
				for _, e := range page.GetSubjectEvents() {
					if limit > 0 && printed == limit {
						return nil
					}
					printed++
					if tw == nil {
						if err := printJSON(w, e); err != nil {
							return err
						}
						continue
					}
					printEventRow(tw, e.GetEvent())
				}
				if req.PageToken = page.GetNextPageToken(); req.PageToken == "" {
					return nil
				}
			}
		}),
	}
	addReadFlags(cmd, getenv, &fl, "table")
	addMeFlag(cmd, &fl)
	cmd.Flags().IntVar(&limit, "limit", 0, "print at most this many events; 0 prints all")
	return cmd
}

func newExportCmd(getenv func(string) string) *cobra.Command {
	var (
		fl  readFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "export REF | export --me | export --out FILE",
		Short: "Export everything about a subject as one JSON document, or the whole log as a bundle",
		Long: `Export everything the ledger's read models hold about a subject — data map,
every event, consents — as one JSON document (SubjectExport, protobuf JSON):
the basis of an answer to an access request (PIPL Art. 45).

` + cliUse + `

--output table prints the same as where, timeline and the consents, as tables.

With --out FILE and no REF it writes the whole log as a verifiable bundle
instead, the same as piledger log export --out FILE.`,
		Example: `  piledger export resident-42 --reason "access request 2026-77"
  piledger export --out ledger.bundle`,
		Args: func(cmd *cobra.Command, args []string) error {
			if out != "" {
				return cobra.NoArgs(cmd, args)
			}
			return oneSubject(cmd, args)
		},
		RunE: fl.subjectRun(getenv, func(ctx context.Context, cmd *cobra.Command, c *readClients, p string) error {
			out, err := c.subjects.ExportSubject(ctx, &piledgerv1.ExportSubjectRequest{Name: "subjects/" + p, MinIndex: fl.index()})
			if err != nil {
				return c.error(err, cmd.ErrOrStderr())
			}
			w := cmd.OutOrStdout()
			if fl.output == "json" {
				return printJSON(w, out)
			}
			if err := printDataMap(w, out.GetDataMap()); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nEvents (%d), newest first:\n", len(out.GetEvents()))
			tw := newEventTable(w)
			for _, e := range out.GetEvents() {
				printEventRow(tw, e.GetEvent())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nConsents (%d):\n", len(out.GetConsents()))
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "PROCESSOR\tPURPOSE\tSTATE\tSINCE")
			for _, cs := range out.GetConsents() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cs.GetProcessor(), cs.GetPurpose(),
					strings.ToLower(strings.TrimPrefix(cs.GetState().String(), "CONSENT_STATE_")), date(cs.GetUpdateTime()))
			}
			return tw.Flush()
		}),
	}
	addReadFlags(cmd, getenv, &fl, "json")
	addMeFlag(cmd, &fl)
	cmd.Flags().StringVarP(&out, "out", "O", "", "write the whole log as a bundle to this file instead (\"-\": stdout)")
	subject := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if out == "" {
			return subject(cmd, args)
		}
		if err := fl.conn.resolve(getenv); err != nil {
			return err
		}
		return exportLog(cmd.Context(), fl.conn, out, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	return cmd
}

func newEraseCmd(getenv func(string) string) *cobra.Command {
	var (
		fl  readFlags
		yes bool
	)
	cmd := &cobra.Command{
		Use:   "erase REF --yes | erase --me --yes",
		Short: "Erase a subject by crypto-shredding, and print the signed receipt",
		Long: `Erase a subject: every generation of the subject's key is destroyed on every
node, so the subject's log entries and read-model rows can no longer be
decrypted. This cannot be undone; --yes is required.

` + cliUse + `

It prints the erasure receipt: each place the subject's data could live, with
what was done there (DONE), what is still pending and until when (PENDING),
and what is outside the ledger (OUT_OF_SCOPE), then the receipt as a signed
note, which anyone verifies offline with the ledger's verifier key.
Erasing a subject again is harmless. Admins must give --reason.

--output json prints the ErasureReceipt (protobuf JSON).`,
		Example: `  echo C-104211 | piledger erase - --yes --reason "erasure request 2026-12"
  PILEDGER_TOKEN=$(cat my-token) piledger erase --me --yes`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := oneSubject(cmd, args); err != nil {
				return err
			}
			if !yes {
				return usageError(errors.New("erasing a subject cannot be undone: pass --yes to confirm"))
			}
			return nil
		},
		RunE: fl.subjectRun(getenv, func(ctx context.Context, cmd *cobra.Command, c *readClients, p string) error {
			r, err := c.subjects.EraseSubject(ctx, &piledgerv1.EraseSubjectRequest{Name: "subjects/" + p})
			if err != nil {
				return rpcError(err, c.server, cmd.ErrOrStderr())
			}
			w := cmd.OutOrStdout()
			if fl.output == "json" {
				return printJSON(w, r)
			}
			fmt.Fprintf(w, "Erased %s at %s.\n\n", r.GetName(), r.GetEraseTime().AsTime().Format(time.RFC3339))
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "LOCATION\tSTATE\tDETAIL")
			for _, l := range r.GetLocations() {
				state := l.GetState()
				if l.GetUntilTime() != nil {
					state += " until " + date(l.GetUntilTime())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", l.GetName(), state, l.GetDetail())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(w, "\nSigned receipt (verify with the ledger's verifier key):\n\n%s", r.GetSignedNote())
			return nil
		}),
	}
	addReadFlags(cmd, getenv, &fl, "table")
	addMeFlag(cmd, &fl)
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the erasure (it cannot be undone)")
	return cmd
}

func newDueCmd(getenv func(string) string) *cobra.Command {
	var (
		fl        readFlags
		before    string
		processor string
	)
	cmd := &cobra.Command{
		Use:   "due",
		Short: "List holdings whose destruction is due or overdue, by processor",
		Long: `List the holdings not destroyed whose destruction deadline is at or before
--before (default: now), grouped by the processor that holds them. A later
--before also lists what will be due by then (state "held").

--output json prints one Holding per line (NDJSON).`,
		Example: `  piledger due
  piledger due --processor city-police --before 2026-12-31T00:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &piledgerv1.ListDueHoldingsRequest{Processor: processor, PageSize: 500}
			if before != "" {
				t, err := time.Parse(time.RFC3339, before)
				if err != nil {
					return usageError(fmt.Errorf("--before %q: want an RFC 3339 time such as 2026-12-31T00:00:00Z", before))
				}
				req.Before = timestamppb.New(t)
			}
			ctx, c, cancel, err := fl.open(cmd.Context(), getenv)
			if err != nil {
				return err
			}
			defer cancel()
			defer c.closer.Close()
			req.MinIndex = fl.index()
			w := cmd.OutOrStdout()
			var tw *tabwriter.Writer
			if fl.output == "table" {
				tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				defer tw.Flush()
				fmt.Fprintln(tw, "PROCESSOR\tSUBJECT\tDATA\tSINCE\tDESTROY BY\tSTATE\tWHY")
			}
			for {
				page, err := c.holdings.ListDueHoldings(ctx, req)
				if err != nil {
					return c.error(err, cmd.ErrOrStderr())
				}
				for _, h := range page.GetHoldings() {
					if tw == nil {
						if err := printJSON(w, h); err != nil {
							return err
						}
						continue
					}
					data := h.GetDataCategory()
					if h.GetShredded() {
						data = "(erased subject)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.GetProcessor(), shortSubject(h.GetName()), orDash(data),
						date(h.GetObtainTime()), date(h.GetDestroyDueTime()), stateName(h.GetState()), basisName(h.GetDeadlineBasis()))
				}
				if req.PageToken = page.GetNextPageToken(); req.PageToken == "" {
					return nil
				}
			}
		},
	}
	addReadFlags(cmd, getenv, &fl, "table")
	f := cmd.Flags()
	f.StringVar(&before, "before", "", "list holdings due at or before this RFC 3339 time (default: now)")
	f.StringVar(&processor, "processor", "", "only the holdings of this processor")
	return cmd
}

// printDataMap prints a data map as a table a person can read at a glance.
func printDataMap(w io.Writer, dm *piledgerv1.DataMap) error {
	fmt.Fprintf(w, "%s: %d holding(s), states as of %s\n", strings.TrimSuffix(dm.GetName(), "/datamap"), len(dm.GetHoldings()), date(dm.GetEvaluateTime()))
	if n := dm.GetShreddedHoldingCount(); n > 0 {
		fmt.Fprintf(w, "%d holding(s) cannot be shown: the subject's key was destroyed\n", n)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESSOR\tSYSTEM\tDATA\tSINCE\tPURPOSE\tBASIS\tOBTAINED\tSTATE\tDESTROY BY\tWHY\tDESTROYED")
	for _, h := range dm.GetHoldings() {
		data := h.GetDataCategory()
		if h.GetSensitive() {
			data += " (sensitive)"
		}
		if h.GetDiscloseTime() != nil {
			data += " (disclosed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.GetProcessor(), orDash(h.GetSystem()), data,
			date(h.GetObtainTime()), orDash(h.GetPurpose()), orDash(h.GetLegalBasis()), provenance(h), stateName(h.GetState()),
			date(h.GetDestroyDueTime()), basisName(h.GetDeadlineBasis()), date(h.GetDestroyTime()))
	}
	return tw.Flush()
}

// newEventTable starts a table of events.
func newEventTable(w io.Writer) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WHEN\tOPERATION\tPROCESSOR\tDATA\tPURPOSE\tDETAIL")
	return tw
}

// printEventRow prints one event as a row of an event table.
func printEventRow(tw *tabwriter.Writer, ev *piledgerv1.Event) {
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ev.GetOccurredAt().AsTime().UTC().Format("2006-01-02 15:04"),
		operationName(ev.GetOperation()), ev.GetProcessor(), orDash(strings.Join(ev.GetDataCategories(), ",")),
		orDash(ev.GetPurpose()), eventDetail(ev))
}

// provenance says in words how the holder obtained the data.
func provenance(h *piledgerv1.Holding) string {
	from := h.GetSourceProcessor()
	switch h.GetProvenance() {
	case piledgerv1.Provenance_PROVENANCE_COLLECTED:
		return "collected"
	case piledgerv1.Provenance_PROVENANCE_STORED:
		return "stored"
	case piledgerv1.Provenance_PROVENANCE_TRANSMITTED:
		return "transmitted from " + from
	case piledgerv1.Provenance_PROVENANCE_PROVIDED:
		return "provided by " + from
	case piledgerv1.Provenance_PROVENANCE_ENTRUSTED:
		return "entrusted by " + from
	case piledgerv1.Provenance_PROVENANCE_TRANSFERRED_ABROAD:
		return "transferred abroad (" + h.GetCountry() + ") by " + from
	}
	return "-"
}

// eventDetail is the one-line detail of an event in a timeline.
func eventDetail(ev *piledgerv1.Event) string {
	switch {
	case ev.GetAccess() != nil:
		return fmt.Sprintf("%s by %s: %s", strings.ToLower(strings.TrimPrefix(ev.GetAccess().GetKind().String(), "ACCESS_KIND_")),
			ev.GetAccess().GetActor(), ev.GetAccess().GetReason())
	case ev.GetRecipient() != nil:
		d := "to " + ev.GetRecipient().GetProcessor()
		if c := ev.GetRecipient().GetCountry(); c != "" {
			d += " (" + c + ")"
		}
		return d
	case ev.GetRetention().GetUntilPurposeEnds() != "":
		return "kept until " + ev.GetRetention().GetUntilPurposeEnds() + " ends"
	case ev.GetRetention().GetKeepFor() != nil:
		return fmt.Sprintf("kept %d days", int(ev.GetRetention().GetKeepFor().AsDuration().Hours()/24))
	}
	return ""
}

func operationName(op piledgerv1.Operation) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(op.String(), "OPERATION_")), "_", " ")
}

func stateName(s piledgerv1.HoldingState) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.String(), "HOLDING_STATE_")), "_", " ")
}

func basisName(b piledgerv1.DeadlineBasis) string {
	if b == piledgerv1.DeadlineBasis_DEADLINE_BASIS_UNSPECIFIED {
		return "-"
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(b.String(), "DEADLINE_BASIS_")), "_", " ")
}

// shortSubject shortens "subjects/<64 hex>/holdings/..." to the first 12
// characters of the pseudonym, enough to tell subjects apart in a table.
func shortSubject(name string) string {
	p, _, _ := strings.Cut(strings.TrimPrefix(name, "subjects/"), "/")
	if len(p) > 12 {
		return p[:12] + "…"
	}
	return p
}

func date(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format("2006-01-02")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
