package crypto

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// An erasure receipt is a C2SP signed note, signed by the ledger's
// [LogSigner], that anyone verifies offline with the ledger's published
// verifier key (note.Open). Its text is line-oriented:
//
//	piledger erasure receipt v1
//	subject <pseudonym>
//	erased-at <RFC 3339 UTC>
//	<location> DONE <detail>
//	<location> PENDING <RFC 3339 date> <detail>
//	<location> OUT_OF_SCOPE <detail>
//	...
//
// A receipt never says a bare "success": each place the subject's data could
// live is listed with what was done there and what is still pending.
const receiptHeader = "piledger erasure receipt v1"

// Location states on an erasure receipt.
const (
	LocationDone       = "DONE"
	LocationPending    = "PENDING"
	LocationOutOfScope = "OUT_OF_SCOPE"
)

// ErasureLocation is one place on a receipt.
type ErasureLocation struct {
	// Name is one token of letters, digits, '-' and '_', e.g. "key-store".
	Name string
	// State is LocationDone, LocationPending or LocationOutOfScope.
	State string
	// Until is when a PENDING location is expected to be done; required for
	// PENDING, ignored otherwise.
	Until time.Time
	// Detail is free text on one line.
	Detail string
}

// ErasureReceipt is the statement an erasure receipt signs.
type ErasureReceipt struct {
	Subject   string // the subject's pseudonym
	ErasedAt  time.Time
	Locations []ErasureLocation
}

// Text returns the receipt's note text (ending in a newline). It returns an
// error for a receipt that could not be parsed back unambiguously.
func (r *ErasureReceipt) Text() (string, error) {
	if !IsPseudonym(r.Subject) {
		return "", fmt.Errorf("%w: receipt subject is not a pseudonym", ErrInvalidConfig)
	}
	if len(r.Locations) == 0 {
		return "", fmt.Errorf("%w: receipt lists no location", ErrInvalidConfig)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nsubject %s\nerased-at %s\n", receiptHeader, r.Subject, r.ErasedAt.UTC().Format(time.RFC3339))
	for _, l := range r.Locations {
		if !validToken(l.Name) || strings.ContainsAny(l.Detail, "\n\r") {
			return "", fmt.Errorf("%w: receipt location %q", ErrInvalidConfig, l.Name)
		}
		switch l.State {
		case LocationDone, LocationOutOfScope:
			fmt.Fprintf(&b, "%s %s %s\n", l.Name, l.State, l.Detail)
		case LocationPending:
			if l.Until.IsZero() {
				return "", fmt.Errorf("%w: pending location %s has no date", ErrInvalidConfig, l.Name)
			}
			fmt.Fprintf(&b, "%s %s %s %s\n", l.Name, l.State, l.Until.UTC().Format(time.RFC3339), l.Detail)
		default:
			return "", fmt.Errorf("%w: location %s has state %q", ErrInvalidConfig, l.Name, l.State)
		}
	}
	return b.String(), nil
}

// SignErasureReceipt returns the receipt as a signed note.
func SignErasureReceipt(r *ErasureReceipt, s *LogSigner) ([]byte, error) {
	text, err := r.Text()
	if err != nil {
		return nil, err
	}
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		return nil, fmt.Errorf("crypto: sign erasure receipt: %w", err)
	}
	return msg, nil
}

// ErrInvalidReceipt: an erasure receipt's signature does not verify under
// the given key, or its text is not a receipt.
var ErrInvalidReceipt = errors.New("crypto: invalid erasure receipt")

// VerifyErasureReceipt verifies a signed receipt with the ledger's verifier
// key (as published: [LogSigner.VerifierKey]) and parses it.
func VerifyErasureReceipt(msg []byte, verifierKey string) (*ErasureReceipt, error) {
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return nil, fmt.Errorf("%w: verifier key: %v", ErrInvalidReceipt, err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidReceipt, err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	bad := func(why string) (*ErasureReceipt, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalidReceipt, why)
	}
	if len(lines) < 4 || lines[0] != receiptHeader {
		return bad("not an erasure receipt")
	}
	r := &ErasureReceipt{}
	var ok bool
	if r.Subject, ok = strings.CutPrefix(lines[1], "subject "); !ok || !IsPseudonym(r.Subject) {
		return bad("subject line")
	}
	at, ok := strings.CutPrefix(lines[2], "erased-at ")
	if r.ErasedAt, err = time.Parse(time.RFC3339, at); !ok || err != nil {
		return bad("erased-at line")
	}
	for _, line := range lines[3:] {
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			return bad("location line")
		}
		l := ErasureLocation{Name: f[0], State: f[1]}
		rest := ""
		if len(f) == 3 {
			rest = f[2]
		}
		switch l.State {
		case LocationDone, LocationOutOfScope:
			l.Detail = rest
		case LocationPending:
			date, detail, _ := strings.Cut(rest, " ")
			if l.Until, err = time.Parse(time.RFC3339, date); err != nil {
				return bad("pending date")
			}
			l.Detail = detail
		default:
			return bad("location state")
		}
		r.Locations = append(r.Locations, l)
	}
	return r, nil
}

// KeyStoreLocations returns the receipt locations the keyring is
// responsible for, from what Destroy did: the key store (DONE, with the
// count of key messages overwritten by SecureDeleteMsg), the caches (DONE on
// this node; other nodes evict on applying the key-stream marker), and the
// remnants that only the retirement of the current KEK epoch makes
// irrecoverable (copies of the wrapped keys in backups, replicas' freed disk
// blocks, the server's write-ahead files): PENDING until kekRetires.
func (k *Keyring) KeyStoreLocations(rep DestroyReport, kekRetires time.Time) []ErasureLocation {
	epoch := k.kek.CurrentEpoch()
	return []ErasureLocation{
		{Name: "key-store", State: LocationDone, Detail: fmt.Sprintf(
			"generations 1..%d destroyed; %d key message(s) overwritten by SecureDeleteMsg, %d already gone",
			rep.Generations, rep.Overwritten, rep.AlreadyGone)},
		{Name: "key-caches", State: LocationDone, Detail: fmt.Sprintf(
			"evicted on this node; every other node evicts on applying key-stream marker %d", rep.MarkerSequence)},
		{Name: "remnants", State: LocationPending, Until: kekRetires, Detail: fmt.Sprintf(
			"copies of the wrapped keys in backups, replicas and freed disk blocks are irrecoverable once KEK epoch %d retires", epoch)},
	}
}
