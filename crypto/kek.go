package crypto

import (
	"context"

	"github.com/tink-crypto/tink-go/v2/tink"
)

// KEK provides key-encryption keys. Every subject key and the pseudonym PRF
// key are stored wrapped under the KEK of an epoch, with the epoch in the
// associated data.
//
// Epochs bound what an erasure leaves behind: live keys are re-wrapped under
// the KEK of a new epoch and the old KEK is destroyed, after which no remnant
// of an erased key (disk, backup, replica) can be unwrapped.
//
// Implementations MUST be safe for concurrent use.
type KEK interface {
	// CurrentEpoch returns the epoch new keys are wrapped under. Epochs start
	// at 1 and only grow.
	CurrentEpoch() uint32

	// AEAD returns the key-encryption AEAD of an epoch. It returns an error
	// wrapping ErrKEKDestroyed if the epoch's KEK was destroyed, and one
	// wrapping ErrUnknownEpoch if the epoch never existed (0 or later than
	// the current epoch).
	AEAD(ctx context.Context, epoch uint32) (tink.AEAD, error)
}
