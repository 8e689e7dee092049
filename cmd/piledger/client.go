package main

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/api"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// defaultServer is the --server default of the client commands.
const defaultServer = api.DefaultGRPCAddr

// dial returns a client of the piledger server at addr. Connecting is lazy:
// an unreachable server shows up as UNAVAILABLE on the first call.
func dial(addr string) (piledgerv1.LedgerServiceClient, io.Closer, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, usageError(fmt.Errorf("--server %q: %w", addr, err))
	}
	return piledgerv1.NewLedgerServiceClient(conn), conn, nil
}

// rpcError turns a failed call to the server at addr into an actionable
// error. For INVALID_ARGUMENT it prints every field violation to stderr on
// its own line and returns an error with exit code 2.
func rpcError(err error, addr string, stderr io.Writer) error {
	st := status.Convert(err)
	var reason string
	var violations []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.BadRequest:
			violations = append(violations, d.GetFieldViolations()...)
		}
	}
	switch {
	case st.Code() == codes.InvalidArgument:
		for _, v := range violations {
			fmt.Fprintf(stderr, "%s: %s\n", v.GetField(), v.GetDescription())
		}
		return &exitError{code: exitInvalid, err: fmt.Errorf("rejected: %s (%d field violation(s))", st.Message(), len(violations))}
	case st.Code() == codes.Unavailable && reason == api.ReasonUnavailable:
		return fmt.Errorf("piledger at %s cannot reach its log right now; retry later (event ids make retries safe)", addr)
	case st.Code() == codes.Unavailable:
		return fmt.Errorf("cannot reach piledger at %s: is `piledger serve` running? (%s)", addr, st.Message())
	case st.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("piledger at %s did not answer in time; retry with the same event ids, or raise --timeout", addr)
	case st.Code() == codes.Canceled:
		return errors.New("canceled")
	default:
		return fmt.Errorf("piledger at %s: %s: %s", addr, st.Code(), st.Message())
	}
}
