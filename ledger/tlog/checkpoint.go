package tlog

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/mod/sumdb/note"
)

// DefaultOrigin is the origin (first checkpoint line, and signing key name)
// of a ledger whose operator did not choose one. Operators SHOULD choose a
// name they control, such as "ledger.example.org/piledger".
const DefaultOrigin = "piledger.local/log"

// Checkpoint is a verified checkpoint: its parsed body and the signed note
// it came from.
type Checkpoint struct {
	// Origin, Size and Hash are the checkpoint body (C2SP tlog-checkpoint).
	log.Checkpoint
	// Note is the signed note exactly as signed.
	Note []byte
}

// ValidOrigin reports whether s can be a checkpoint origin and signing key
// name: non-empty printable ASCII without spaces or '+', at most 255 bytes.
func ValidOrigin(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '+' {
			return false
		}
	}
	return true
}

// SignCheckpoint returns the signed note of the checkpoint (origin, size,
// root), signed by s. The note's text is exactly the C2SP tlog-checkpoint
// body, with no extension lines.
func SignCheckpoint(s note.Signer, origin string, size uint64, root []byte) ([]byte, error) {
	if !ValidOrigin(origin) {
		return nil, fmt.Errorf("tlog: invalid origin %q", origin)
	}
	if len(root) != HashSize {
		return nil, fmt.Errorf("tlog: root hash of %d bytes, want %d", len(root), HashSize)
	}
	body := log.Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal()
	msg, err := note.Sign(&note.Note{Text: string(body)}, s)
	if err != nil {
		return nil, fmt.Errorf("tlog: sign checkpoint: %w", err)
	}
	return msg, nil
}

// OpenCheckpoint verifies a signed checkpoint: it must carry a valid
// signature by v, and its origin must be origin. Signatures by other keys
// are ignored (witness cosignatures, for example). It returns an error
// wrapping ErrBadCheckpoint otherwise. It is
// github.com/transparency-dev/formats/log.ParseCheckpoint plus checks that
// the body has exactly three lines and a root hash of the right size.
func OpenCheckpoint(msg []byte, origin string, v note.Verifier) (*Checkpoint, error) {
	cp, ext, _, err := log.ParseCheckpoint(msg, origin, v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	if len(ext) > 0 {
		return nil, fmt.Errorf("%w: unexpected extension lines", ErrBadCheckpoint)
	}
	if len(cp.Hash) != HashSize {
		return nil, fmt.Errorf("%w: root hash of %d bytes, want %d", ErrBadCheckpoint, len(cp.Hash), HashSize)
	}
	return &Checkpoint{Checkpoint: *cp, Note: bytes.Clone(msg)}, nil
}

// ParseCheckpointBody reads the body of a signed checkpoint WITHOUT checking
// its signature: for locating checkpoints by size in storage the caller
// trusts. Never use it to decide whether a checkpoint is genuine.
func ParseCheckpointBody(msg []byte) (log.Checkpoint, error) {
	text, _, ok := strings.Cut(string(msg), "\n\n")
	if !ok {
		return log.Checkpoint{}, fmt.Errorf("%w: not a signed note", ErrBadCheckpoint)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(text + "\n")); err != nil {
		return log.Checkpoint{}, fmt.Errorf("%w: %v", ErrBadCheckpoint, err)
	}
	return cp, nil
}

// NewVerifier returns the note verifier of a verifier key
// ("<name>+<hash>+<base64 key>"), wrapping ErrUnreadable when the key is
// malformed.
func NewVerifier(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("%w: verifier key: %v", ErrUnreadable, err)
	}
	return v, nil
}

// CheckConsistency checks that the verified checkpoint newer extends the
// verified checkpoint older, of the same origin, using an RFC 6962
// consistency proof from older.Size to newer.Size (ignored when the sizes
// are equal or older is empty). It returns a *TamperError when newer is
// smaller (a rollback), when equal sizes have different roots, or when the
// proof does not verify (a fork: the log was rewritten between the two).
func CheckConsistency(older, newer *Checkpoint, consistency [][]byte) error {
	switch {
	case older.Origin != newer.Origin:
		return fmt.Errorf("%w: origins differ: %q and %q", ErrBadCheckpoint, older.Origin, newer.Origin)
	case newer.Size < older.Size:
		return &TamperError{Reason: fmt.Sprintf("the log shrank: the newer checkpoint has %d events, the older one %d", newer.Size, older.Size)}
	case newer.Size == older.Size:
		if !bytes.Equal(older.Hash, newer.Hash) {
			return &TamperError{Reason: fmt.Sprintf("two checkpoints of size %d have different roots: the log was rewritten", newer.Size)}
		}
		return nil
	case older.Size == 0:
		return nil
	}
	if err := proof.VerifyConsistency(Hasher, older.Size, newer.Size, consistency, older.Hash, newer.Hash); err != nil {
		return &TamperError{
			Reason: fmt.Sprintf("the tree of size %d is not a prefix of the tree of size %d: the log was rewritten (%v)", older.Size, newer.Size, err),
		}
	}
	return nil
}
