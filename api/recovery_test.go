package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/api"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// panicLog is a Log whose every call panics: a fault injected to check the
// recovery interceptor, not a stand-in for the ledger.
type panicLog struct{}

func (*panicLog) Append(context.Context, []*piledgerv1.Event) ([]*piledgerv1.Receipt, error) {
	panic("boom for subject 110101199003070042")
}

func (*panicLog) Entries(context.Context, uint64, uint64, func(*piledgerv1.LogEntry) error) error {
	var m map[string]int
	m["x"] = 1 // a runtime error
	return nil
}

// TestPanicRecovery checks that a panicking handler gives INTERNAL "internal
// error" (HTTP 500) with no detail of the panic, and that the server keeps
// serving.
func TestPanicRecovery(t *testing.T) {
	logs := &syncBuffer{}
	srv, err := api.New(api.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, &panicLog{}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := piledgerv1.NewLedgerServiceClient(conn)

	_, err = client.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{})
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Errorf("AppendEvents = %v, want INTERNAL internal error", err)
	}
	stream, err := client.ListLogEntries(t.Context(), &piledgerv1.ListLogEntriesRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Errorf("ListLogEntries = %v, want INTERNAL internal error", err)
	}

	resp, err := http.Post("http://"+srv.HTTPAddr()+"/v1/events:append", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(string(body), "boom") || !strings.Contains(string(body), "internal error") {
		t.Errorf("POST = %d %s, want 500 internal error", resp.StatusCode, body)
	}

	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health after panics: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "panic") || !strings.Contains(l, "assignment to entry in nil map") || strings.Contains(l, "110101199003070042") {
		t.Errorf("logs should name the runtime error and never the panic value:\n%s", l)
	}
}
