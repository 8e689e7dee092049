package tlog

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// envelopeVersion is the envelope header version piledger writes.
const envelopeVersion = 1

var errEnvelope = errors.New("not a valid envelope")

// Field numbers of piledgerv1.Envelope and piledgerv1.EnvelopeHeader.
const (
	fieldEnvelopeHeader     = 1
	fieldEnvelopeCiphertext = 2
	fieldHeaderVersion      = 1
	fieldHeaderEventID      = 2
	fieldHeaderOperation    = 4
)

// envelopeOperation reads the operation from an envelope's clear header
// without decrypting or copying anything. It applies the checks
// ledger.DecodeEnvelope applies (valid wire format, header version 1, an
// event id and a ciphertext present) and returns errEnvelope otherwise.
// Decoding by hand keeps verification close to the raw hashing rate.
func envelopeOperation(env []byte) (piledgerv1.Operation, error) {
	var header []byte
	var hasCiphertext bool
	err := fields(env, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) bool {
		if typ != protowire.BytesType {
			return true
		}
		switch num {
		case fieldEnvelopeHeader:
			header = v
		case fieldEnvelopeCiphertext:
			hasCiphertext = len(v) > 0
		}
		return true
	})
	if err != nil || header == nil || !hasCiphertext {
		return 0, errEnvelope
	}
	var version, op uint64
	var hasID bool
	err = fields(header, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) bool {
		switch {
		case num == fieldHeaderVersion && typ == protowire.VarintType:
			version = n
		case num == fieldHeaderOperation && typ == protowire.VarintType:
			op = n
		case num == fieldHeaderEventID && typ == protowire.BytesType:
			hasID = len(v) > 0
		}
		return true
	})
	if err != nil || version != envelopeVersion || !hasID {
		return 0, errEnvelope
	}
	return piledgerv1.Operation(int32(op)), nil
}

// fields calls fn for every field of a marshaled message with its number,
// wire type, and value: the bytes of a length-delimited field, the number of
// a varint. It returns errEnvelope for malformed wire data.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, n uint64) bool) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errEnvelope
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errEnvelope
		}
		b = b[n:]
		if !fn(num, typ, v, x) {
			return nil
		}
	}
	return nil
}
