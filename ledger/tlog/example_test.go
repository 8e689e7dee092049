package tlog_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/piledger/piledger/ledger/tlog"
)

// A regulator verifies a bundle exported with `piledger log export`, pinning
// the key the operator published.
func ExampleVerify() {
	key, err := os.ReadFile("testdata/ledger.vkey")
	if err != nil {
		panic(err)
	}
	f, err := os.Open("testdata/ledger.bundle")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	rep, err := tlog.Verify(f, tlog.Options{VerifierKey: string(key)})
	var tampered *tlog.TamperError
	switch {
	case errors.As(err, &tampered):
		fmt.Println("tampered at log indexes", tampered.Start, "to", tampered.End-1)
	case err != nil:
		fmt.Println("cannot verify:", err)
	default:
		fmt.Printf("%d events verified, %d of them erased\n", rep.Events, rep.Erased)
	}
	// Output: 16 events verified, 3 of them erased
}
