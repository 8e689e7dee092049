package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// severityNames are the --severity words, lowest first.
var severityNames = []string{"low", "medium", "high", "critical"}

// parseSeverity turns a --severity word into the enum.
func parseSeverity(s string) (piledgerv1.FindingSeverity, error) {
	v, ok := piledgerv1.FindingSeverity_value["FINDING_SEVERITY_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, usageError(fmt.Errorf("--severity %q: want one of %s", s, strings.Join(severityNames, ", ")))
	}
	return piledgerv1.FindingSeverity(v), nil
}

func severityName(s piledgerv1.FindingSeverity) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "FINDING_SEVERITY_"))
}

func newFindingsCmd(getenv func(string) string) *cobra.Command {
	var (
		fl                                      readFlags
		rule, processor, severity, since, until string
		pageSize                                int
	)
	cmd := &cobra.Command{
		Use:   "findings",
		Short: "List where recorded processing broke a rule of the policy",
		Long: `List the rule findings: each event that broke a rule of the server's policy
(PIPL and the public-security image rules by default, see 'piledger serve
--rules'), with the rule, its severity, the processor, the event and the
holding concerned. Findings about holdings kept past their destruction
deadline are computed when asked (COMPUTED yes).

Regulators and admins see every processor's findings and give --reason (each
read is recorded in the timeline of every subject listed); an emitter sees
its own processor's. The command reads every page; --page-size is how many
findings it asks for per call.

--output json prints one Finding per line (NDJSON, compact protobuf JSON).`,
		Example: `  piledger findings --token-file regulator.token --reason "audit 2026-Q4"
  piledger findings --api-key-file city-police.key --severity high --since 2026-01-01T00:00:00Z
  piledger findings --rule sensitive-without-separate-consent --output json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.NoArgs(cmd, args); err != nil {
				return usageError(err)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &piledgerv1.ListFindingsRequest{Rule: rule, Processor: processor}
			if severity != "" {
				s, err := parseSeverity(severity)
				if err != nil {
					return err
				}
				req.Severity = s
			}
			for _, b := range []struct {
				flag, value string
				dst         **timestamppb.Timestamp
			}{{"since", since, &req.StartTime}, {"until", until, &req.EndTime}} {
				if b.value == "" {
					continue
				}
				t, err := time.Parse(time.RFC3339, b.value)
				if err != nil {
					return usageError(fmt.Errorf("--%s %q: want an RFC 3339 time such as 2026-12-31T00:00:00Z", b.flag, b.value))
				}
				*b.dst = timestamppb.New(t)
			}
			if pageSize < 0 {
				return usageError(errors.New("--page-size must not be negative"))
			}
			req.PageSize = int32(min(pageSize, 1000))
			ctx, c, cancel, err := fl.open(cmd.Context(), getenv)
			if err != nil {
				return err
			}
			defer cancel()
			defer c.closer.Close()
			req.MinIndex = fl.index()
			// open checked that the connection is a gRPC client connection.
			findings := piledgerv1.NewFindingServiceClient(c.closer.(grpc.ClientConnInterface))
			w := cmd.OutOrStdout()
			var tw *tabwriter.Writer
			if fl.output == "table" {
				tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				defer tw.Flush()
				fmt.Fprintln(tw, "TIME\tSEVERITY\tRULE\tPROCESSOR\tEVENT\tHOLDING\tCOMPUTED")
			}
			for {
				page, err := findings.ListFindings(ctx, req)
				if err != nil {
					return rpcError(err, c.server, cmd.ErrOrStderr())
				}
				for _, f := range page.GetFindings() {
					if tw == nil {
						if err := printCompactJSON(w, f); err != nil {
							return err
						}
						continue
					}
					printFindingRow(tw, f)
				}
				if req.PageToken = page.GetNextPageToken(); req.PageToken == "" {
					return nil
				}
			}
		},
	}
	addReadFlags(cmd, getenv, &fl, "table")
	f := cmd.Flags()
	f.StringVar(&rule, "rule", "", "only the findings of this rule (e.g. sensitive-without-separate-consent)")
	f.StringVar(&processor, "processor", "", "only the findings about this processor (an emitter: its own, the default)")
	f.StringVar(&severity, "severity", "", "only the findings of at least this severity: "+strings.Join(severityNames, ", "))
	f.StringVar(&since, "since", "", "only the findings whose event happened at or after this RFC 3339 time")
	f.StringVar(&until, "until", "", "only the findings whose event happened before this RFC 3339 time")
	f.IntVar(&pageSize, "page-size", 500, "findings per call (the command reads every page; at most 1000)")
	completeWords(cmd, "severity", severityNames...)
	completeWords(cmd, "output", "table", "json")
	return cmd
}

// printFindingRow prints one finding as a row of the findings table.
func printFindingRow(tw *tabwriter.Writer, f *piledgerv1.Finding) {
	at := "-"
	if t := f.GetOccurTime(); t != nil {
		at = t.AsTime().UTC().Format("2006-01-02 15:04")
	}
	holding := "-"
	switch {
	case f.GetShredded():
		holding = "(erased subject)"
	case f.GetHolding() != nil:
		holding = orDash(f.GetHolding().GetDataCategory())
	}
	computed := "no"
	if f.GetComputed() {
		computed = "yes"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s #%d\t%s\t%s\n", at, severityName(f.GetSeverity()), f.GetRule(), orDash(f.GetProcessor()),
		operationName(f.GetOperation()), f.GetLogIndex(), holding, computed)
}

// printCompactJSON prints m as one line of protobuf JSON without
// insignificant white space, so the same message always prints the same
// bytes (protojson varies its spacing on purpose).
func printCompactJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}
