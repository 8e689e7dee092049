package projections_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/projections"
)

// hangAfter is how long a child may run before TestProjectorCrash takes it
// for hung and dumps its goroutines. A full run takes seconds.
const hangAfter = 5 * time.Minute

// Environment of the projector child process (see TestMain).
const (
	childEnv      = "PILEDGER_PROJECTOR_CHILD" // the data directory
	childNATSEnv  = "PILEDGER_PROJECTOR_CHILD_NATS"
	childUntilEnv = "PILEDGER_PROJECTOR_CHILD_UNTIL"
)

// TestMain doubles as the projector child of TestProjectorCrash: with
// childEnv set, the test binary runs a projector until it has applied the
// log up to childUntilEnv entries, or until it is killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		if err := runChild(dir); err != nil {
			fmt.Fprintf(os.Stderr, "projector child: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	stopFixture()
	os.Exit(code)
}

func runChild(dir string) error {
	until, err := strconv.ParseUint(os.Getenv(childUntilEnv), 10, 64)
	if err != nil {
		return err
	}
	ctx := context.Background()
	nc, err := nats.Connect(os.Getenv(childNATSEnv))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	kek, err := crypto.OpenLocalKEK(filepath.Join(dir, "kek"))
	if err != nil {
		return err
	}
	keys, err := crypto.OpenKeyring(ctx, js, kek, crypto.KeyringConfig{IndexDir: filepath.Join(dir, "child-keyring")})
	if err != nil {
		return err
	}
	led, err := ledger.Open(ctx, js, keys, ledger.Config{IndexDir: filepath.Join(dir, "child-index")})
	if err != nil {
		return err
	}
	st, err := projections.Open(projections.Config{Dir: filepath.Join(dir, "child-projections"), BatchEvents: 64}, led, keys)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	fmt.Printf("projecting from %d\n", st.Position().Size)
	for {
		if st.Position().Size >= until {
			fmt.Printf("done at %d\n", st.Position().Size)
			return nil // exit without a clean stop: everything applied is committed
		}
		select {
		case err := <-done:
			return fmt.Errorf("projector stopped: %w", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// TestProjectorCrash kills a projector with SIGKILL at random moments while
// it applies a log (with duplicate event ids in it) in small batches, starts
// it again each time, and checks that it resumes without gaps or double
// counting: the position only moves forward, the counts always add up to the
// position, and once it reaches the end of the log every answer is byte for
// byte the answer of a projector that never crashed.
//
// PILEDGER_CRASH_ROUNDS sets the number of kills (default 6).
func TestProjectorCrash(t *testing.T) {
	rounds := 6
	if v, err := strconv.Atoi(os.Getenv("PILEDGER_CRASH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	dir := filepath.Join(t.TempDir(), "node")
	url := startTCPServer(t, filepath.Join(dir, "nats"))
	s := &stack{t: t, dir: dir, clock: newClock(day(150))}
	s.connect(func(opts ...nats.Option) (*nats.Conn, error) { return nats.Connect(url, opts...) })
	t.Cleanup(s.stop)
	refs := scenarioLog(s, 2000)
	publishCopies(t, s, 10, 40) // 40 event ids reach the log twice
	refs = append(refs, scenarioLog(s, 1000)...)
	size := s.led.Size() // the ledger caught up with the copies on its next append
	childDir := filepath.Join(dir, "child-projections")
	env := append(os.Environ(), childEnv+"="+dir, childNATSEnv+"="+url, childUntilEnv+"="+strconv.FormatUint(size, 10))

	var last projections.Position
	kills := 0
	for round := 0; ; round++ {
		final := round == rounds
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 4)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		if l, ok := <-lines; !ok || !strings.HasPrefix(l, "projecting from ") {
			_ = cmd.Wait()
			t.Fatalf("child did not start projecting: %q\n%s", l, stderr.String())
		}
		if !final {
			// Short enough that several kills land before a fast
			// projector reaches the end of the log (about 12,000 entries).
			time.Sleep(time.Duration(5+rand.IntN(60)) * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
		// A hang detector, not a performance limit: a child still running
		// after hangAfter is asked for its goroutines (SIGQUIT).
		var hung atomic.Bool
		watchdog := time.AfterFunc(hangAfter, func() { hung.Store(true); _ = cmd.Process.Signal(syscall.SIGQUIT) })
		var out []string
		for l := range lines {
			out = append(out, l)
		}
		err = cmd.Wait()
		watchdog.Stop()
		if hung.Load() {
			t.Fatalf("round %d: the child hung; its goroutines:\n%s", round, stderr.String())
		}
		finished := len(out) > 0 && strings.HasPrefix(out[len(out)-1], "done at ")
		switch {
		case final && (err != nil || !finished):
			t.Fatalf("final run: %v %q\n%s", err, out, stderr.String())
		case !final && !finished:
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("child ended without being killed: %v\n%s", err, stderr.String())
			}
			kills++
		}

		// The directory the killed child left: the position never goes
		// back, and every entry up to it was counted exactly once.
		check := s.openStore(projections.Config{Dir: childDir})
		pos, c := check.Position(), check.Counts()
		if err := check.Close(); err != nil {
			t.Fatal(err)
		}
		if pos.Size < last.Size {
			t.Fatalf("round %d: position went back from %d to %d", round, last.Size, pos.Size)
		}
		if c.Applied+c.Duplicates+c.Shredded+c.Ignored != pos.Size {
			t.Fatalf("round %d: counts %+v do not add up to the position %d: a gap or a double count", round, c, pos.Size)
		}
		t.Logf("round %d: killed=%t, applied %d of %d log entries", round, !finished, pos.Size, size)
		last = pos
		if finished {
			break
		}
	}
	if kills < 3 {
		t.Fatalf("only %d kills landed before the projector finished; the log is too small for this machine", kills)
	}
	if c := s.openStore(projections.Config{Dir: childDir}); true {
		defer c.Close()
		if got := c.Counts(); got.Duplicates != 40 || got.Applied != size-40 {
			t.Errorf("counts after crashes %+v, want %d applied and 40 duplicates", got, size-40)
		}
		// A projector that never crashed gives the same answers.
		ref := s.startProjector(projections.Config{Dir: filepath.Join(dir, "reference-projections")})
		s.waitFor(ref, size)
		var ps []string
		for i := 0; i < len(refs); i += 25 {
			ps = append(ps, s.pseudonym(refs[i]))
		}
		compareAnswers(t, "after crashes", answers(t, c, ps), answers(t, ref, ps))
	}
}

// startTCPServer starts a nats-server with JetStream (fsync before every
// acknowledgement, as piledger runs it) on a random loopback port, so that
// a child process can connect, and returns its URL.
func startTCPServer(t *testing.T, storeDir string) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: storeDir, SyncAlways: true,
		MaxPayload: ledger.EmbeddedMaxPayload, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv.ClientURL()
}
