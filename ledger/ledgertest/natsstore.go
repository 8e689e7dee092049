// Package ledgertest holds helpers for tests that exercise the ledger
// against real parts. It is imported by tests only.
package ledgertest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/minio/highwayhash"
)

// The nats-server file store's record layout (server/filestore.go, v2.x):
//
//	rl u32 (bit 31: has headers) | seq u64 (bit 63: erased, bit 62:
//	tombstone) | ts i64 | slen u16 | subject | [hlen u32 | headers] | msg |
//	checksum u64
//
// little-endian; the checksum is a HighwayHash-64 keyed with
// SHA-256("<stream>-<block index>") over seq, ts, subject, headers and msg.
const (
	recordHeaderSize = 22
	checksumSize     = 8
	hasHeadersBit    = 1 << 31
	erasedBit        = 1 << 63
	tombstoneBit     = 1 << 62
)

// ErrNotFound: no stored message of the stream contains the searched bytes.
var ErrNotFound = errors.New("ledgertest: no stored message contains the bytes")

// RewriteMessage edits one stored message of a JetStream stream on disk,
// the way an operator with access to the disk could: it finds the first
// message of stream whose payload contains find in the file store under
// storeDir (the embedded server's StoreDir; the server MUST be stopped),
// calls edit with the payload, which edit changes in place (same length),
// and, when fixChecksum is set, rewrites the record's checksum so that the
// server accepts the edited record as genuine. It returns the message's
// stream sequence.
func RewriteMessage(storeDir, stream string, find []byte, fixChecksum bool, edit func(payload []byte)) (uint64, error) {
	blocks, err := filepath.Glob(filepath.Join(storeDir, "jetstream", "*", "streams", stream, "msgs", "*.blk"))
	if err != nil || len(blocks) == 0 {
		return 0, fmt.Errorf("ledgertest: no message blocks of stream %s under %s", stream, storeDir)
	}
	for _, path := range blocks {
		index, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(path), ".blk"), 10, 32)
		if err != nil {
			continue
		}
		buf, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		seq, ok, err := rewriteIn(buf, stream, uint32(index), find, fixChecksum, edit)
		if err != nil {
			return 0, fmt.Errorf("ledgertest: %s: %w", path, err)
		}
		if ok {
			return seq, os.WriteFile(path, buf, 0o600)
		}
	}
	return 0, ErrNotFound
}

func rewriteIn(buf []byte, stream string, blockIndex uint32, find []byte, fixChecksum bool, edit func([]byte)) (uint64, bool, error) {
	le := binary.LittleEndian
	key := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", stream, blockIndex)))
	for i := 0; i+recordHeaderSize <= len(buf); {
		hdr := buf[i : i+recordHeaderSize]
		rl := le.Uint32(hdr)
		hasHeaders := rl&hasHeadersBit != 0
		rl &^= hasHeadersBit
		seq := le.Uint64(hdr[4:])
		slen := int(le.Uint16(hdr[20:]))
		if rl < recordHeaderSize+checksumSize || i+int(rl) > len(buf) {
			return 0, false, fmt.Errorf("bad record at offset %d", i)
		}
		data := buf[i+recordHeaderSize : i+int(rl)]
		hashed := data[slen : len(data)-checksumSize] // headers (with their length) and message
		payload := hashed
		if hasHeaders {
			hlen := int(le.Uint32(data[slen:]))
			hashed = data[slen+4 : len(data)-checksumSize]
			payload = hashed[hlen:]
		}
		if seq&(erasedBit|tombstoneBit) == 0 && bytes.Contains(payload, find) {
			edit(payload)
			if fixChecksum {
				hh, err := highwayhash.NewDigest64(key[:])
				if err != nil {
					return 0, false, err
				}
				hh.Write(hdr[4:20])
				hh.Write(data[:slen])
				hh.Write(hashed)
				copy(data[len(data)-checksumSize:], hh.Sum(nil))
			}
			return seq, true, nil
		}
		i += int(rl)
	}
	return 0, false, nil
}
