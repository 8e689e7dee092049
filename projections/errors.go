package projections

import "errors"

// Errors returned by this package, wrapped with %w and context that never
// holds personal data (no subject reference, no decrypted value). Test them
// with [errors.Is].
var (
	// ErrNotFound: the read models hold no event of the subject (none was
	// recorded, or none was applied yet: pass min_index to wait for one).
	ErrNotFound = errors.New("projections: not found")

	// ErrInvalidPageToken: the page token was not issued by this ledger for
	// the same query (other parameters changed), or it was altered. Callers
	// should start again from the first page.
	ErrInvalidPageToken = errors.New("projections: invalid page token")

	// ErrBehind: the read models did not reach the requested log index within
	// the consistency wait. The index may not exist yet, or the projector is
	// catching up; retry later.
	ErrBehind = errors.New("projections: read models behind the requested log index")

	// ErrStopped: the projector stopped with an error; the read models no
	// longer follow the log. The cause is in the server log.
	ErrStopped = errors.New("projections: projector stopped")

	// ErrCorrupt: a stored row does not decode or decrypt under its
	// subject's key, or the log has a gap. The read models were altered or
	// damaged; delete the directory to rebuild them from the log.
	ErrCorrupt = errors.New("projections: corrupt read model")

	// ErrInvalidConfig: a Config value is out of range.
	ErrInvalidConfig = errors.New("projections: invalid config")
)
