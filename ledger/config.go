package ledger

import (
	"errors"
	"fmt"
	"time"
)

const (
	// DefaultPrefix is the first token of every NATS subject piledger uses.
	// The log lives on "<prefix>.log".
	DefaultPrefix = "piledger"

	// DefaultStreamName names the JetStream stream that holds the log.
	DefaultStreamName = "PILEDGER"

	// DefaultMaxBlockEvents caps the events packed into one block. Blocks of
	// 100-500 events reach 0.3-1.1M events/s with fsync on the build machine
	// (reference/physical-limits.md §2); larger blocks add latency for
	// little gain. One request is never split, so a block holding a single
	// large request may exceed this count.
	DefaultMaxBlockEvents = 256

	// DefaultMaxBlockBytes caps the encoded size of one block. It must stay
	// below the NATS server's max_payload (1 MiB by default; the embedded
	// server allows EmbeddedMaxPayload); Open lowers it to fit the server.
	DefaultMaxBlockBytes = 4 << 20

	// DefaultDuplicateWindow is the stream's Nats-Msg-Id de-duplication
	// window, used for block retries. Event-id idempotency does not depend on
	// it: the event-id index keeps every id forever.
	DefaultDuplicateWindow = 2 * time.Minute

	// DefaultPublishTimeout bounds how long one block publish waits for its
	// acknowledgement before the waiting appends fail with ErrUnavailable.
	DefaultPublishTimeout = 10 * time.Second
)

// Config configures a Ledger. The zero value of every field but IndexDir
// means its default.
type Config struct {
	// Prefix is the subject prefix; the log is on "<Prefix>.log".
	Prefix string
	// StreamName is the JetStream stream holding the log.
	StreamName string
	// Replicas is the stream's replication factor: 1 on a single node, 3 in
	// a cluster. Checked against an existing stream.
	Replicas int
	// IndexDir is the directory of the node-local event-id index (Pebble).
	// Required. It is derived from the log and rebuilt when deleted.
	IndexDir string
	// MaxBlockEvents caps the events in one block.
	MaxBlockEvents int
	// MaxBlockBytes caps the encoded size of one block.
	MaxBlockBytes int
	// DuplicateWindow is the stream's de-duplication window.
	DuplicateWindow time.Duration
	// PublishTimeout bounds one block publish.
	PublishTimeout time.Duration
	// Limits bounds what an append may carry.
	Limits Limits
	// Now returns the current time; time.Now when nil. Tests may fix it.
	Now func() time.Time
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.StreamName == "" {
		c.StreamName = DefaultStreamName
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxBlockEvents == 0 {
		c.MaxBlockEvents = DefaultMaxBlockEvents
	}
	if c.MaxBlockBytes == 0 {
		c.MaxBlockBytes = DefaultMaxBlockBytes
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Limits == (Limits{}) {
		c.Limits = DefaultLimits()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.IndexDir == "" {
		errs = append(errs, errors.New("IndexDir is required"))
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		errs = append(errs, fmt.Errorf("Replicas must be 1, 3 or 5, got %d", c.Replicas))
	}
	if c.MaxBlockEvents < 1 {
		errs = append(errs, fmt.Errorf("MaxBlockEvents must be >= 1, got %d", c.MaxBlockEvents))
	}
	if c.MaxBlockBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("MaxBlockBytes must be >= 64 KiB, got %d", c.MaxBlockBytes))
	}
	if c.DuplicateWindow < 0 || c.PublishTimeout < 0 {
		errs = append(errs, errors.New("DuplicateWindow and PublishTimeout must not be negative"))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ledger: config: %w", err)
	}
	return nil
}

func (c Config) logSubject() string { return c.Prefix + ".log" }
