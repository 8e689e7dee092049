package crypto

import "errors"

// Errors returned by this package. They are wrapped with %w and context that
// never holds a subject reference, a pseudonym-to-reference mapping or key
// bytes; test them with [errors.Is].
var (
	// ErrKeyNotFound: the subject has no key of the requested generation.
	ErrKeyNotFound = errors.New("crypto: key not found")

	// ErrShredded: the subject's key was destroyed: its key message is gone
	// from the key stream (only erasure deletes key messages).
	ErrShredded = errors.New("crypto: key shredded")

	// ErrInvalidKey: a stored wrapped key is malformed, is not bound to the
	// subject, generation and epoch it claims, or does not unwrap under the KEK.
	ErrInvalidKey = errors.New("crypto: invalid wrapped key")

	// ErrInvalidPseudonym: the string is not a pseudonym (64 lowercase hex
	// characters) nor "" (the ledger's own key). Raw subject references are
	// refused here, so they never reach the key stream or the index.
	ErrInvalidPseudonym = errors.New("crypto: invalid pseudonym")

	// ErrKEKDestroyed: the key-encryption key of the epoch was destroyed.
	ErrKEKDestroyed = errors.New("crypto: key-encryption key destroyed")

	// ErrUnknownEpoch: no key-encryption key of the epoch has ever existed.
	ErrUnknownEpoch = errors.New("crypto: unknown key-encryption key epoch")

	// ErrEpochInUse: the key-encryption key of the current epoch cannot be
	// destroyed.
	ErrEpochInUse = errors.New("crypto: key-encryption key epoch in use")

	// ErrRotationIncomplete: a KEK rotation could not re-wrap every live key
	// under the current epoch (keys under an older epoch kept appearing, or a
	// live key does not unwrap), so no older epoch was destroyed. The message
	// says why.
	ErrRotationIncomplete = errors.New("crypto: KEK rotation incomplete")

	// ErrInsecureKEKFile: a key-encryption keyset file is accessible by group or
	// others, or its directory is writable by them.
	ErrInsecureKEKFile = errors.New("crypto: key-encryption keyset file is not private")

	// ErrUnsafeKeyStream: the key stream exists with a configuration that could
	// lose keys or keep them after erasure. The message names the setting.
	ErrUnsafeKeyStream = errors.New("crypto: unsafe key stream configuration")

	// ErrInvalidConfig: a configuration value is out of range.
	ErrInvalidConfig = errors.New("crypto: invalid config")

	// ErrClosed: the keyring is closed, or its key-stream follower stopped.
	ErrClosed = errors.New("crypto: keyring closed")
)
