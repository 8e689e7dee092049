package transparency

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/tlog"
)

// checkpoints is the stream of signed checkpoints. Message k (from 1) is the
// k-th checkpoint ever signed; tree sizes strictly grow with the sequence
// because every writer publishes with the last sequence it verified as
// expected, and signs only a larger tree consistent with it.
type checkpoints struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	name    string
	subject string
}

// streamConfig: file storage, no limits, deletes and purges denied, like the
// log itself: every checkpoint ever signed stays servable.
func (c Config) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              c.StreamName,
		Description:       "piledger: signed checkpoints of the log's Merkle tree (append-only)",
		Subjects:          []string{c.subject()},
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
		DenyDelete:        true,
		DenyPurge:         true,
		AllowDirect:       true,
		Compression:       jetstream.NoCompression,
	}
}

// openCheckpoints creates the checkpoint stream, or checks that the
// existing one cannot lose checkpoints.
func openCheckpoints(ctx context.Context, js jetstream.JetStream, cfg Config) (*checkpoints, error) {
	s, err := js.Stream(ctx, cfg.StreamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg.streamConfig())
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, cfg.StreamName) // created concurrently
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint stream %s: %w", ledger.ErrUnavailable, cfg.StreamName, err)
	}
	if err := checkCheckpointStream(s.CachedInfo().Config, cfg); err != nil {
		return nil, err
	}
	return &checkpoints{js: js, stream: s, name: cfg.StreamName, subject: cfg.subject()}, nil
}

// checkCheckpointStream returns an error wrapping ledger.ErrUnsafeStream
// naming every setting of an existing stream that could lose checkpoints.
func checkCheckpointStream(got jetstream.StreamConfig, c Config) error {
	var problems []error
	bad := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	if got.Storage != jetstream.FileStorage {
		bad("storage is %s, want file", got.Storage)
	}
	if got.Retention != jetstream.LimitsPolicy {
		bad("retention is %s, want limits", got.Retention)
	}
	if !got.DenyDelete || !got.DenyPurge {
		bad("deletes or purges are allowed")
	}
	if got.MaxAge > 0 || got.MaxMsgs > 0 || got.MaxBytes > 0 || got.MaxMsgsPerSubject > 0 {
		bad("age, message, byte or per-subject limits are set, want none")
	}
	if got.AllowRollup || got.AllowMsgTTL {
		bad("rollups or message TTLs are allowed")
	}
	if got.Sealed || got.Mirror != nil {
		bad("the stream is sealed or a mirror")
	}
	if !got.AllowDirect {
		bad("direct gets are off")
	}
	if len(got.Subjects) != 1 || got.Subjects[0] != c.subject() {
		bad("subjects are %v, want [%s]", got.Subjects, c.subject())
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: checkpoint stream %s: %w", ledger.ErrUnsafeStream, c.StreamName, errors.Join(problems...))
	}
	return nil
}

// latest returns the sequence and note of the last checkpoint, or seq 0
// when none was signed.
func (c *checkpoints) latest(ctx context.Context) (uint64, []byte, error) {
	msg, err := c.stream.GetLastMsgForSubject(ctx, c.subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("%w: read checkpoint stream: %w", ledger.ErrUnavailable, err)
	}
	return msg.Sequence, msg.Data, nil
}

// get returns the note of checkpoint seq.
func (c *checkpoints) get(ctx context.Context, seq uint64) ([]byte, error) {
	msg, err := c.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: checkpoint %d is missing from the checkpoint stream", ErrInconsistent, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read checkpoint %d: %w", ledger.ErrUnavailable, seq, err)
	}
	return msg.Data, nil
}

// find returns the note of the checkpoint of tree size size among
// checkpoints 1..last, by binary search (sizes grow with the sequence).
// Bodies are parsed without checking signatures; callers verify what they
// return. ok is false when no checkpoint has exactly that size.
func (c *checkpoints) find(ctx context.Context, size, last uint64) (note []byte, ok bool, err error) {
	lo, hi := uint64(1), last
	for lo <= hi {
		mid := lo + (hi-lo)/2
		n, err := c.get(ctx, mid)
		if err != nil {
			return nil, false, err
		}
		body, err := tlog.ParseCheckpointBody(n)
		if err != nil {
			return nil, false, fmt.Errorf("%w: checkpoint %d: %w", ErrInconsistent, mid, err)
		}
		switch {
		case body.Size == size:
			return n, true, nil
		case body.Size < size:
			lo = mid + 1
		default:
			hi = mid - 1
		}
	}
	return nil, false, nil
}

// publish appends a signed note, expecting the stream's last sequence to be
// after (0: empty). It returns the new sequence, and errConflict when
// another writer appended first.
func (c *checkpoints) publish(ctx context.Context, note []byte, after uint64) (uint64, error) {
	ack, err := c.js.Publish(ctx, c.subject, note, jetstream.WithExpectStream(c.name), jetstream.WithExpectLastSequence(after))
	if isWrongLastSequence(err) {
		return 0, errConflict
	}
	if err != nil {
		return 0, fmt.Errorf("%w: publish checkpoint: %w", ledger.ErrUnavailable, err)
	}
	return ack.Sequence, nil
}

// errConflict: another node signed a checkpoint first.
var errConflict = errors.New("transparency: another writer signed first")

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// each calls fn for checkpoints 1..last in order, reading the stream with an
// ordered consumer.
func (c *checkpoints) each(ctx context.Context, last uint64, fn func(seq uint64, note []byte) error) error {
	if last == 0 {
		return nil
	}
	cons, err := c.js.OrderedConsumer(ctx, c.name, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{c.subject},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("%w: read checkpoint stream: %w", ledger.ErrUnavailable, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("%w: read checkpoint stream: %w", ledger.ErrUnavailable, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: read checkpoint stream: %w", ledger.ErrUnavailable, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("%w: read checkpoint stream: %w", ledger.ErrUnavailable, err)
		}
		seq := meta.Sequence.Stream
		if seq > last {
			return nil
		}
		if err := fn(seq, msg.Data()); err != nil {
			return err
		}
		if seq == last {
			return nil
		}
	}
}
