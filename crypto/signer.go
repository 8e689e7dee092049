package crypto

import (
	"context"
	stded25519 "crypto/ed25519"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"
	tinked25519 "github.com/tink-crypto/tink-go/v2/signature/ed25519"
	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// The ledger's signing key lives on <prefix>.keys.signer of the key stream,
// wrapped by the KEK like every other key. It is one Ed25519 key for the
// whole ledger, the same on every node: it signs the log's checkpoints and
// (later) erasure receipts.
const (
	signerToken   = ".keys.signer"
	roleLogSigner = "piledger/log-signer"
)

// LogSigner signs with the ledger's Ed25519 signing key under a key name. It
// implements golang.org/x/mod/sumdb/note.Signer, so note.Sign produces C2SP
// signed notes (checkpoints) with it. The private key never leaves Tink: a
// LogSigner holds a Tink signing primitive, not key bytes.
//
// A LogSigner is safe for concurrent use.
type LogSigner struct {
	name     string
	signer   tink.Signer
	vkey     string
	verifier note.Verifier
}

// Name implements note.Signer: the key name (for checkpoints, the log's
// origin).
func (s *LogSigner) Name() string { return s.name }

// KeyHash implements note.Signer: the first four bytes of
// SHA-256(name || "\n" || 0x01 || public key), as note defines it.
func (s *LogSigner) KeyHash() uint32 { return s.verifier.KeyHash() }

// Sign implements note.Signer: a plain Ed25519 signature of msg.
func (s *LogSigner) Sign(msg []byte) ([]byte, error) {
	sig, err := s.signer.Sign(msg)
	if err != nil {
		return nil, fmt.Errorf("crypto: sign: %w", err)
	}
	return sig, nil
}

// VerifierKey returns the public verifier key in signed-note form,
// "<name>+<hex key hash>+<base64(0x01 || Ed25519 public key)>", as accepted
// by note.NewVerifier. It is what operators publish and regulators pin.
func (s *LogSigner) VerifierKey() string { return s.vkey }

// Verifier returns the note.Verifier of the key.
func (s *LogSigner) Verifier() note.Verifier { return s.verifier }

// LogSigner returns the ledger's signing key under the key name name
// (C2SP: the log's origin; no spaces, no '+'). The key is created, stored
// wrapped in the key stream and used by every node from then on, on the
// first call against a key stream that has none; when nodes create it
// concurrently, every node uses the first one in stream order, as for the
// pseudonym PRF key. The same key signs under every name; the name is part
// of the key hash, so verifiers must use the same name.
//
// It returns an error wrapping ErrInvalidConfig for an invalid name,
// ErrInvalidKey if the stored key does not unwrap or is not an Ed25519 key,
// and the KEK's errors (ErrKEKDestroyed, ErrUnknownEpoch). Each call reads
// the key stream; call it once and keep the result.
func (k *Keyring) LogSigner(ctx context.Context, name string) (*LogSigner, error) {
	h, seq, err := firstKeyset(ctx, k.js, k.stream, k.kek, k.cfg.Prefix+signerToken, roleLogSigner,
		func() (*keyset.Handle, error) { return keyset.NewHandle(signature.ED25519KeyWithoutPrefixTemplate()) })
	if err != nil {
		return nil, err
	}
	pub, err := ed25519PublicKey(h)
	if err != nil {
		return nil, fmt.Errorf("%w: signing key at sequence %d: %v", ErrInvalidKey, seq, err)
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, fmt.Errorf("%w: key name: %v", ErrInvalidConfig, err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("%w: key name %q: %v", ErrInvalidConfig, name, err)
	}
	signer, err := signature.NewSigner(h)
	if err != nil {
		return nil, fmt.Errorf("%w: signing key at sequence %d: %v", ErrInvalidKey, seq, err)
	}
	// The signature must be a bare Ed25519 signature (no Tink prefix) by the
	// key whose public half is published.
	probe := []byte("piledger signing key self-test\n")
	if sig, err := signer.Sign(probe); err != nil || !verifier.Verify(probe, sig) {
		return nil, fmt.Errorf("%w: signing key at sequence %d fails its self-test", ErrInvalidKey, seq)
	}
	return &LogSigner{name: name, signer: signer, vkey: vkey, verifier: verifier}, nil
}

// ed25519PublicKey returns the public key of the primary key of a Tink
// Ed25519 keyset without a Tink output prefix.
func ed25519PublicKey(h *keyset.Handle) (stded25519.PublicKey, error) {
	ph, err := h.Public()
	if err != nil {
		return nil, err
	}
	e, err := ph.Primary()
	if err != nil {
		return nil, err
	}
	pk, ok := e.Key().(*tinked25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("primary key is a %T, want an Ed25519 public key", e.Key())
	}
	if params, ok := pk.Parameters().(*tinked25519.Parameters); !ok || params.Variant() != tinked25519.VariantNoPrefix {
		return nil, errors.New("the Ed25519 key has an output prefix")
	}
	return stded25519.PublicKey(pk.KeyBytes()), nil
}

// firstKeyset returns the keyset of the first message on subject in the key
// stream, unwrapped for role, and its sequence. When the subject holds none
// it stores a new keyset from create and then reads the first one again, so
// that concurrent creators on several nodes all end up with the same
// keyset (the first in stream order).
func firstKeyset(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, kek KEK, subject, role string, create func() (*keyset.Handle, error)) (*keyset.Handle, uint64, error) {
	first := func() (*jetstream.RawStreamMsg, error) {
		return stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
	}
	msg, err := first()
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		h, cerr := create()
		if cerr != nil {
			return nil, 0, fmt.Errorf("crypto: new %s keyset: %w", role, cerr)
		}
		data, werr := wrapKey(ctx, kek, role, "", 1, h)
		if werr != nil {
			return nil, 0, werr
		}
		if _, perr := js.Publish(ctx, subject, data, jetstream.WithExpectStream(stream.CachedInfo().Config.Name)); perr != nil {
			return nil, 0, fmt.Errorf("crypto: store %s keyset: %w", role, perr)
		}
		msg, err = retryNotFound(ctx, first)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("crypto: load %s keyset: %w", role, err)
	}
	var wk piledgerv1.WrappedKey
	if err := proto.Unmarshal(msg.Data, &wk); err != nil {
		return nil, 0, fmt.Errorf("%w: %s keyset at sequence %d: %v", ErrInvalidKey, role, msg.Sequence, err)
	}
	h, err := unwrapKey(ctx, kek, role, &wk)
	if err != nil {
		return nil, 0, fmt.Errorf("crypto: %s keyset at sequence %d: %w", role, msg.Sequence, err)
	}
	return h, msg.Sequence, nil
}
