package projections

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"time"

	"github.com/google/uuid"
)

// Pebble key layout. Every key starts with a one-byte table id. Keys that
// carry a pseudonym (32 raw bytes) name processors and purposes only by tag
// (8 bytes of the keyring's PRF, see tags.go), so the directory alone does not
// say who holds a pseudonymous subject's data or why. Values that describe a
// person are sealed (see seal.go). Integers are big-endian and times are
// encoded by encodeTime, so keys sort by them.
//
//	m <name>                                   meta: layout version, stream identity, position, counters
//	i <event id 16>                            processed-id set -> log index (8)
//	s <P 32> t <occurred 12> <index 8>         timeline -> sealed SubjectEvent
//	s <P 32> h <holder tag 8> <index 8> <n 2>  holding -> sealed Holding (facts only)
//	s <P 32> r <processor tag 8> <kind 1> <index 8>
//	                                           record of a destroy, disclose, consent withdrawal
//	                                           or purpose end -> sealed SubjectEvent
//	s <P 32> f <processor tag 8>               the subject has records at the processor -> empty
//	r <holder tag 8> <deadline 12> <P 32> <index 8> <n 2>
//	                                           open holding with a fixed destruction deadline -> empty
//	u <holder tag 8> <purpose tag 8> <P 32> <index 8> <n 2>
//	                                           open holding kept until a purpose ends -> empty
//	a <purpose> 0 <holder> 0 <system> 0 <category> 0 <day 4>
//	                                           open holdings per purpose, holder, system, category
//	                                           and day obtained -> count (8); no subject in it
//	x <processor> 0 <purpose>                  purpose ended for a processor (subjectless event)
//	                                           -> earliest end time (12), log index (8), event id
//	n <tag 8>                                  tag dictionary -> name sealed under the ledger's key
//	g <index 8> <n 2>                          finding n raised by the event at a log index
//	                                           -> see findingValue (findings.go)
const (
	tabMeta    = 'm'
	tabSeen    = 'i'
	tabSubject = 's'
	tabDue     = 'r'
	tabUntil   = 'u'
	tabCount   = 'a'
	tabEnded   = 'x'
	tabName    = 'n'
	tabFinding = 'g'

	subTimeline = 't'
	subHolding  = 'h'
	subRecord   = 'r'
	subFlag     = 'f'
)

// Record kinds: the subject events that change holdings created before or
// after them (see apply.go).
const (
	recDestroy    = 'd'
	recDisclose   = 'o'
	recWithdraw   = 'w'
	recPurposeEnd = 'e'
)

// Meta keys.
var (
	metaVersion  = []byte("mversion")
	metaIdentity = []byte("mstream")
	metaPosition = []byte("mposition")
	metaCounts   = []byte("mcounts")
)

// layoutVersion is the version of the key layout and row formats written.
// A store of another version is rebuilt from the log.
// The policy's digest is stored beside it: findings follow the policy.
const layoutVersion = "piledger-projections-3"

const (
	pseudonymLen = 32 // raw bytes of a 64-hex pseudonym
	tagLen       = 8
	timeLen      = 12
	holdingIDLen = 10 // log index 8 + category position 2
)

// tag is a keyed tag of a processor or purpose name (see tags.go).
type tag [tagLen]byte

// holdingID identifies a holding: the log index of the event that created
// it and the position of its category in the event.
type holdingID struct {
	index uint64
	n     uint16
}

func (h holdingID) append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, h.index)
	return binary.BigEndian.AppendUint16(b, h.n)
}

func parseHoldingID(b []byte) holdingID {
	return holdingID{index: binary.BigEndian.Uint64(b), n: binary.BigEndian.Uint16(b[8:])}
}

// encodeTime appends t so that byte order is time order for every
// timestamp protobuf can carry: seconds with the sign bit flipped, then
// nanoseconds.
func encodeTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func decodeTime(b []byte) time.Time {
	return time.Unix(int64(binary.BigEndian.Uint64(b)^(1<<63)), int64(binary.BigEndian.Uint32(b[8:]))).UTC()
}

