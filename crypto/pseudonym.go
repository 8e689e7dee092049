package crypto

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/prf"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// pseudonymBytes is the PRF output length: pseudonyms are 2*pseudonymBytes
// lowercase hex characters.
const pseudonymBytes = 32

// Pseudonymizer maps a data subject's external reference (an e-mail
// address, an ID number, ...) to its pseudonym: the lowercase hex of a keyed
// PRF (Tink HMAC-SHA256 PRF, 32 bytes) of the reference. Without the PRF key
// nobody can compute or test a pseudonym, unlike a plain hash of a
// low-entropy identifier.
//
// The PRF key is the same on every node: it is stored, wrapped by the KEK,
// as the first message on <prefix>.keys.prf of the key stream.
//
// A Pseudonymizer is safe for concurrent use.
type Pseudonymizer struct {
	prf *prf.Set
}

// Pseudonym returns the pseudonym of ref: 64 lowercase hex characters. The
// same ref gives the same pseudonym on every node and across restarts.
func (p *Pseudonymizer) Pseudonym(ref string) string {
	out, err := p.prf.ComputePrimaryPRF([]byte(ref), pseudonymBytes)
	if err != nil {
		// Cannot happen: openPseudonymizer checked the output length.
		panic("crypto: pseudonym PRF failed")
	}
	return hex.EncodeToString(out)
}

// IsPseudonym reports whether s has the form of a pseudonym: 64 lowercase hex
// characters. It says nothing about whether any subject has it.
func IsPseudonym(s string) bool { return s != "" && validPseudonym(s) }

// validPseudonym reports whether p is a pseudonym or "" (the ledger's key).
func validPseudonym(p string) bool {
	if p == "" {
		return true
	}
	if len(p) != 2*pseudonymBytes {
		return false
	}
	for i := range len(p) {
		if c := p[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// openPseudonymizer loads the PRF keyset from the first message on subject
// in the key stream, creating it if there is none. When nodes create it
// concurrently, each publishes its own and then every node uses the first
// one in stream order.
func openPseudonymizer(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, kek KEK, subject string) (*Pseudonymizer, error) {
	first := func() (*jetstream.RawStreamMsg, error) {
		return stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
	}
	msg, err := first()
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		if err := createPRF(ctx, js, stream, kek, subject); err != nil {
			return nil, err
		}
		msg, err = retryNotFound(ctx, first)
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: load PRF keyset: %w", err)
	}
	var wk piledgerv1.WrappedKey
	if err := proto.Unmarshal(msg.Data, &wk); err != nil {
		return nil, fmt.Errorf("%w: PRF keyset at sequence %d: %v", ErrInvalidKey, msg.Sequence, err)
	}
	h, err := unwrapKey(ctx, kek, rolePRF, &wk)
	if err != nil {
		return nil, fmt.Errorf("crypto: PRF keyset at sequence %d: %w", msg.Sequence, err)
	}
	set, err := prf.NewPRFSet(h)
	if err != nil {
		return nil, fmt.Errorf("%w: PRF keyset at sequence %d: %v", ErrInvalidKey, msg.Sequence, err)
	}
	if _, err := set.ComputePrimaryPRF(nil, pseudonymBytes); err != nil {
		return nil, fmt.Errorf("%w: PRF keyset at sequence %d: %v", ErrInvalidKey, msg.Sequence, err)
	}
	return &Pseudonymizer{prf: set}, nil
}

// createPRF publishes a new wrapped PRF keyset on subject.
func createPRF(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, kek KEK, subject string) error {
	h, err := keyset.NewHandle(prf.HMACSHA256PRFKeyTemplate())
	if err != nil {
		return fmt.Errorf("crypto: new PRF keyset: %w", err)
	}
	data, err := wrapKey(ctx, kek, rolePRF, "", 1, h)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, subject, data, jetstream.WithExpectStream(stream.CachedInfo().Config.Name)); err != nil {
		return fmt.Errorf("crypto: store PRF keyset: %w", err)
	}
	return nil
}
