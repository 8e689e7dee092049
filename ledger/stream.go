package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// streamConfig is the configuration piledger creates the log stream with:
// file storage, no limits of any kind, deletes and purges denied, no
// compression (so the at-rest content is exactly the sealed envelopes).
func (c Config) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              c.StreamName,
		Description:       "piledger: the personal-information lifecycle log (append-only)",
		Subjects:          []string{c.logSubject()},
		Retention:         jetstream.LimitsPolicy,
		MaxConsumers:      -1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxAge:            0,
		MaxMsgsPerSubject: -1,
		MaxMsgSize:        -1,
		Discard:           jetstream.DiscardNew,
		Storage:           jetstream.FileStorage,
		Replicas:          c.Replicas,
		Duplicates:        c.DuplicateWindow,
		DenyDelete:        true,
		DenyPurge:         true,
		AllowDirect:       true,
		Compression:       jetstream.NoCompression,
	}
}

// ensureStream creates the log stream, or checks that the existing one
// cannot lose or remove events. It returns ErrUnsafeStream, naming every
// unsafe setting, rather than "fixing" a stream it did not create: some
// settings (DenyDelete, DenyPurge) can never be switched back, and the
// operator must decide.
func ensureStream(ctx context.Context, js jetstream.JetStream, c Config) (jetstream.Stream, error) {
	stream, err := js.Stream(ctx, c.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = js.CreateStream(ctx, c.streamConfig())
		if err != nil {
			return nil, fmt.Errorf("ledger: create stream %s: %w", c.StreamName, err)
		}
		return stream, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: look up stream %s: %w", c.StreamName, err)
	}
	if err := checkStream(stream.CachedInfo().Config, c); err != nil {
		return nil, err
	}
	return stream, nil
}

// checkStream lists every setting of an existing stream that could lose,
// remove or reorder acknowledged events.
func checkStream(got jetstream.StreamConfig, c Config) error {
	var problems []error
	bad := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	if got.Storage != jetstream.FileStorage {
		bad("storage is %s, want file", got.Storage)
	}
	if got.Retention != jetstream.LimitsPolicy {
		bad("retention is %s, want limits (work-queue and interest retention remove messages)", got.Retention)
	}
	if !got.DenyDelete {
		bad("deny_delete is off")
	}
	if !got.DenyPurge {
		bad("deny_purge is off")
	}
	if got.MaxAge > 0 {
		bad("max_age is %s, want none", got.MaxAge)
	}
	if got.MaxMsgs > 0 || got.MaxBytes > 0 || got.MaxMsgsPerSubject > 0 {
		bad("message, byte or per-subject limits are set, want none")
	}
	if got.AllowRollup {
		bad("rollups are allowed (a rollup purges)")
	}
	if got.AllowMsgTTL {
		bad("per-message TTLs are allowed")
	}
	if got.PersistMode == jetstream.AsyncPersistMode {
		bad("persist_mode is async (acknowledged writes could be lost)")
	}
	if got.Sealed {
		bad("stream is sealed (no appends possible)")
	}
	if got.Mirror != nil {
		bad("stream is a mirror (read-only)")
	}
	if got.Replicas != c.Replicas {
		bad("replicas is %d, want %d", got.Replicas, c.Replicas)
	}
	if len(got.Subjects) != 1 || got.Subjects[0] != c.logSubject() {
		bad("subjects are %v, want [%s]", got.Subjects, c.logSubject())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: stream %s: %w", ErrUnsafeStream, c.StreamName, errors.Join(problems...))
	}
	return nil
}
