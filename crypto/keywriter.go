package crypto

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

const (
	// maxKeyBatch is the most new keys stored in one write: the server's
	// limit on the messages of one atomic batch.
	maxKeyBatch = 1000

	// minAtomicKeyBatch is the fewest new keys written as one atomic batch.
	// A batch costs about 2 ms whatever its size (the server stages it in a
	// store of its own, reference/physical-limits.md §1); a single fsynced
	// publish costs about 0.35 ms. Fewer keys go out one by one.
	minAtomicKeyBatch = 6

	// keyWriteTimeout bounds one write to the key stream.
	keyWriteTimeout = 30 * time.Second
)

// keyWriter stores new wrapped subject keys in the key stream, one message
// per key (so that erasing a subject can delete its key message alone).
// Concurrent writes are group-committed, as the ledger commits blocks: while
// one write is in flight the next requests wait, and then go out together as
// one JetStream atomic batch, which the server fsyncs once instead of once
// per key. First contact with many new subjects at once (a camera at a busy
// gate) is otherwise bound by one fsync per person.
//
// A keyWriter is safe for concurrent use.
type keyWriter struct {
	js      jetstream.JetStream
	stream  string
	subject string
	atomic  atomic.Bool // the stream accepts atomic batches
	queue   chan *keyWrite
	stop    chan struct{}
	done    chan struct{}

	batches atomic.Uint64 // atomic batches committed, for tests and debugging
}

// keyWrite is one key waiting to be stored.
type keyWrite struct {
	data []byte
	seq  uint64 // its key-stream sequence, once stored
	err  error
	done chan struct{} // closed when seq or err is set
}

func newKeyWriter(js jetstream.JetStream, stream, subject string, atomicBatches bool) *keyWriter {
	w := &keyWriter{
		js:      js,
		stream:  stream,
		subject: subject,
		queue:   make(chan *keyWrite),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	w.atomic.Store(atomicBatches)
	go w.run()
	return w
}

// write stores data as one message on the key subject and returns its
// stream sequence once the server acknowledged it (on disk, as piledger runs
// the server). It returns ErrClosed after close, ctx.Err() when ctx ends
// first (the key may still be stored; an unused key is harmless), and an
// error wrapping the server's answer when the write failed.
func (w *keyWriter) write(ctx context.Context, data []byte) (uint64, error) {
	kw := &keyWrite{data: data, done: make(chan struct{})}
	select {
	case w.queue <- kw:
	case <-w.stop:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case <-kw.done:
		return kw.seq, kw.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// close stops the writer after the write in flight, if any. Later writes
// return ErrClosed.
func (w *keyWriter) close() {
	close(w.stop)
	<-w.done
}

func (w *keyWriter) run() {
	defer close(w.done)
	for {
		var first *keyWrite
		select {
		case first = <-w.queue:
		case <-w.stop:
			return
		}
		batch := []*keyWrite{first}
	fill:
		for len(batch) < maxKeyBatch {
			select {
			case kw := <-w.queue:
				batch = append(batch, kw)
			default:
				break fill
			}
		}
		w.commit(batch)
	}
}

// commit stores a batch of keys and settles every write in it.
func (w *keyWriter) commit(batch []*keyWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), keyWriteTimeout)
	defer cancel()
	defer func() {
		for _, kw := range batch {
			close(kw.done)
		}
	}()
	if !w.atomic.Load() || len(batch) < minAtomicKeyBatch || !w.commitAtomic(ctx, batch) {
		for _, kw := range batch {
			ack, err := w.js.Publish(ctx, w.subject, kw.data, jetstream.WithExpectStream(w.stream))
			if err != nil {
				kw.err = fmt.Errorf("crypto: store subject key: %w", err)
				continue
			}
			kw.seq = ack.Sequence
		}
	}
}

// atomicPublishDisabled is the server's error code for an atomic batch sent
// to a stream that does not allow them.
const atomicPublishDisabled = 10174

// commitAtomic stores the batch as one atomic batch and settles it. It
// returns false, settling nothing, when the stream no longer allows atomic
// batches (its configuration was changed after the keyring opened): the
// writer then stores keys one by one from now on.
func (w *keyWriter) commitAtomic(ctx context.Context, batch []*keyWrite) bool {
	// The batch headers are stored with each key (about 50 bytes); the
	// stream is checked on the acknowledgement instead of with one more
	// stored header per key.
	msgs := make([]*nats.Msg, len(batch))
	for i, kw := range batch {
		msgs[i] = &nats.Msg{Subject: w.subject, Data: kw.data, Header: nats.Header{}}
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, w.js, msgs)
	if apiErr := (*jetstream.APIError)(nil); errors.As(err, &apiErr) && apiErr.ErrorCode == atomicPublishDisabled {
		w.atomic.Store(false)
		return false
	}
	if err == nil {
		w.batches.Add(1)
	}
	if err == nil && (ack.Stream != w.stream || ack.Sequence < uint64(len(batch))) {
		err = errors.New("acknowledged by another stream or with an impossible sequence")
	}
	for i, kw := range batch {
		if err != nil {
			kw.err = fmt.Errorf("crypto: store %d subject keys as one batch: %w", len(batch), err)
			continue
		}
		// An atomic batch is stored contiguously, in order, ending at the
		// acknowledged sequence.
		kw.seq = ack.Sequence - uint64(len(batch)-1-i)
	}
	return true
}
