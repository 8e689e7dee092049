package api

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/ledger/transparency"
)

// TestToStatusTransparency pins how the transparency errors reach clients.
func TestToStatusTransparency(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	for _, test := range []struct {
		name       string
		err        error
		code       codes.Code
		reason     string
		field      string
		retryDelay bool
	}{
		{"beyond the checkpoint", fmt.Errorf("wrapped: %w", &transparency.RangeError{Field: "treeSize", Description: "beyond", Err: transparency.ErrBeyondCheckpoint}),
			codes.OutOfRange, ReasonBeyondCheckpoint, "treeSize", true},
		{"invalid range", &transparency.RangeError{Field: "index", Description: "must be less than treeSize", Err: transparency.ErrInvalidRange},
			codes.InvalidArgument, ReasonInvalidRequest, "index", false},
		{"no checkpoint", fmt.Errorf("%w: no checkpoint of tree size 3", transparency.ErrCheckpointNotFound),
			codes.NotFound, ReasonCheckpointNotFound, "", false},
		{"inconsistent", fmt.Errorf("%w: checkpoint 4", transparency.ErrInconsistent),
			codes.DataLoss, ReasonCorrupt, "", false},
	} {
		t.Run(test.name, func(t *testing.T) {
			st := status.Convert(toStatus(context.Background(), logger, test.err))
			if st.Code() != test.code {
				t.Errorf("code %s, want %s", st.Code(), test.code)
			}
			var reason, field string
			var retry bool
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.ErrorInfo:
					reason = d.GetReason()
				case *errdetails.BadRequest:
					field = d.GetFieldViolations()[0].GetField()
				case *errdetails.RetryInfo:
					retry = true
				}
			}
			if reason != test.reason || field != test.field || retry != test.retryDelay {
				t.Errorf("reason %q field %q retry %t, want %q %q %t", reason, field, retry, test.reason, test.field, test.retryDelay)
			}
		})
	}
}
