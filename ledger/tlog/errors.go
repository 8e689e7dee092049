package tlog

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrTampered is matched (errors.Is) by every *TamperError: the data
	// disagrees with a signed checkpoint or with itself. Retrying does not
	// help; the error says where.
	ErrTampered = errors.New("tlog: tampered")

	// ErrUnreadable: the input is not a bundle or checkpoint this package can
	// read (wrong format, unknown version, truncated file). Nothing can be
	// concluded about tampering from it.
	ErrUnreadable = errors.New("tlog: unreadable input")

	// ErrBadCheckpoint: a checkpoint does not verify under the given key and
	// origin, or its body is malformed.
	ErrBadCheckpoint = errors.New("tlog: checkpoint does not verify")
)

// TamperError says what is wrong and where. errors.Is(err, ErrTampered)
// reports true for it. Locations are log indexes (Merkle leaf indexes),
// log-stream block sequences and checkpoint-stream sequences, all as written
// in the bundle; a zero Block or Checkpoint means "not applicable", as does
// End == 0 for the index range.
type TamperError struct {
	// Reason is one sentence in English; it never holds event contents.
	Reason string
	// [Start, End) is the range of log indexes involved (End == 0: none).
	Start, End uint64
	// FirstBlock and LastBlock are the sequences of the blocks involved.
	FirstBlock, LastBlock uint64
	// Checkpoint is the sequence of the checkpoint involved.
	Checkpoint uint64
}

// Error implements error.
func (e *TamperError) Error() string {
	var where []string
	switch {
	case e.End == e.Start+1:
		where = append(where, fmt.Sprintf("log index %d", e.Start))
	case e.End > e.Start:
		where = append(where, fmt.Sprintf("log indexes %d..%d", e.Start, e.End-1))
	}
	switch {
	case e.FirstBlock != 0 && e.LastBlock > e.FirstBlock:
		where = append(where, fmt.Sprintf("blocks %d..%d", e.FirstBlock, e.LastBlock))
	case e.FirstBlock != 0:
		where = append(where, fmt.Sprintf("block %d", e.FirstBlock))
	}
	if e.Checkpoint != 0 {
		where = append(where, fmt.Sprintf("checkpoint %d", e.Checkpoint))
	}
	if len(where) == 0 {
		return "tlog: tampered: " + e.Reason
	}
	return "tlog: tampered: " + e.Reason + " (" + strings.Join(where, ", ") + ")"
}

// Is makes errors.Is(err, ErrTampered) true.
func (e *TamperError) Is(target error) bool { return target == ErrTampered }
