package crypto

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// Roles of wrapped keysets. The role is part of the associated data, so a
// keyset wrapped for one role never unwraps as another.
const (
	roleSubjectKey = "piledger/subject-key"
	rolePRF        = "piledger/prf"
)

// associatedData binds a wrapped keyset to its role, its owner, its
// generation and the KEK epoch it is wrapped under. Every variable-length
// field is length-prefixed, so distinct tuples never encode alike:
//
//	len(role) u16 | role | len(pseudonym) u16 | pseudonym | generation u32 | epoch u32
//
// (big-endian).
func associatedData(role, pseudonym string, generation, epoch uint32) []byte {
	b := make([]byte, 0, 2+len(role)+2+len(pseudonym)+8)
	b = binary.BigEndian.AppendUint16(b, uint16(len(role)))
	b = append(b, role...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pseudonym)))
	b = append(b, pseudonym...)
	b = binary.BigEndian.AppendUint32(b, generation)
	return binary.BigEndian.AppendUint32(b, epoch)
}

// wrapKey encrypts h under the KEK of the current epoch and returns the
// marshaled WrappedKey message to store in the key stream.
func wrapKey(ctx context.Context, kek KEK, role, pseudonym string, generation uint32, h *keyset.Handle) ([]byte, error) {
	epoch := kek.CurrentEpoch()
	kekAEAD, err := kek.AEAD(ctx, epoch)
	if err != nil {
		return nil, fmt.Errorf("crypto: wrap key: %w", err)
	}
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), kekAEAD, associatedData(role, pseudonym, generation, epoch)); err != nil {
		return nil, fmt.Errorf("crypto: wrap key: %w", err)
	}
	return proto.Marshal(&piledgerv1.WrappedKey{
		Pseudonym:  pseudonym,
		Generation: generation,
		KekEpoch:   epoch,
		Keyset:     buf.Bytes(),
		CreateTime: timestamppb.Now(),
	})
}

// unwrapKey decrypts the keyset of wk, which must have been wrapped for role.
// It returns an error wrapping ErrInvalidKey if the keyset does not decrypt
// with the associated data of wk's own fields, and the KEK's error
// (ErrKEKDestroyed, ErrUnknownEpoch) if the epoch's KEK is unavailable.
func unwrapKey(ctx context.Context, kek KEK, role string, wk *piledgerv1.WrappedKey) (*keyset.Handle, error) {
	kekAEAD, err := kek.AEAD(ctx, wk.GetKekEpoch())
	if err != nil {
		return nil, fmt.Errorf("crypto: unwrap key: %w", err)
	}
	ad := associatedData(role, wk.GetPseudonym(), wk.GetGeneration(), wk.GetKekEpoch())
	h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wk.GetKeyset())), kekAEAD, ad)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidKey, err)
	}
	return h, nil
}
