package crypto

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// Subjects of the key stream, below the configured prefix. All subject keys
// share one NATS subject: the server keeps state per distinct subject
// (about 250 B of heap each), so there is never a subject per person.
const (
	keysToken       = ".keys"
	subjectKeyToken = ".keys.subject" // every subject key (WrappedKey)
	prfToken        = ".keys.prf"     // the pseudonym PRF keyset (WrappedKey)
)

// keyStreamConfig is the configuration OpenKeyring creates the key stream
// with. Deleting single messages must stay possible, because SecureDeleteMsg
// is the only deletion that removes a shredded key's bytes from disk; purge
// and every limit that could drop keys are off.
func keyStreamConfig(cfg KeyringConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              cfg.StreamName,
		Description:       "piledger subject keys, wrapped by the key-encryption key",
		Subjects:          []string{cfg.Prefix + keysToken + ".>"},
		Retention:         jetstream.LimitsPolicy,
		MaxConsumers:      -1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxAge:            0,
		MaxMsgsPerSubject: -1,
		Discard:           jetstream.DiscardNew,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		DenyDelete:        false,
		DenyPurge:         true,
		AllowRollup:       false,
		Compression:       jetstream.NoCompression,
		AllowDirect:       true,
		// New keys are group-committed as atomic batches (keyWriter).
		AllowAtomicPublish: true,
	}
}

// checkKeyStream returns an error wrapping ErrUnsafeKeyStream naming the
// first setting of an existing key stream that could lose keys, keep erased
// keys, or break the keyring.
func checkKeyStream(c jetstream.StreamConfig, cfg KeyringConfig) error {
	subjects := cfg.Prefix + keysToken + ".>"
	checks := []struct {
		bad    bool
		reason string
	}{
		{c.Storage != jetstream.FileStorage, "storage must be file"},
		{c.Retention != jetstream.LimitsPolicy, "retention must be limits (interest and work-queue retention drop keys)"},
		{c.MaxAge != 0, "MaxAge must be 0 (keys must not expire)"},
		{c.MaxMsgs > 0, "MaxMsgs must be unlimited"},
		{c.MaxBytes > 0, "MaxBytes must be unlimited"},
		{c.MaxMsgsPerSubject > 0, "MaxMsgsPerSubject must be unlimited"},
		{c.AllowMsgTTL, "AllowMsgTTL must be false (keys must not expire)"},
		{c.DenyDelete, "DenyDelete must be false (erasure needs SecureDeleteMsg)"},
		{!c.DenyPurge, "DenyPurge must be true"},
		{c.AllowRollup, "AllowRollup must be false"},
		{c.Sealed, "the stream must not be sealed"},
		{c.Mirror != nil, "the stream must not be a mirror"},
		{c.Compression != jetstream.NoCompression, "compression must be none"},
		{!c.AllowDirect, "AllowDirect must be true"},
		{!slices.Contains(c.Subjects, subjects), "subjects must include " + subjects},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("%w: stream %s: %s", ErrUnsafeKeyStream, c.Name, ch.reason)
		}
	}
	return nil
}

// ensureKeyStream returns the key stream, creating it if it is missing.
func ensureKeyStream(ctx context.Context, js jetstream.JetStream, cfg KeyringConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, cfg.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, keyStreamConfig(cfg))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Created concurrently, with another configuration.
			s, err = js.Stream(ctx, cfg.StreamName)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: key stream %s: %w", cfg.StreamName, err)
	}
	if err := checkKeyStream(s.CachedInfo().Config, cfg); err != nil {
		return nil, err
	}
	if c := s.CachedInfo().Config; !c.AllowAtomicPublish {
		// A stream created before keys were batched: allow atomic batches.
		// A server too old for them (before 2.12) refuses, and the keyring
		// writes keys one by one.
		c.AllowAtomicPublish = true
		if updated, err := js.UpdateStream(ctx, c); err == nil {
			s = updated
		}
	}
	return s, nil
}
