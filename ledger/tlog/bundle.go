package tlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// BundleFormatVersion is the bundle format this package writes and reads.
const BundleFormatVersion = 1

// MaxRecordBytes bounds one bundle record. A block holds at most a few MiB
// of envelopes (the NATS max_payload); a larger length prefix means the file
// is not a bundle.
const MaxRecordBytes = 64 << 20

// BundleWriter writes a bundle: a length-delimited stream of
// piledgerv1.BundleRecord (a varint byte length, then the record). It checks
// only that the first record is a header and that nothing follows the end
// record; the order in between is the producer's (see bundle.proto). A
// BundleWriter is not safe for concurrent use.
type BundleWriter struct {
	w       *bufio.Writer
	started bool
	ended   bool
}

// NewBundleWriter returns a writer to w. Call Close after the end record to
// flush.
func NewBundleWriter(w io.Writer) *BundleWriter {
	return &BundleWriter{w: bufio.NewWriterSize(w, 1<<20)}
}

// Write appends one record.
func (bw *BundleWriter) Write(rec *piledgerv1.BundleRecord) error {
	switch {
	case bw.ended:
		return errors.New("tlog: bundle record after the end record")
	case !bw.started && rec.GetHeader() == nil:
		return errors.New("tlog: a bundle must start with a header")
	case bw.started && rec.GetHeader() != nil:
		return errors.New("tlog: a bundle has one header")
	}
	bw.started = true
	bw.ended = rec.GetEnd() != nil
	if _, err := protodelim.MarshalTo(bw.w, rec); err != nil {
		return fmt.Errorf("tlog: write bundle: %w", err)
	}
	return nil
}

// Close flushes the bundle. It returns an error if no end record was
// written: such a bundle is incomplete and verifiers reject it. It does not
// close the underlying writer.
func (bw *BundleWriter) Close() error {
	if err := bw.w.Flush(); err != nil {
		return fmt.Errorf("tlog: write bundle: %w", err)
	}
	if !bw.ended {
		return errors.New("tlog: bundle closed without an end record")
	}
	return nil
}

// BundleReader reads the records of a bundle in order. It is not safe for
// concurrent use.
type BundleReader struct {
	r      *bufio.Reader
	n      int64 // bytes consumed, for progress reports
	header *piledgerv1.BundleHeader
	ended  bool
	buf    []byte // the last record read by readRaw
}

// NewBundleReader reads the bundle's header from r and returns a reader
// positioned after it. It returns an error wrapping ErrUnreadable if r does
// not start with a header record of a supported format version.
func NewBundleReader(r io.Reader) (*BundleReader, error) {
	br := &BundleReader{r: bufio.NewReaderSize(r, 1<<20)}
	rec, err := br.read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: empty file", ErrUnreadable)
	}
	if err != nil {
		return nil, err
	}
	h := rec.GetHeader()
	if h == nil {
		return nil, fmt.Errorf("%w: not a piledger bundle (no header record)", ErrUnreadable)
	}
	if h.GetFormatVersion() != BundleFormatVersion {
		return nil, fmt.Errorf("%w: bundle format version %d, this verifier reads version %d", ErrUnreadable, h.GetFormatVersion(), BundleFormatVersion)
	}
	br.header = h
	return br, nil
}

// Header returns the bundle's header.
func (br *BundleReader) Header() *piledgerv1.BundleHeader { return br.header }

// BytesRead returns how many bytes of the bundle were consumed so far.
func (br *BundleReader) BytesRead() int64 { return br.n }

// Next returns the next record after the header. It returns io.EOF after the
// end record, and an error wrapping ErrUnreadable when the file ends before
// the end record or holds something that is not a record. The record is
// owned by the caller.
func (br *BundleReader) Next() (*piledgerv1.BundleRecord, error) {
	if br.ended {
		return nil, io.EOF
	}
	rec, err := br.read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: the bundle ends before its end record (truncated file?)", ErrUnreadable)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case rec.GetHeader() != nil:
		return nil, fmt.Errorf("%w: a second header record at byte %d", ErrUnreadable, br.n)
	case rec.GetRecord() == nil:
		return nil, fmt.Errorf("%w: an empty or unknown record at byte %d", ErrUnreadable, br.n)
	}
	br.ended = rec.GetEnd() != nil
	return rec, nil
}

// read reads one length-delimited record.
func (br *BundleReader) read() (*piledgerv1.BundleRecord, error) {
	start := br.n
	body, err := br.readRaw()
	if err != nil {
		return nil, err
	}
	rec := &piledgerv1.BundleRecord{}
	if err := proto.Unmarshal(body, rec); err != nil {
		return nil, fmt.Errorf("%w: record at byte %d: %v", ErrUnreadable, start, err)
	}
	return rec, nil
}

