package projections

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
)

// Page tokens (AIP-158) are opaque: the cursor is sealed with the ledger's
// own key (crypto.Keyring, pseudonym "") with the query's other parameters
// as associated data, so a token cannot be read, forged, or replayed with
// other parameters (another subject, another processor filter). Page size
// may change between pages. Every node shares the ledger's key, so a token
// from one node works on another.

// maxPageTokenBytes bounds a page token before decoding.
const maxPageTokenBytes = 1024

func tokenAD(bind string) []byte { return []byte("piledger-page-token-v1\x00" + bind) }

// sealToken returns the page token for a cursor of the query bound by bind.
func (s *Store) sealToken(ctx context.Context, bind string, cursor []byte) (string, error) {
	k, err := s.keys.SealingKey(ctx, "")
	if err != nil {
		return "", fmt.Errorf("projections: ledger key: %w", err)
	}
	v, err := sealBytes(k, tokenAD(bind), cursor)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(v), nil
}

// openToken returns the cursor of a page token; ErrInvalidPageToken when
// the token is malformed, altered, or was issued for other parameters.
func (s *Store) openToken(ctx context.Context, bind, token string) ([]byte, error) {
	if len(token) > maxPageTokenBytes {
		return nil, ErrInvalidPageToken
	}
	v, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return nil, ErrInvalidPageToken
	}
	cursor, err := openBytes(ctx, s.keys, "", tokenAD(bind), v)
	switch {
	case errors.Is(err, ErrCorrupt), errors.Is(err, errRowShredded):
		return nil, ErrInvalidPageToken
	case err != nil:
		return nil, err
	}
	return cursor, nil
}

// pageSize returns the page size to use for a requested one: 0 means
// DefaultPageSize, larger than MaxPageSize means MaxPageSize. Negative sizes
// are the caller's to reject.
func pageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}
