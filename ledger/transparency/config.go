package transparency

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/tlog"
)

const (
	// DefaultStreamName is the JetStream stream of signed checkpoints.
	DefaultStreamName = "PILEDGER_CHECKPOINTS"

	// DefaultCheckpointInterval is the longest a new event waits before a
	// checkpoint covers it: while events arrive, a checkpoint is signed at
	// most this often; after a quiet spell the next event is signed at once.
	// Half a second keeps the time from append to a signed checkpoint under
	// a second (p99), and the checkpoint stream under two small messages a
	// second. Witnesses that cosign would prefer fewer.
	DefaultCheckpointInterval = 500 * time.Millisecond

	// DefaultWaitForTree bounds how long a proof request waits for this
	// node's tree to reach a size another node already signed.
	DefaultWaitForTree = 5 * time.Second
)

// Config configures a [Log]. The zero value of every field but Dir means its
// default.
type Config struct {
	// Dir is the tree's Pebble directory, node-local. Required. It MUST NOT
	// be shared. Deleting it (while the Log is closed) is safe: Open rebuilds
	// the tree from the log.
	Dir string
	// Origin names the log: the first line of every checkpoint and the name
	// of the signing key. Default tlog.DefaultOrigin. Changing it later makes
	// Run refuse to sign (the checkpoint stream holds the old origin).
	Origin string
	// Prefix is the subject prefix; checkpoints go on <Prefix>.checkpoints.
	// Default ledger.DefaultPrefix.
	Prefix string
	// StreamName is the checkpoint stream. Default DefaultStreamName.
	StreamName string
	// Replicas is the checkpoint stream's replication factor when Open
	// creates it: 1, or 3 on a cluster. Default 1.
	Replicas int
	// CheckpointInterval is the longest time between an event reaching the
	// tree and a checkpoint covering it. Default DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// WaitForTree bounds how long a proof waits for the local tree to catch
	// up with a checkpoint. Default DefaultWaitForTree.
	WaitForTree time.Duration
	// Logger receives operational logs (never personal data). Default: none.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Origin == "" {
		c.Origin = tlog.DefaultOrigin
	}
	if c.Prefix == "" {
		c.Prefix = ledger.DefaultPrefix
	}
	if c.StreamName == "" {
		c.StreamName = DefaultStreamName
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.WaitForTree == 0 {
		c.WaitForTree = DefaultWaitForTree
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every invalid setting of c, defaults filled in.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	if !tlog.ValidOrigin(c.Origin) {
		errs = append(errs, fmt.Errorf("origin %q: want printable ASCII without spaces or '+', at most 255 bytes", c.Origin))
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		errs = append(errs, fmt.Errorf("Replicas must be 1, 3 or 5, got %d", c.Replicas))
	}
	if c.CheckpointInterval < 0 || c.WaitForTree < 0 {
		errs = append(errs, errors.New("CheckpointInterval and WaitForTree must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("transparency: config: %w", err)
	}
	return nil
}

func (c Config) subject() string { return c.Prefix + ".checkpoints" }
