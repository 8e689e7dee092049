package transparency

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/crypto"
	"github.com/piledger/piledger/ledger"
	"github.com/piledger/piledger/ledger/tlog"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// erasedCacheSize bounds the (pseudonym, generation) → erased answers an
// export remembers; a miss costs a key lookup.
const erasedCacheSize = 100_000

// errExportDone ends the log walk of an export.
var errExportDone = errors.New("export done")

// Export calls fn with the records of a bundle of the whole log up to the
// latest signed checkpoint (see proto/piledger/v1/bundle.proto): a header,
// every block of the log as stored, read from the log stream itself (not
// from the tree), every checkpoint in stream order placed before the first
// block that reaches past its size, and an end record. Each block records
// which of its events had no subject key any more (erased). Written with
// tlog.BundleWriter, the records are a bundle tlog.Verify checks.
//
// When the log holds fewer events than the latest checkpoint (it lost
// events), the bundle holds what the log has and the verifier reports it.
// Export stops at fn's first error and returns it; records are owned by fn.
func (l *Log) Export(ctx context.Context, fn func(*piledgerv1.BundleRecord) error) error {
	latest, lastSeq, err := l.loadLatest(ctx)
	if err != nil && !errors.Is(err, ErrCheckpointNotFound) {
		return err
	}
	var size uint64
	if latest != nil {
		size = latest.Size
	}
	if err := fn(&piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_Header{Header: &piledgerv1.BundleHeader{
		FormatVersion: tlog.BundleFormatVersion,
		Origin:        l.cfg.Origin,
		VerifierKey:   l.VerifierKey(),
		CreateTime:    timestamppb.Now(),
		TreeSize:      size,
	}}}); err != nil {
		return err
	}

	var end piledgerv1.BundleEnd
	feedCtx, stopFeed := context.WithCancel(ctx)
	cpCh, cpErr := l.checkpointFeed(feedCtx, lastSeq)
	defer func() {
		stopFeed()
		for range cpCh {
		}
	}()
	next, ok := <-cpCh
	// emitCheckpoints writes every checkpoint whose size is below limit.
	emitCheckpoints := func(limit uint64) error {
		for ok && next.size < limit {
			if err := fn(&piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_Checkpoint{Checkpoint: &piledgerv1.BundleCheckpoint{
				Sequence: next.seq, Note: string(next.note),
			}}}); err != nil {
				return err
			}
			end.Checkpoints++
			next, ok = <-cpCh
		}
		return nil
	}

	erased, err := lru.New[string, bool](erasedCacheSize)
	if err != nil {
		return err
	}
	if size > 0 && l.led.Size() > 0 {
		err = l.led.Follow(ctx, 0, func(b ledger.Block) error {
			blockEnd := b.FirstIndex + uint64(len(b.Envelopes))
			if err := emitCheckpoints(blockEnd); err != nil {
				return err
			}
			rec := &piledgerv1.BundleBlock{Sequence: b.Seq, FirstIndex: b.FirstIndex, Envelopes: b.Envelopes}
			for i, env := range b.Envelopes {
				gone, err := l.erased(ctx, erased, env)
				if err != nil {
					return err
				}
				if gone {
					rec.ErasedOffsets = append(rec.ErasedOffsets, uint32(i))
				}
			}
			if err := fn(&piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_Block{Block: rec}}); err != nil {
				return err
			}
			end.Blocks++
			end.Events += uint64(len(b.Envelopes))
			if blockEnd >= size || b.Pending == 0 {
				return errExportDone
			}
			return nil
		})
		if !errors.Is(err, errExportDone) {
			return err
		}
	}
	if err := emitCheckpoints(^uint64(0)); err != nil {
		return err
	}
	if err := <-cpErr; err != nil {
		return err
	}
	return fn(&piledgerv1.BundleRecord{Record: &piledgerv1.BundleRecord_End{End: &end}})
}

type feedItem struct {
	seq, size uint64
	note      []byte
}

// checkpointFeed sends checkpoints 1..last in order on the first channel,
// which it closes at the end, then sends the walk's error (or nil) on the
// second. A checkpoint whose body does not parse is sent with size 0, so
// it is written at once and the verifier reports it.
func (l *Log) checkpointFeed(ctx context.Context, last uint64) (<-chan feedItem, <-chan error) {
	ch, errc := make(chan feedItem, 256), make(chan error, 1)
	go func() {
		defer close(ch)
		errc <- l.cps.each(ctx, last, func(seq uint64, note []byte) error {
			body, _ := tlog.ParseCheckpointBody(note)
			select {
			case ch <- feedItem{seq: seq, size: body.Size, note: note}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return ch, errc
}

// erased reports whether the subject key that sealed env no longer exists.
// An envelope that does not decode is reported as not erased: the verifier
// flags it.
func (l *Log) erased(ctx context.Context, cache *lru.Cache[string, bool], env []byte) (bool, error) {
	_, h, err := ledger.DecodeEnvelope(env)
	if err != nil {
		return false, nil
	}
	key := h.GetPseudonym() + "/" + strconv.FormatUint(uint64(h.GetKeyGeneration()), 10)
	if gone, ok := cache.Get(key); ok {
		return gone, nil
	}
	_, err = l.keys.OpeningKey(ctx, h.GetPseudonym(), h.GetKeyGeneration())
	gone := errors.Is(err, crypto.ErrShredded) || errors.Is(err, crypto.ErrKeyNotFound)
	if err != nil && !gone {
		return false, fmt.Errorf("transparency: export: subject key: %w", err)
	}
	cache.Add(key, gone)
	return gone, nil
}
