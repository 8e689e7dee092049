package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/piledger/piledger/ledger/tlog"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// maxExportRecord is the largest bundle record the client accepts from the
// server: a block can exceed gRPC's default 4 MiB receive limit.
const maxExportRecord = tlog.MaxRecordBytes

func newLogCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "log",
		Short: "The log's tamper evidence: export it for offline verification, fetch checkpoints",
		Long: `Commands for the log's tamper evidence. The log is an RFC 6962 Merkle tree
over every event's stored envelope, with signed checkpoints (C2SP
tlog-checkpoint); see docs/VERIFYING.md.

  piledger log export --out ledger.bundle     the whole log, for piledger verify
  piledger log checkpoint --save latest.cp    the latest signed checkpoint`,
	}
	cmd.AddCommand(newLogExportCmd(getenv), newLogCheckpointCmd(getenv))
	return cmd
}

func newLogExportCmd(getenv func(string) string) *cobra.Command {
	var (
		cf  connFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "export --out FILE",
		Short: "Write the whole log as a bundle that piledger verify checks offline",
		Long: `Write the whole log, up to its latest signed checkpoint, as a self-contained
bundle: every block with its envelopes exactly as stored (clear headers and
ciphertexts, never plaintext), every signed checkpoint, the verifier key and
which events are erased. piledger verify FILE checks it with no server and
no private key. "-" writes to stdout.

(For everything about one data subject, use piledger export REF.)`,
		Example: `  piledger log export --out ledger.bundle
  piledger verify ledger.bundle --key-file piledger.vkey`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError(errors.New("--out FILE is required (\"-\" for stdout)"))
			}
			if err := cf.resolve(getenv); err != nil {
				return err
			}
			return exportLog(cmd.Context(), cf, out, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addConnFlags(cmd, &cf)
	cmd.Flags().StringVarP(&out, "out", "O", "", "bundle file to write (\"-\": stdout)")
	withEnv(cmd, getenv, withConnFlags()...)
	return cmd
}

// exportLog streams the log's bundle from the server into the file out
// (written to a temporary file and renamed, so a failed export leaves no
// partial bundle) or to stdout for "-", and reports what it wrote on stderr.
// A `piledger export --out FILE` without a subject can call it too.
func exportLog(ctx context.Context, cf connFlags, out string, stdout, stderr io.Writer) error {
	client, closer, err := transparencyClient(cf)
	if err != nil {
		return err
	}
	defer closer.Close()
	stream, err := client.ExportLog(ctx, &piledgerv1.ExportLogRequest{}, grpc.MaxCallRecvMsgSize(maxExportRecord))
	if err != nil {
		return rpcError(err, cf.server, stderr)
	}

	w, commit, abort, err := createOutput(out, stdout)
	if err != nil {
		return err
	}
	defer abort()
	bw := tlog.NewBundleWriter(w)
	var header *piledgerv1.BundleHeader
	var end *piledgerv1.BundleEnd
	for end == nil {
		rec, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("the server ended the export before its end record; retry")
		}
		if err != nil {
			return rpcError(err, cf.server, stderr)
		}
		if h := rec.GetHeader(); h != nil {
			header = h
		}
		end = rec.GetEnd()
		if err := bw.Write(rec); err != nil {
			return err
		}
	}
	if err := bw.Close(); err != nil {
		return err
	}
	if err := commit(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d events in %d blocks and %d checkpoints (tree size %d) to %s\n",
		end.GetEvents(), end.GetBlocks(), end.GetCheckpoints(), header.GetTreeSize(), out)
	fmt.Fprintf(stderr, "checkpoints are signed by %s\n", header.GetVerifierKey())
	return nil
}

// createOutput opens out for writing: stdout for "-", otherwise a temporary
// file beside out that commit renames into place and abort removes.
func createOutput(out string, stdout io.Writer) (w io.Writer, commit func() error, abort func(), err error) {
	if out == "-" {
		return stdout, func() error { return nil }, func() {}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return nil, nil, nil, usageError(fmt.Errorf("--out: %w", err))
	}
	done := false
	commit = func() error {
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		done = true
		return os.Rename(f.Name(), out)
	}
	abort = func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}
	return f, commit, abort, nil
}

func newLogCheckpointCmd(getenv func(string) string) *cobra.Command {
	var (
		cf       connFlags
		treeSize uint64
		save     string
	)
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Print the latest signed checkpoint (or the one of a tree size)",
		Long: `Print a signed checkpoint of the log as the server stores it: a C2SP
tlog-checkpoint (origin, tree size, base64 root hash) in a C2SP signed note.
Save one and later run piledger verify --server ADDR --since FILE to prove
the log only grew since.`,
		Example: `  piledger log checkpoint --save saved.cp
  piledger log checkpoint --tree-size 1000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cf.resolve(getenv); err != nil {
				return err
			}
			client, closer, err := transparencyClient(cf)
			if err != nil {
				return err
			}
			defer closer.Close()
			cp, err := client.GetCheckpoint(cmd.Context(), &piledgerv1.GetCheckpointRequest{TreeSize: treeSize})
			if err != nil {
				return rpcError(err, cf.server, cmd.ErrOrStderr())
			}
			if save != "" {
				if err := writeFileAtomic(save, []byte(cp.GetNote())); err != nil {
					return err
				}
			}
			_, err = io.WriteString(cmd.OutOrStdout(), cp.GetNote())
			return err
		},
	}
	addConnFlags(cmd, &cf)
	cmd.Flags().Uint64Var(&treeSize, "tree-size", 0, "tree size of the checkpoint; 0 means the latest")
	cmd.Flags().StringVar(&save, "save", "", "also write the checkpoint to this file")
	withEnv(cmd, getenv, withConnFlags()...)
	return cmd
}

// transparencyClient dials the server with the connection flags.
func transparencyClient(cf connFlags) (piledgerv1.TransparencyServiceClient, io.Closer, error) {
	_, closer, err := cf.dial()
	if err != nil {
		return nil, nil, err
	}
	conn, ok := closer.(grpc.ClientConnInterface)
	if !ok {
		closer.Close()
		return nil, nil, fmt.Errorf("internal error: the connection is a %T", closer)
	}
	return piledgerv1.NewTransparencyServiceClient(conn), closer, nil
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so that a reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	w, commit, abort, err := createOutput(path, nil)
	if err != nil {
		return err
	}
	defer abort()
	if _, err := w.Write(data); err != nil {
		return err
	}
	return commit()
}
