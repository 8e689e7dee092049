package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/piledger/piledger/crypto"
)

// newKeysCmd is `piledger keys`: the ledger's key-encryption key.
func newKeysCmd(getenv func(string) string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the key-encryption key (KEK) that wraps every stored key",
		Long: `Every data subject's key, the pseudonym key and the signing key are stored
wrapped under the key-encryption key (KEK) of an epoch, <data>/kek/kek-<epoch>.json.

  piledger keys rotate     re-wrap every live key under a new epoch, then destroy the old KEK

See docs/KEK-ROTATION.md.`,
	}
	cmd.AddCommand(newKeysRotateCmd(getenv))
	return cmd
}

// keysRotateFlags are the flags of `piledger keys rotate`.
type keysRotateFlags struct {
	dataDir                      string
	natsURL, natsCreds, natsUser string
	natsPassword                 string // from the environment only
	prepare, plainDelete         bool
	output                       string
}

func newKeysRotateCmd(getenv func(string) string) *cobra.Command {
	var fl keysRotateFlags
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Re-wrap every live key under a new KEK epoch, then destroy the old KEK",
		Long: `Start a new KEK epoch (<data>/kek/kek-<N>.json), re-wrap every live key of the
key stream under it (the keys of erased subjects are not re-wrapped), delete
the old copies with SecureDeleteMsg, re-wrap the token issuer's key
(<data>/auth), and then destroy the KEK of every older epoch: its file is
overwritten and removed. From then on, a backup or any other copy taken
before an erasure decrypts nothing of the erased subject, even with the
current KEK files. Keysets do not change: everything stored before still
decrypts.

With no --nats-url it starts the embedded NATS server on <data>/nats, so the
server must be stopped (the command refuses while 'piledger serve' holds the
data directory). With --nats-url it runs against a cluster while the nodes
keep serving; every node's KEK directory must hold the new epoch first (see
--prepare and docs/KEK-ROTATION.md).

If an earlier rotation was interrupted (its old epoch's KEK file is still
there), rotate finishes it instead of starting another epoch; running it
again is always safe. Every key opens at every point of a rotation.`,
		Example: `  # single node: stop the server, rotate, start it again
  piledger keys rotate --data /var/lib/piledger

  # cluster: create the epoch, copy it to every node and restart them, then rotate
  piledger keys rotate --prepare --data /var/lib/piledger
  piledger keys rotate --data /var/lib/piledger --nats-url nats://n1:4222 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fl.output != "table" && fl.output != "json" {
				return usageError(fmt.Errorf("--output %q: want table or json", fl.output))
			}
			fl.natsPassword = getenv("PILEDGER_NATS_PASSWORD")
			return keysRotate(cmd, fl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.dataDir, "data", "./data", "data directory of the server")
	f.StringVar(&fl.natsURL, "nats-url", "", "NATS server URL(s), comma-separated; empty starts the embedded server on <data>/nats")
	f.StringVar(&fl.natsCreds, "nats-creds", "", "NATS credentials file (.creds) for --nats-url")
	f.StringVar(&fl.natsUser, "nats-user", "", "NATS user name for --nats-url; the password is read from PILEDGER_NATS_PASSWORD")
	f.BoolVar(&fl.prepare, "prepare", false, "only create the next epoch's KEK file (for a cluster: copy it to every node and restart them, then run rotate)")
	f.BoolVar(&fl.plainDelete, "plain-delete", false, "delete the old copies of live keys without overwriting them (much faster on large key streams; their bytes stay in NATS's block files, under the destroyed epoch, until compaction)")
	f.StringVarP(&fl.output, "output", "o", "table", "output: table or json")
	withEnv(cmd, getenv, "data", "nats-url", "nats-creds", "nats-user", "output")
	return cmd
}

func keysRotate(cmd *cobra.Command, fl keysRotateFlags) error {
	ctx := cmd.Context()
	dataDir, err := filepath.Abs(fl.dataDir)
	if err != nil {
		return usageError(fmt.Errorf("data directory: %w", err))
	}
	kekDir := filepath.Join(dataDir, "kek")
	if _, err := os.Stat(kekDir); err != nil {
		return usageError(fmt.Errorf("no KEK directory %s (is --data the server's data directory?): %w", kekDir, err))
	}
	kek, err := crypto.OpenLocalKEK(kekDir)
	if err != nil {
		return err
	}
	if fl.prepare {
		return keysPrepare(cmd.OutOrStdout(), kek, kekDir)
	}

	indexDir := filepath.Join(dataDir, "keyring")
	if fl.natsURL == "" {
		if _, err := os.Stat(filepath.Join(dataDir, "nats")); err != nil {
			return usageError(fmt.Errorf("no NATS store in %s (is --data the server's data directory?): %w", dataDir, err))
		}
		// A running server holds the lock of its ledger index for its whole
		// life; holding it here keeps a second embedded NATS server off the
		// store while the server runs, and the server off it while we do.
		ledgerIndex := filepath.Join(dataDir, "index")
		if err := os.MkdirAll(ledgerIndex, 0o700); err != nil {
			return err
		}
		lock, err := vfs.Default.Lock(filepath.Join(ledgerIndex, "LOCK"))
		if err != nil {
			return fmt.Errorf("data directory %s is in use (stop 'piledger serve' first, or give --nats-url): %w", dataDir, err)
		}
		defer lock.Close()
	} else {
		// The node's own key index may be in use by its server: rebuild a
		// private one from the key stream (it holds no key bytes).
		if indexDir, err = os.MkdirTemp(dataDir, ".keys-rotate-"); err != nil {
			return err
		}
		defer os.RemoveAll(indexDir)
	}
	nc, _, closeNATS, err := openNATS(dataDir, fl.natsURL, fl.natsCreds, fl.natsUser, fl.natsPassword)
	if err != nil {
		return err
	}
	defer closeNATS()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := js.Stream(ctx, crypto.DefaultKeyStreamName); errors.Is(err, jetstream.ErrStreamNotFound) {
		return usageError(fmt.Errorf("no key stream %s: nothing to rotate (wrong --data or --nats-url?)", crypto.DefaultKeyStreamName))
	} else if err != nil {
		return fmt.Errorf("key stream %s: %w", crypto.DefaultKeyStreamName, err)
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: indexDir})
	if err != nil {
		return err
	}
	defer keys.Close()
	rep, err := keys.Rotate(ctx, crypto.RotateOptions{NewEpoch: true, TokenKeyDir: authDir(dataDir), PlainDelete: fl.plainDelete})
	if err != nil {
		return fmt.Errorf("KEK rotation stopped, no key is lost: %w (fix the cause and run 'piledger keys rotate' again to finish it)", err)
	}
	if fl.output == "json" {
		return printRotateJSON(cmd.OutOrStdout(), rep)
	}
	if err := printRotate(cmd.OutOrStdout(), rep, kekDir); err != nil {
		return err
	}
	if fl.natsURL != "" {
		fmt.Fprintln(cmd.ErrOrStderr(), "Other nodes: run 'piledger keys rotate' with their own --data to re-wrap their token key and destroy their copy of the old KEK.")
	}
	return nil
}

// keysPrepare creates the next epoch's KEK, unless a rotation is already
// under way (an older epoch is still there).
func keysPrepare(w io.Writer, kek *crypto.LocalKEK, kekDir string) error {
	epochs := kek.Epochs()
	epoch := kek.CurrentEpoch()
	if len(epochs) == 1 {
		var err error
		if epoch, err = kek.NewEpoch(); err != nil {
			return err
		}
		fmt.Fprintf(w, "created KEK epoch %d: %s\n", epoch, filepath.Join(kekDir, fmt.Sprintf("kek-%d.json", epoch)))
	} else {
		fmt.Fprintf(w, "KEK epoch %d is already prepared (older epochs still there: %v)\n", epoch, epochs[:len(epochs)-1])
	}
	_, err := fmt.Fprintf(w, "next: copy kek-%d.json (mode 0600) into every node's KEK directory, restart every node, then run 'piledger keys rotate'\n", epoch)
	return err
}

func printRotate(w io.Writer, rep crypto.RotateReport, kekDir string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	epoch := fmt.Sprint(rep.Epoch)
	if rep.NewEpoch {
		epoch += " (new)"
	}
	fmt.Fprintf(tw, "KEK epoch\t%s\n", epoch)
	fmt.Fprintf(tw, "live keys\t%d, %d re-wrapped\n", rep.Live, rep.Rewrapped)
	fmt.Fprintf(tw, "erased subjects\t%d (keys destroyed, not re-wrapped)\n", rep.SkippedDestroyed)
	old := fmt.Sprintf("%d overwritten (SecureDeleteMsg)", rep.Overwritten)
	if rep.Deleted > 0 {
		old += fmt.Sprintf(", %d deleted without overwrite", rep.Deleted)
	}
	fmt.Fprintf(tw, "old key copies\t%s, %d already gone\n", old, rep.AlreadyGone)
	token := "unchanged"
	if rep.TokenKeyRewrapped {
		token = "re-wrapped"
	}
	fmt.Fprintf(tw, "token key\t%s\n", token)
	retired := "none"
	if len(rep.Retired) > 0 {
		var names []string
		for _, e := range rep.Retired {
			names = append(names, fmt.Sprintf("kek-%d.json", e))
		}
		retired = fmt.Sprintf("%v (%s overwritten and removed from %s)", rep.Retired, strings.Join(names, ", "), kekDir)
	}
	fmt.Fprintf(tw, "retired epochs\t%s\n", retired)
	fmt.Fprintf(tw, "took\t%s\n", rep.Duration.Round(1e6))
	return tw.Flush()
}

// rotateJSON is the JSON form of a rotation report.
type rotateJSON struct {
	Epoch             uint32   `json:"epoch"`
	NewEpoch          bool     `json:"new_epoch"`
	Live              int      `json:"live_keys"`
	Rewrapped         int      `json:"rewrapped"`
	SkippedDestroyed  int      `json:"skipped_destroyed"`
	Overwritten       int      `json:"overwritten"`
	Deleted           int      `json:"deleted_without_overwrite"`
	AlreadyGone       int      `json:"already_gone"`
	TokenKeyRewrapped bool     `json:"token_key_rewrapped"`
	Retired           []uint32 `json:"retired_epochs"`
	Seconds           float64  `json:"seconds"`
}

func printRotateJSON(w io.Writer, rep crypto.RotateReport) error {
	retired := rep.Retired
	if retired == nil {
		retired = []uint32{}
	}
	b, err := json.Marshal(rotateJSON{
		Epoch: rep.Epoch, NewEpoch: rep.NewEpoch, Live: rep.Live, Rewrapped: rep.Rewrapped,
		SkippedDestroyed: rep.SkippedDestroyed, Overwritten: rep.Overwritten, Deleted: rep.Deleted,
		AlreadyGone: rep.AlreadyGone, TokenKeyRewrapped: rep.TokenKeyRewrapped, Retired: retired,
		Seconds: rep.Duration.Seconds(),
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
