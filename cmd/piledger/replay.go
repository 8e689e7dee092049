package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

func newReplayCmd(getenv func(string) string) *cobra.Command {
	var (
		conn         connFlags
		start, limit uint64
		output       string
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Print the log in order, from a position",
		Long: `Stream the log from a running piledger, in log order, decrypted.

--output json prints one LogEntry per line (protobuf JSON, NDJSON); entries of
crypto-shredded subjects carry only their clear header; an erasure entry
(header.erasure) carries what was erased instead of an event. --output table
prints the clear headers only, never event contents (an erasure entry's
operation reads ERASURE).`,
		Example: `  piledger replay --output table
  piledger replay --start 1000 --limit 50 > entries.ndjson
  PILEDGER_SERVER=ledger.internal:7070 piledger replay --tls-ca ca.pem --api-key-file key.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "json" && output != "table" {
				return usageError(fmt.Errorf("--output %q: want json or table", output))
			}
			if err := conn.resolve(getenv); err != nil {
				return err
			}
			server := conn.server
			client, closer, err := conn.dial()
			if err != nil {
				return err
			}
			defer closer.Close()
			stream, err := client.ListLogEntries(cmd.Context(), &piledgerv1.ListLogEntriesRequest{Start: start, Limit: limit})
			if err != nil {
				return rpcError(err, server, cmd.ErrOrStderr())
			}
			w := cmd.OutOrStdout()
			var tw *tabwriter.Writer
			if output == "table" {
				tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				defer tw.Flush()
				fmt.Fprintln(tw, "INDEX\tBLOCK\tEVENT ID\tOPERATION\tPROCESSOR\tRECORDED AT\tSHREDDED\tPSEUDONYM")
			}
			for {
				entry, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return rpcError(err, server, cmd.ErrOrStderr())
				}
				if tw != nil {
					h := entry.GetHeader()
					op := h.GetOperation().String()
					if h.GetErasure() {
						op = "ERASURE" // the ledger's record of a subject's erasure
					}
					fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%t\t%s\n", entry.GetIndex(), entry.GetBlockSequence(),
						h.GetEventId(), op, h.GetProcessor(),
						h.GetRecordedAt().AsTime().Format(time.RFC3339Nano), entry.GetShredded(), h.GetPseudonym())
					continue
				}
				b, err := protojson.Marshal(entry)
				if err != nil {
					return err
				}
				if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
					return err
				}
			}
		},
	}
	addConnFlags(cmd, &conn)
	f := cmd.Flags()
	f.Uint64Var(&start, "start", 0, "log index to start at (0-based)")
	f.Uint64Var(&limit, "limit", 0, "maximum number of entries; 0 reads to the current end")
	f.StringVarP(&output, "output", "o", "json", "output: json (NDJSON) or table")
	withEnv(cmd, getenv, withConnFlags("output")...)
	return cmd
}