// pseudonymBytes decodes a pseudonym; ok is false when p is not 64 hex
// characters.
func pseudonymBytes(p string) (b [pseudonymLen]byte, ok bool) {
	if len(p) != 2*pseudonymLen {
		return b, false
	}
	_, err := hex.Decode(b[:], []byte(p))
	return b, err == nil
}

func subjectPrefix(p [pseudonymLen]byte) []byte {
	return append([]byte{tabSubject}, p[:]...)
}

func subjectSub(p [pseudonymLen]byte, sub byte) []byte {
	return append(subjectPrefix(p), sub)
}

func timelineKey(p [pseudonymLen]byte, occurred time.Time, index uint64) []byte {
	k := encodeTime(subjectSub(p, subTimeline), occurred)
	return binary.BigEndian.AppendUint64(k, index)
}

func holdingPrefix(p [pseudonymLen]byte, holder tag) []byte {
	return append(subjectSub(p, subHolding), holder[:]...)
}

func holdingKey(p [pseudonymLen]byte, holder tag, id holdingID) []byte {
	return id.append(holdingPrefix(p, holder))
}

func recordPrefix(p [pseudonymLen]byte, processor tag) []byte {
	return append(subjectSub(p, subRecord), processor[:]...)
}

func recordFlagKey(p [pseudonymLen]byte, processor tag) []byte {
	return append(subjectSub(p, subFlag), processor[:]...)
}

func recordKey(p [pseudonymLen]byte, kind byte, processor tag, index uint64) []byte {
	k := append(recordPrefix(p, processor), kind)
	return binary.BigEndian.AppendUint64(k, index)
}

func dueKey(holder tag, deadline time.Time, p [pseudonymLen]byte, id holdingID) []byte {
	k := append([]byte{tabDue}, holder[:]...)
	k = encodeTime(k, deadline)
	k = append(k, p[:]...)
	return id.append(k)
}

func untilKey(holder, purpose tag, p [pseudonymLen]byte, id holdingID) []byte {
	k := append([]byte{tabUntil}, holder[:]...)
	k = append(k, purpose[:]...)
	k = append(k, p[:]...)
	return id.append(k)
}

// daysSinceEpoch is the UTC day of t, the resolution of holding counts.
func daysSinceEpoch(t time.Time) uint32 {
	d := t.Unix() / 86400
	if t.Unix() < 0 && t.Unix()%86400 != 0 {
		d--
	}
	if d < 0 {
		return 0
	}
	return uint32(d)
}

func countPrefix(purpose string) []byte {
	return append(append([]byte{tabCount}, purpose...), 0)
}

func countKey(purpose, holder, system, category string, day uint32) []byte {
	k := countPrefix(purpose)
	for _, s := range []string{holder, system, category} {
		k = append(append(k, s...), 0)
	}
	return binary.BigEndian.AppendUint32(k, day)
}

// parseCountKey splits a count key after its purpose prefix; ok is false
// for a malformed key.
func parseCountKey(rest []byte) (holder, system, category string, day uint32, ok bool) {
	if len(rest) < 4 {
		return "", "", "", 0, false
	}
	parts := bytes.SplitN(rest[:len(rest)-4], []byte{0}, 4)
	if len(parts) != 4 || len(parts[3]) != 0 {
		return "", "", "", 0, false
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), binary.BigEndian.Uint32(rest[len(rest)-4:]), true
}

func endedKey(processor, purpose string) []byte {
	return append(append(append([]byte{tabEnded}, processor...), 0), purpose...)
}

func nameKey(t tag) []byte { return append([]byte{tabName}, t[:]...) }

// seenKey is the processed-id key of an event id. Event ids are validated
// UUIDs; anything else (never written by this ledger) gets its own range.
func seenKey(eventID string) []byte {
	if u, err := uuid.Parse(eventID); err == nil {
		return append([]byte{tabSeen}, u[:]...)
	}
	return append([]byte{tabSeen, 0xff}, eventID...)
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

func findingKey(index uint64, n uint16) []byte {
	k := binary.BigEndian.AppendUint64([]byte{tabFinding}, index)
	return binary.BigEndian.AppendUint16(k, n)
}