// readRaw reads the bytes of one length-delimited record into a buffer
// that the next read reuses. It returns io.EOF at a clean end of input. A
// length prefix larger than the rest of the file costs no more memory than
// the file holds: large bodies are read incrementally.
func (br *BundleReader) readRaw() ([]byte, error) {
	start := br.n
	cr := countingReader{r: br.r}
	size, err := binary.ReadUvarint(&cr)
	br.n += cr.n
	switch {
	case errors.Is(err, io.EOF) && cr.n == 0:
		return nil, io.EOF
	case err != nil:
		return nil, fmt.Errorf("%w: bad record length at byte %d: %v", ErrUnreadable, start, err)
	case size > MaxRecordBytes:
		return nil, fmt.Errorf("%w: a record of %d bytes at byte %d (the limit is %d)", ErrUnreadable, size, start, MaxRecordBytes)
	}
	var body []byte
	if size <= uint64(cap(br.buf)) || size <= 1<<20 {
		if uint64(cap(br.buf)) < size {
			br.buf = make([]byte, 1<<20)
		}
		body = br.buf[:size]
		_, err = io.ReadFull(br.r, body)
	} else {
		body, err = io.ReadAll(io.LimitReader(br.r, int64(size)))
		if err == nil && uint64(len(body)) < size {
			err = io.ErrUnexpectedEOF
		}
		br.buf = body
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, fmt.Errorf("%w: record at byte %d: %v", ErrUnreadable, start, err)
	}
	br.n += int64(size)
	return body, nil
}

// countingReader counts the bytes of a length prefix.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// blockView is a block record parsed without copying: Envelopes alias the
// reader's buffer and are valid until the next read. Verify uses it to hash
// envelopes where they lie.
type blockView struct {
	seq, first uint64
	envs       [][]byte
	erased     []uint32
}

// Field numbers of BundleRecord and BundleBlock.
const (
	fieldRecordBlock      = 2
	fieldBlockSequence    = 1
	fieldBlockFirstIndex  = 2
	fieldBlockEnvelopes   = 3
	fieldBlockErasedOffst = 4
)

// nextView is Next with blocks returned as a view in *blk (rec nil); every
// other record is decoded as by Next.
func (br *BundleReader) nextView(blk *blockView) (*piledgerv1.BundleRecord, error) {
	if br.ended {
		return nil, io.EOF
	}
	start := br.n
	body, err := br.readRaw()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: the bundle ends before its end record (truncated file?)", ErrUnreadable)
	}
	if err != nil {
		return nil, err
	}
	if inner, ok := onlyField(body, fieldRecordBlock); ok {
		if err := blk.parse(inner); err != nil {
			return nil, fmt.Errorf("%w: block record at byte %d: %v", ErrUnreadable, start, err)
		}
		return nil, nil
	}
	rec := &piledgerv1.BundleRecord{}
	if err := proto.Unmarshal(body, rec); err != nil {
		return nil, fmt.Errorf("%w: record at byte %d: %v", ErrUnreadable, start, err)
	}
	switch {
	case rec.GetHeader() != nil:
		return nil, fmt.Errorf("%w: a second header record at byte %d", ErrUnreadable, start)
	case rec.GetRecord() == nil:
		return nil, fmt.Errorf("%w: an empty or unknown record at byte %d", ErrUnreadable, start)
	}
	br.ended = rec.GetEnd() != nil
	return rec, nil
}

// onlyField returns the value of b's single field when b holds exactly one
// field, of number num and length-delimited type.
func onlyField(b []byte, num protowire.Number) ([]byte, bool) {
	n, typ, l := protowire.ConsumeTag(b)
	if l < 0 || n != num || typ != protowire.BytesType {
		return nil, false
	}
	v, m := protowire.ConsumeBytes(b[l:])
	if m < 0 || l+m != len(b) {
		return nil, false
	}
	return v, true
}

// parse reads a marshaled BundleBlock as proto.Unmarshal would (later
// scalars win, fields of another wire type are unknown fields).
func (blk *blockView) parse(b []byte) error {
	blk.seq, blk.first, blk.envs, blk.erased = 0, 0, blk.envs[:0], blk.erased[:0]
	var bad bool
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) bool {
		switch {
		case num == fieldBlockSequence && typ == protowire.VarintType:
			blk.seq = x
		case num == fieldBlockFirstIndex && typ == protowire.VarintType:
			blk.first = x
		case num == fieldBlockEnvelopes && typ == protowire.BytesType:
			blk.envs = append(blk.envs, v)
		case num == fieldBlockErasedOffst && typ == protowire.VarintType:
			blk.erased = append(blk.erased, uint32(x))
		case num == fieldBlockErasedOffst && typ == protowire.BytesType: // packed
			for len(v) > 0 {
				x, n := protowire.ConsumeVarint(v)
				if n < 0 {
					bad = true
					return false
				}
				blk.erased = append(blk.erased, uint32(x))
				v = v[n:]
			}
		}
		return true
	})
	if err != nil || bad {
		return errors.New("invalid wire-format data")
	}
	return nil
}
