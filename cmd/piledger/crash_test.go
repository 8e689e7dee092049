package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// crashChildEnv makes the test binary, run as a child, serve the ledger.
const crashChildEnv = "PILEDGER_CRASH_CHILD_DATA"

// TestMain doubles as the child process of TestCrashRecovery: with
// crashChildEnv set, the test binary serves the ledger until it is killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		// Durability, not authentication, is under test here.
		env := map[string]string{"PILEDGER_LOG_FORMAT": "json", "PILEDGER_HTTP_ADDR": "127.0.0.1:0", "PILEDGER_GRPC_ADDR": "127.0.0.1:0",
			"PILEDGER_METRICS_ADDR": "127.0.0.1:0", "PILEDGER_INSECURE_NO_AUTH": "true"}
		err := run(context.Background(), []string{"serve", "--data", dir}, mapEnv(env), nil, os.Stdout, os.Stderr)
		fmt.Fprintf(os.Stderr, "serve returned: %v\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestCrashRecovery runs the server in a child process under steady append
// load and kills it with SIGKILL at random moments, repeatedly. After each
// restart every acknowledged event is in the log exactly once, at the index
// its receipt gave, and nothing unacknowledged appears twice — also after
// the unacknowledged batches are retried with the same event ids.
//
// PILEDGER_CRASH_ROUNDS sets the number of kills (default 6).
func TestCrashRecovery(t *testing.T) {
	rounds := 6
	if v, err := strconv.Atoi(os.Getenv("PILEDGER_CRASH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	dir := filepath.Join(t.TempDir(), "data")
	acked := make(map[string]uint64) // event id → index from its receipt
	var unacked [][]*piledgerv1.Event
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))

	for round := 1; round <= rounds; round++ {
		child, addr := startCrashChild(t, dir)
		client, conn := crashClient(t, addr)

		// Retry what was not acknowledged before the last kill: same ids.
		for _, batch := range unacked {
			rs, err := client.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{Events: batch})
			if err != nil {
				t.Fatalf("round %d: retry after restart: %v", round, err)
			}
			for _, r := range rs.GetReceipts() {
				acked[r.GetEventId()] = r.GetIndex()
			}
		}
		unacked = nil
		verifyLog(t, client, acked, round)

		// Steady load from 8 writers, then SIGKILL at a random moment.
		var mu sync.Mutex
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					batch := crashBatch(1 + w%4)
					rs, err := client.AppendEvents(ctx, &piledgerv1.AppendEventsRequest{Events: batch})
					mu.Lock()
					if err != nil {
						unacked = append(unacked, batch)
					} else {
						for _, r := range rs.GetReceipts() {
							acked[r.GetEventId()] = r.GetIndex()
						}
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
		stop()
		wg.Wait()
		conn.Close()
		t.Logf("round %d: %d acknowledged so far, %d batches unacknowledged at the kill", round, len(acked), len(unacked))
	}

	child, addr := startCrashChild(t, dir)
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	client, conn := crashClient(t, addr)
	defer conn.Close()
	for _, batch := range unacked {
		rs, err := client.AppendEvents(t.Context(), &piledgerv1.AppendEventsRequest{Events: batch})
		if err != nil {
			t.Fatalf("final retry: %v", err)
		}
		for _, r := range rs.GetReceipts() {
			acked[r.GetEventId()] = r.GetIndex()
		}
	}
	verifyLog(t, client, acked, rounds+1)
	if len(acked) < rounds*10 {
		t.Fatalf("only %d events acknowledged over %d rounds: the load did not run", len(acked), rounds)
	}
}

// verifyLog reads the whole log and checks it against the acknowledgements.
func verifyLog(t *testing.T, client piledgerv1.LedgerServiceClient, acked map[string]uint64, round int) {
	t.Helper()
	stream, err := client.ListLogEntries(t.Context(), &piledgerv1.ListLogEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]uint64)
	next := uint64(0)
	for {
		e, err := stream.Recv()
		if err != nil {
			break
		}
		id := e.GetHeader().GetEventId()
		if e.GetIndex() != next {
			t.Fatalf("round %d: log index %d follows %d: the log has a gap", round, e.GetIndex(), next-1)
		}
		next++
		if prev, dup := seen[id]; dup {
			t.Fatalf("round %d: event %s is in the log twice (indexes %d and %d)", round, id, prev, e.GetIndex())
		}
		seen[id] = e.GetIndex()
		if e.GetEvent().GetEventId() != id {
			t.Fatalf("round %d: entry %d does not decrypt to its own event", round, e.GetIndex())
		}
	}
	for id, idx := range acked {
		got, ok := seen[id]
		if !ok {
			t.Fatalf("round %d: acknowledged event %s (index %d) is missing from the log", round, id, idx)
		}
		if got != idx {
			t.Fatalf("round %d: acknowledged event %s is at index %d, its receipt said %d", round, id, got, idx)
		}
	}
}

func crashBatch(n int) []*piledgerv1.Event {
	batch := make([]*piledgerv1.Event, n)
	for i := range batch {
		batch[i] = &piledgerv1.Event{
			EventId:        uuid.Must(uuid.NewV7()).String(),
			SubjectRef:     fmt.Sprintf("resident-%d", rand.IntN(50)),
			Operation:      piledgerv1.Operation_OPERATION_COLLECT,
			OccurredAt:     timestamppb.Now(),
			Processor:      "compound-gate",
			DataCategories: []string{"face"},
			Purpose:        "access-control",
			LegalBasis:     "consent",
			Consent:        &piledgerv1.Consent{Separate: true, Reference: "c-1"},
		}
	}
	return batch
}

// startCrashChild starts the test binary as a child serving the ledger on
// dir and returns it with its gRPC address, read from its startup log line.
func startCrashChild(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		var line startupLine
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "piledger serving" {
			go func() {
				for sc.Scan() {
				}
			}()
			return cmd, line.GRPCAddr
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	t.Fatalf("child exited before serving: %v", sc.Err())
	return nil, ""
}

func crashClient(t *testing.T, addr string) (piledgerv1.LedgerServiceClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return piledgerv1.NewLedgerServiceClient(conn), conn
}
