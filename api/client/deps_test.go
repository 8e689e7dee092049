package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

const pkg = "github.com/piledger/piledger/api/client"

// TestDependencies keeps the SDK light for emitters: it must not pull in the
// server side — NATS, Pebble, Tink, the KEK providers, or any piledger
// package but the generated protocol — and it imports only the protocol,
// gRPC, the google.rpc error details, uuid and the standard library.
func TestDependencies(t *testing.T) {
	deps := goList(t, "-deps", pkg)
	if len(deps) < 10 {
		t.Fatalf("go list -deps %s listed only %v", pkg, deps)
	}
	forbidden := []string{
		"github.com/nats-io/",
		"github.com/cockroachdb/",
		"github.com/tink-crypto/",
		"github.com/prometheus/",
		"github.com/spf13/",
		"cloud.google.com/",
		"github.com/aws/",
		"github.com/hashicorp/",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("%s depends on %s", pkg, d)
			}
		}
		if strings.HasPrefix(d, "github.com/piledger/piledger/") && d != pkg && d != "github.com/piledger/piledger/proto/piledger/v1" {
			t.Errorf("%s depends on %s: only the generated protocol may be imported", pkg, d)
		}
	}

	allowed := []string{
		"google.golang.org/grpc",
		"google.golang.org/protobuf/",
		"google.golang.org/genproto/googleapis/rpc/",
		"github.com/google/uuid",
		"github.com/piledger/piledger/proto/piledger/v1",
	}
	for _, imp := range goList(t, "-f", `{{join .Imports "\n"}}`, pkg) {
		if !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
			continue // standard library
		}
		ok := false
		for _, a := range allowed {
			ok = ok || imp == a || strings.HasPrefix(imp, strings.TrimSuffix(a, "/")+"/")
		}
		if !ok {
			t.Errorf("%s imports %s, which is not on its list", pkg, imp)
		}
	}
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	cmd := exec.Command(gobin, append([]string{"list"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %v: %v\n%s", args, err, stderr)
	}
	return strings.Fields(string(out))
}
