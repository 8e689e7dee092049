package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/piledger/piledger/ledger/tlog"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Exit codes of piledger verify, beside exitOK (verified), exitFailure and
// exitInvalid (usage).
const (
	// exitTampered: the evidence shows the log was altered (or a checkpoint
	// is not signed by the key).
	exitTampered = 3
	// exitUnreadable: the input is not a readable bundle or checkpoint;
	// nothing could be concluded.
	exitUnreadable = 4
)

// verifyFlags are the flags of piledger verify.
type verifyFlags struct {
	conn    connFlags
	key     string
	keyFile string
	origin  string
	output  string
	live    bool
	since   string
	save    string
}

func newVerifyCmd(getenv func(string) string) *cobra.Command {
	var fl verifyFlags
	cmd := &cobra.Command{
		Use:   "verify FILE | verify --server ADDR [--since CHECKPOINT] [--save CHECKPOINT]",
		Short: "Verify the log: a bundle offline, or a live server against a saved checkpoint",
		Long: `Verify the log without trusting its operator.

piledger verify FILE reads a bundle written by piledger log export, with no
server and no private key: it recomputes the RFC 6962 Merkle tree from every
stored envelope, checks every checkpoint's signature and that every
checkpoint's root matches the recomputed tree (so each is consistent with
every earlier one), checks that no block, event or checkpoint is missing, and
counts the events per operation and the erased ones. On tampering it says
where: which log indexes, blocks and checkpoint.

piledger verify --server ADDR --since FILE fetches the server's latest
checkpoint and a consistency proof from the checkpoint saved in FILE (by
piledger log checkpoint --save, or an earlier verify --save) and verifies
both: the log only grew since. Without --since it only checks the latest
checkpoint's signature.

Pin the operator's published key with --key or --key-file; without it the
key in the bundle (or given by the server) is used and printed, and the
result proves only consistency with that key.

Exit status: 0 verified, 3 tampered (the evidence contradicts itself or a
signature), 4 unreadable input, 2 usage error, 1 other failures (server
unreachable). Progress is shown on stderr when it is a terminal.`,
		Example: `  piledger verify ledger.bundle --key-file piledger.vkey
  piledger verify --server ledger.example.org:7070 --since saved.cp --save saved.cp`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// --server also counts when set through $PILEDGER_SERVER.
			fl.live = len(args) == 0 && (cmd.Flags().Changed("server") || fl.since != "")
			switch {
			case len(args) == 1 && (fl.since != "" || fl.save != ""):
				return usageError(errors.New("--since and --save go with --server, not with a bundle FILE"))
			case len(args) == 0 && !fl.live:
				return usageError(errors.New("give a bundle FILE, or --server ADDR to verify a live server"))
			case fl.output != "text" && fl.output != "json":
				return usageError(fmt.Errorf("--output %q: want text or json", fl.output))
			}
			vkey, err := fl.verifierKey()
			if err != nil {
				return err
			}
			if fl.live {
				if err := fl.conn.resolve(getenv); err != nil {
					return err
				}
				return verifyLive(cmd.Context(), fl, vkey, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			return verifyBundle(args[0], fl, vkey, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addConnFlags(cmd, &fl.conn)
	f := cmd.Flags()
	f.StringVar(&fl.key, "key", "", "the operator's published verifier key (<name>+<hash>+<base64>)")
	f.StringVar(&fl.keyFile, "key-file", "", "file holding the operator's published verifier key")
	f.StringVar(&fl.origin, "origin", "", "the log's expected origin; default: the key's name")
	f.StringVarP(&fl.output, "output", "o", "text", "report format: text or json")
	f.StringVar(&fl.since, "since", "", "with --server: a checkpoint saved earlier, which the server's log must extend")
	f.StringVar(&fl.save, "save", "", "with --server: write the server's verified latest checkpoint to this file")
	withEnv(cmd, getenv, withConnFlags("key", "key-file", "origin")...)
	return cmd
}

// verifierKey returns the pinned key from --key or --key-file, or "".
func (fl *verifyFlags) verifierKey() (string, error) {
	switch {
	case fl.key != "" && fl.keyFile != "":
		return "", usageError(errors.New("give --key or --key-file, not both"))
	case fl.keyFile != "":
		b, err := os.ReadFile(fl.keyFile)
		if err != nil {
			return "", usageError(fmt.Errorf("--key-file: %w", err))
		}
		fl.key = strings.TrimSpace(string(b))
	}
	if fl.key == "" {
		return "", nil
	}
	if _, err := tlog.NewVerifier(fl.key); err != nil {
		return "", usageError(fmt.Errorf("--key: not a signed-note verifier key (<name>+<hash>+<base64>): %w", err))
	}
	return fl.key, nil
}

// verdict maps a verification error to its exit code and message.
func verdict(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tlog.ErrTampered), errors.Is(err, tlog.ErrBadCheckpoint):
		msg := strings.TrimPrefix(err.Error(), "tlog: tampered: ")
		return &exitError{code: exitTampered, err: fmt.Errorf("TAMPERED: %s", msg)}
	case errors.Is(err, tlog.ErrUnreadable):
		return &exitError{code: exitUnreadable, err: err}
	default:
		return err
	}
}

func verifyBundle(path string, fl verifyFlags, vkey string, stdout, stderr io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return &exitError{code: exitUnreadable, err: err}
	}
	defer f.Close()
	var size int64
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	prog := newProgress(stderr, size)
	rep, err := tlog.Verify(f, tlog.Options{VerifierKey: vkey, Origin: fl.origin, Progress: prog.update})
	prog.done()
	if err != nil {
		return verdict(err)
	}
	return printReport(stdout, fl.output, rep)
}

// printReport writes the verification report.
func printReport(w io.Writer, output string, rep *tlog.Report) error {
	latest := rep.Latest
	if output == "json" {
		type report struct {
			Verified      bool              `json:"verified"`
			Origin        string            `json:"origin"`
			VerifierKey   string            `json:"verifierKey"`
			KeyFromBundle bool              `json:"keyFromBundle"`
			Events        uint64            `json:"events"`
			Erased        uint64            `json:"erased"`
			Blocks        uint64            `json:"blocks"`
			Checkpoints   uint64            `json:"checkpoints"`
			TreeSize      uint64            `json:"treeSize"`
			RootHash      string            `json:"rootHash"`
			Operations    map[string]uint64 `json:"operations"`
			Checkpoint    string            `json:"checkpoint,omitempty"`
		}
		r := report{Verified: true, Origin: rep.Origin, VerifierKey: rep.VerifierKey, KeyFromBundle: rep.KeyFromBundle,
			Events: rep.Events, Erased: rep.Erased, Blocks: rep.Blocks, Checkpoints: rep.Checkpoints,
			TreeSize: rep.Events, RootHash: base64.StdEncoding.EncodeToString(rep.Root), Operations: rep.Operations}
		if latest != nil {
			r.Checkpoint = string(latest.Note)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Fprintf(w, "verified: %d events in %d blocks, %d signed checkpoints\n", rep.Events, rep.Blocks, rep.Checkpoints)
	fmt.Fprintf(w, "tree size %d, root %s\n", rep.Events, base64.StdEncoding.EncodeToString(rep.Root))
	fmt.Fprintf(w, "erased (subject key destroyed, still verified): %d events\n", rep.Erased)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "OPERATION\tEVENTS")
	ops := make([]string, 0, len(rep.Operations))
	for op := range rep.Operations {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	for _, op := range ops {
		fmt.Fprintf(tw, "%s\t%d\n", op, rep.Operations[op])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "origin %s, signed by %s\n", rep.Origin, rep.VerifierKey)
	if rep.KeyFromBundle {
		fmt.Fprintln(w, "note: the key was taken from the bundle itself; pin the operator's published key with --key or --key-file")
	}
	return nil
}

// verifyLive checks the server's latest checkpoint, and its consistency
// with the checkpoint saved in fl.since.
func verifyLive(ctx context.Context, fl verifyFlags, vkey string, stdout, stderr io.Writer) error {
	client, closer, err := transparencyClient(fl.conn)
	if err != nil {
		return err
	}
	defer closer.Close()
	if vkey == "" {
		k, err := client.GetVerifierKey(ctx, &piledgerv1.GetVerifierKeyRequest{})
		if err != nil {
			return rpcError(err, fl.conn.server, stderr)
		}
		vkey = k.GetKey()
		fmt.Fprintf(stderr, "note: using the key the server gives, %s; pin the operator's published key with --key\n", vkey)
	}
	v, err := tlog.NewVerifier(vkey)
	if err != nil {
		return verdict(err)
	}
	origin := fl.origin
	if origin == "" {
		origin = v.Name()
	}
	var older *tlog.Checkpoint
	if fl.since != "" {
		b, err := os.ReadFile(fl.since)
		if err != nil {
			return &exitError{code: exitUnreadable, err: fmt.Errorf("--since: %w", err)}
		}
		if older, err = tlog.OpenCheckpoint(b, origin, v); err != nil {
			return verdict(fmt.Errorf("the saved checkpoint %s: %w", fl.since, err))
		}
	}
	resp, err := client.GetCheckpoint(ctx, &piledgerv1.GetCheckpointRequest{})
	if err != nil {
		return rpcError(err, fl.conn.server, stderr)
	}
	newer, err := tlog.OpenCheckpoint([]byte(resp.GetNote()), origin, v)
	if err != nil {
		return verdict(fmt.Errorf("the server's latest checkpoint: %w", err))
	}
	if older != nil {
		var hashes [][]byte
		if newer.Size > older.Size && older.Size > 0 {
			p, err := client.GetConsistencyProof(ctx, &piledgerv1.GetConsistencyProofRequest{From: older.Size, To: newer.Size})
			if err != nil {
				return rpcError(err, fl.conn.server, stderr)
			}
			hashes = p.GetHashes()
		}
		if err := tlog.CheckConsistency(older, newer, hashes); err != nil {
			return verdict(err)
		}
	}
	if fl.save != "" {
		if err := writeFileAtomic(fl.save, newer.Note); err != nil {
			return err
		}
	}
	root := base64.StdEncoding.EncodeToString(newer.Hash)
	switch {
	case fl.output == "json":
		out := map[string]any{"verified": true, "origin": newer.Origin, "treeSize": newer.Size, "rootHash": root, "checkpoint": string(newer.Note), "verifierKey": vkey}
		if older != nil {
			out["sinceTreeSize"] = older.Size
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case older != nil:
		fmt.Fprintf(stdout, "consistent: the log grew from %d to %d events without rewriting any (root %s)\n", older.Size, newer.Size, root)
	default:
		fmt.Fprintf(stdout, "verified checkpoint: %d events, root %s (save it and use --since next time)\n", newer.Size, root)
	}
	return nil
}

// progress shows verification progress on stderr when it is a terminal.
type progress struct {
	w     io.Writer
	total int64
	last  time.Time
	shown bool
}

func newProgress(w io.Writer, total int64) *progress {
	f, ok := w.(*os.File)
	if !ok {
		return &progress{}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return &progress{}
	}
	return &progress{w: w, total: total}
}

func (p *progress) update(events uint64, read int64) {
	if p.w == nil || time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last, p.shown = time.Now(), true
	if p.total > 0 {
		fmt.Fprintf(p.w, "\rverifying: %d events, %d%% of the bundle ", events, read*100/p.total)
	} else {
		fmt.Fprintf(p.w, "\rverifying: %d events ", events)
	}
}

func (p *progress) done() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
