// Command piledger is the one piledger binary: `piledger serve` runs the
// ledger, and the client subcommands (emit, replay, ...) talk to a running
// server over gRPC. Run `piledger help` for the list.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process during a slow shutdown
	}()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "piledger: %v\n", err)
	}
	os.Exit(exitCode(err))
}
