package transparency

import (
	"errors"
	"fmt"

	"github.com/piledger/piledger/ledger"
)

var (
	// ErrCheckpointNotFound: no checkpoint was signed yet, or none of the
	// requested tree size.
	ErrCheckpointNotFound = errors.New("transparency: no such checkpoint")

	// ErrInvalidRange is matched by a *RangeError whose request is
	// self-contradictory (an index not below the tree size, from above to,
	// from zero). Fix the request.
	ErrInvalidRange = errors.New("transparency: invalid proof range")

	// ErrBeyondCheckpoint is matched by a *RangeError whose request reaches
	// past the latest signed checkpoint. Retry after the next checkpoint
	// (at most Config.CheckpointInterval after the events reached the tree).
	ErrBeyondCheckpoint = errors.New("transparency: beyond the latest signed checkpoint")

	// ErrInconsistent: the tree does not match a signed checkpoint, or a
	// stored checkpoint does not verify. The log or the checkpoint stream was
	// altered or lost data. It matches ledger.ErrCorrupt too.
	ErrInconsistent = fmt.Errorf("%w: the Merkle tree disagrees with a signed checkpoint", ledger.ErrCorrupt)

	// ErrClosed: the Log was closed.
	ErrClosed = errors.New("transparency: closed")
)

// RangeError is a proof request that cannot be answered as asked. It names
// the request field at fault ("index", "treeSize", "from", "to", by their
// JSON names) and says why; the description holds tree sizes and indexes,
// never event contents. errors.Is matches Err: ErrInvalidRange or
// ErrBeyondCheckpoint.
type RangeError struct {
	Field       string
	Description string
	Err         error
}

// Error implements error.
func (e *RangeError) Error() string {
	return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Description)
}

// Unwrap returns Err.
func (e *RangeError) Unwrap() error { return e.Err }
