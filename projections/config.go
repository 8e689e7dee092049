package projections

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/piledger/piledger/projections/rules"
)

const (
	// DefaultBatchEvents caps the events applied in one atomic, synced write
	// while the projector catches up. A write also ends when the projector
	// reaches the end of the log, so live events are visible at once.
	DefaultBatchEvents = 1024

	// DefaultMaxConsistencyWait bounds how long a query that asks for a log
	// index (read your writes) waits for the projector to apply it before it
	// fails with ErrBehind.
	DefaultMaxConsistencyWait = 10 * time.Second

	// DefaultDestructionGrace is how long after its deadline a holding that
	// was not destroyed is DUE before it is OVERDUE; a holding destroyed
	// later than this after its deadline is DESTROYED_LATE. It is a policy
	// choice, not a legal period: PIPL Art. 47 asks for deletion "in a timely
	// manner" without a number, and 15 days is the delay processors commonly
	// promise for deletion requests.
	DefaultDestructionGrace = 15 * 24 * time.Hour

	// DefaultPageSize is the page size of list queries when the request
	// asks for none.
	DefaultPageSize = 50

	// MaxPageSize is the largest page size; larger requests are coerced to
	// it (AIP-158).
	MaxPageSize = 1000

	// DefaultCacheBytes is the size of Pebble's block cache.
	DefaultCacheBytes = 64 << 20

	// DefaultSweepInterval is how often the projector evaluates the
	// holding rules on open holdings past their deadline.
	DefaultSweepInterval = time.Minute

	// DefaultRetryDelay is how long Run waits before following the log again
	// after the log became unreachable; it doubles up to maxRetryDelay.
	DefaultRetryDelay = 500 * time.Millisecond
)

// maxRetryDelay caps the delay between attempts to follow the log.
const maxRetryDelay = 30 * time.Second

// Config configures a Store. The zero value of every field except Dir means
// its default.
type Config struct {
	// Dir is the Pebble directory of the read models. Required, and used by
	// one Store at a time. It is disposable: deleted while the Store is
	// closed, it is rebuilt from the log with the same answers.
	Dir string
	// BatchEvents caps the events of one atomic write. Default
	// DefaultBatchEvents.
	BatchEvents int
	// MaxConsistencyWait bounds the wait of a query for a log index.
	// Default DefaultMaxConsistencyWait.
	MaxConsistencyWait time.Duration
	// DestructionGrace separates DUE from OVERDUE. Default
	// DefaultDestructionGrace.
	DestructionGrace time.Duration
	// CacheBytes is Pebble's block cache size. Default DefaultCacheBytes.
	CacheBytes int64
	// RetryDelay is the first delay before following an unreachable log
	// again. Default DefaultRetryDelay.
	RetryDelay time.Duration
	// Now is the clock states and deadlines are evaluated with; time.Now
	// when nil. Tests fix it; it must be safe for concurrent use.
	Now func() time.Time
	// Policy is the rule pack findings are raised by; rules.Default() when
	// nil. A store built under another policy (Digest differs) is rebuilt
	// from the log, so findings always answer to the policy in force.
	Policy *rules.Policy
	// SweepInterval is how often Run evaluates the holding rules on the
	// holdings past their deadline (findings computed at query time), to
	// log and count them. Default DefaultSweepInterval.
	SweepInterval time.Duration
	// Logger receives the projector's logs (positions, counts, errors;
	// never personal data). Discarded when nil.
	Logger *slog.Logger
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.BatchEvents == 0 {
		c.BatchEvents = DefaultBatchEvents
	}
	if c.MaxConsistencyWait == 0 {
		c.MaxConsistencyWait = DefaultMaxConsistencyWait
	}
	if c.DestructionGrace == 0 {
		c.DestructionGrace = DefaultDestructionGrace
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = DefaultCacheBytes
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.Policy == nil {
		c.Policy = rules.Default()
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every setting that cannot work, as one error wrapping
// ErrInvalidConfig. Zero values are valid: they stand for the defaults.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	if c.BatchEvents < 0 {
		errs = append(errs, fmt.Errorf("BatchEvents must not be negative, got %d", c.BatchEvents))
	}
	if c.MaxConsistencyWait < 0 || c.DestructionGrace < 0 || c.RetryDelay < 0 || c.SweepInterval < 0 {
		errs = append(errs, errors.New("MaxConsistencyWait, DestructionGrace, RetryDelay and SweepInterval must not be negative"))
	}
	if c.CacheBytes < 0 {
		errs = append(errs, fmt.Errorf("CacheBytes must not be negative, got %d", c.CacheBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}
