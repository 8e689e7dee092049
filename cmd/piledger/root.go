package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed: server unreachable, internal error
	exitInvalid = 2 // the input was rejected: bad flags or invalid events
)

// exitError carries the exit code for an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks err as the caller's mistake (exit code 2).
func usageError(err error) error { return &exitError{code: exitInvalid, err: err} }

// exitCode maps run's error to the process exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailure
}

// run executes the command line args (without the program name). getenv
// reads PILEDGER_* variables; stdin, stdout and stderr are the streams the
// commands use. Data goes to stdout, messages and logs to stderr. The error
// is not printed: main does that.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:   "piledger",
		Short: "An event-sourced, tamper-evident ledger of what happens to personal information",
		Long: `piledger records every lifecycle event of personal information (collection,
storage, use, provision, transfer abroad, destruction, access...) in an
append-only log, each event encrypted under a key that belongs to its data
subject.

Every flag marked with [$PILEDGER_...] can also be set through that
environment variable; a flag on the command line wins. Client commands take
the server with --server, credentials with --api-key-file (or
$PILEDGER_API_KEY; emitters) or --token-file (or $PILEDGER_TOKEN; subjects,
regulators, admins), the reason for reading people's records with --reason,
and --tls-ca/--tls-cert/--tls-key, and print tables or JSON with
--output table|json. 'piledger processors' and 'piledger token' make
credentials on the server's host.

Shell completion: see 'piledger completion --help'.`,
		Example: `  piledger serve --data ./data
  piledger emit --operation collect --subject C-1042 --processor acme-gates \
    --category face --purpose access-control --place public-street
  piledger replay --output table
  piledger bench --duration 10s
  source <(piledger completion bash)`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(fmt.Errorf("%w (see '%s --help')", err, c.CommandPath()))
	})
	root.AddCommand(
		newServeCmd(getenv),
		newEmitCmd(getenv),
		newReplayCmd(getenv),
		newWhereCmd(getenv),
		newTimelineCmd(getenv),
		newDueCmd(getenv),
		newFindingsCmd(getenv),
		newExportCmd(getenv),
		newEraseCmd(getenv),
		newBenchCmd(getenv),
		newLogCmd(getenv),
		newVerifyCmd(getenv),
		newProcessorsCmd(getenv),
		newTokenCmd(getenv),
		newKeysCmd(getenv),
	)
	return root.ExecuteContext(ctx)
}

// withEnv lets each named flag of cmd also be set from the environment
// variable PILEDGER_<NAME> (upper case, '-' becomes '_'): a flag given on the
// command line wins over the variable, which wins over the default. The
// variable is named in the flag's help.
func withEnv(cmd *cobra.Command, getenv func(string) string, names ...string) {
	for _, name := range names {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			panic("withEnv: no flag " + name) // a programming error
		}
		f.Usage += " [$" + envName(name) + "]"
	}
	next := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		for _, name := range names {
			if err := setFromEnv(c.Flags(), getenv, name); err != nil {
				return err
			}
		}
		if next != nil {
			return next(c, args)
		}
		return nil
	}
}

func setFromEnv(fs *pflag.FlagSet, getenv func(string) string, name string) error {
	f := fs.Lookup(name)
	if f.Changed {
		return nil
	}
	v := getenv(envName(name))
	if v == "" {
		return nil
	}
	if err := fs.Set(name, v); err != nil {
		return usageError(fmt.Errorf("$%s: %w", envName(name), err))
	}
	return nil
}

func envName(flag string) string {
	return "PILEDGER_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}
