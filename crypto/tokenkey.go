package crypto

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/jwt"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// roleTokenSigner is the role of the embedded token issuer's signing keyset.
const roleTokenSigner = "piledger/token-signer"

// TokenKeyFile is the name of the token signing key's file in its directory.
const TokenKeyFile = "token-signer.key"

// OpenTokenKey returns the private keyset of the embedded token issuer: a Tink
// JWT ES256 keyset (the key id travels in each token's "kid" header). It is
// stored in <dir>/token-signer.key as a WrappedKey, wrapped under the KEK like
// every other key (associated data: role "piledger/token-signer", generation 1,
// epoch), never in clear. When the file does not exist, OpenTokenKey creates
// the directory (mode 0700) and a new key (mode 0600), written to a private
// temporary file, synced and linked into place, so a reader never sees a
// partial file and concurrent creators end up with the same key (the first
// link wins).
//
// The file holds a node-local key: tokens it signs verify on the nodes that
// share the file. It returns an error wrapping ErrInvalidKey when the file
// does not unwrap (another KEK, or altered), and the KEK's errors
// (ErrKEKDestroyed after a KEK epoch rotation destroyed its epoch: delete the
// file to start a new key, which invalidates every token it signed).
func OpenTokenKey(ctx context.Context, kek KEK, dir string) (*keyset.Handle, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty token key directory", ErrInvalidConfig)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("crypto: create token key directory: %w", err)
	}
	path := filepath.Join(dir, TokenKeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createTokenKey(ctx, kek, dir, path); err != nil {
			return nil, err
		}
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: read token key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("crypto: token key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v, want 0600", ErrInsecureKEKFile, path, fi.Mode().Perm())
	}
	var wk piledgerv1.WrappedKey
	if err := proto.Unmarshal(data, &wk); err != nil {
		return nil, fmt.Errorf("%w: token key %s: %v", ErrInvalidKey, path, err)
	}
	h, err := unwrapKey(ctx, kek, roleTokenSigner, &wk)
	if err != nil {
		return nil, fmt.Errorf("crypto: token key %s: %w", path, err)
	}
	if _, err := jwt.NewSigner(h); err != nil {
		return nil, fmt.Errorf("%w: token key %s is not a JWT signing keyset: %v", ErrInvalidKey, path, err)
	}
	return h, nil
}

// createTokenKey writes a new wrapped ES256 keyset to path, unless another
// creator got there first.
func createTokenKey(ctx context.Context, kek KEK, dir, path string) error {
	h, err := keyset.NewHandle(jwt.ES256Template())
	if err != nil {
		return fmt.Errorf("crypto: new token key: %w", err)
	}
	data, err := wrapKey(ctx, kek, roleTokenSigner, "", 1, h)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".token-signer-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("crypto: create token key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("crypto: write token key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("crypto: sync token key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("crypto: close token key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("crypto: install token key: %w", err)
	}
	return syncDir(dir)
}
