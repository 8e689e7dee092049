package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/piledger/piledger/crypto"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// envelopeVersion is the version of the envelope and block formats written.
const envelopeVersion = 1

var deterministic = proto.MarshalOptions{Deterministic: true}

// sealed is one event ready for the log: its envelope bytes and the clear
// header they carry.
type sealed struct {
	header   *piledgerv1.EnvelopeHeader
	envelope []byte
}

// seal encrypts ev under key, the current key of its subject, whose
// pseudonym is given ("" for a subjectless event). The clear header holds
// only the event id, pseudonym, operation, processor, recording time and key
// generation; it is the AEAD's associated data, so a ciphertext moved to
// another header (another event, another subject) does not decrypt.
func seal(key crypto.SubjectKey, ev *piledgerv1.Event, pseudonym string, recordedAt time.Time) (sealed, error) {
	header := &piledgerv1.EnvelopeHeader{
		Version:       envelopeVersion,
		EventId:       ev.GetEventId(),
		Pseudonym:     pseudonym,
		Operation:     ev.GetOperation(),
		Processor:     ev.GetProcessor(),
		RecordedAt:    timestamppb.New(recordedAt),
		KeyGeneration: key.Generation,
	}
	return sealEnvelope(header, key, ev)
}

// sealEnvelope marshals the header and the content, encrypts the content
// under key with the marshaled header as associated data, and returns the
// envelope.
func sealEnvelope(header *piledgerv1.EnvelopeHeader, key crypto.SubjectKey, content proto.Message) (sealed, error) {
	hb, err := deterministic.Marshal(header)
	if err != nil {
		return sealed{}, fmt.Errorf("ledger: marshal header: %w", err)
	}
	pt, err := deterministic.Marshal(content)
	if err != nil {
		return sealed{}, fmt.Errorf("ledger: marshal content: %w", err)
	}
	ct, err := key.AEAD.Encrypt(pt, hb)
	if err != nil {
		return sealed{}, fmt.Errorf("ledger: encrypt: %w", err)
	}
	env, err := deterministic.Marshal(&piledgerv1.Envelope{Header: hb, Ciphertext: ct})
	if err != nil {
		return sealed{}, fmt.Errorf("ledger: marshal envelope: %w", err)
	}
	return sealed{header: header, envelope: env}, nil
}

// DecodeEnvelope parses stored envelope bytes and their clear header without
// decrypting anything. It returns ErrCorrupt for bytes that are not an
// envelope of a known version.
func DecodeEnvelope(raw []byte) (*piledgerv1.Envelope, *piledgerv1.EnvelopeHeader, error) {
	env := &piledgerv1.Envelope{}
	if err := proto.Unmarshal(raw, env); err != nil {
		return nil, nil, fmt.Errorf("%w: envelope: %w", ErrCorrupt, err)
	}
	header := &piledgerv1.EnvelopeHeader{}
	if err := proto.Unmarshal(env.GetHeader(), header); err != nil {
		return nil, nil, fmt.Errorf("%w: envelope header: %w", ErrCorrupt, err)
	}
	if header.GetVersion() != envelopeVersion || header.GetEventId() == "" || len(env.GetCiphertext()) == 0 {
		return nil, nil, fmt.Errorf("%w: envelope header: unknown version or missing fields", ErrCorrupt)
	}
	return env, header, nil
}

// open decrypts one envelope. When the subject's key no longer exists
// (crypto-shredded) it returns the header with shredded set and no event;
// a ciphertext that does not decrypt under an existing key is ErrCorrupt.
func open(ctx context.Context, keys *crypto.Keyring, raw []byte) (*piledgerv1.LogEntry, error) {
	env, header, err := DecodeEnvelope(raw)
	if err != nil {
		return nil, err
	}
	entry := &piledgerv1.LogEntry{Header: header}
	if header.GetErasure() {
		return openErasure(ctx, keys, env, entry)
	}
	aead, err := keys.OpeningKey(ctx, header.GetPseudonym(), header.GetKeyGeneration())
	switch {
	case errors.Is(err, crypto.ErrShredded) || errors.Is(err, crypto.ErrKeyNotFound):
		entry.Shredded = true
		return entry, nil
	case err != nil:
		return nil, fmt.Errorf("ledger: subject key: %w", err)
	}
	pt, err := aead.Decrypt(env.GetCiphertext(), env.GetHeader())
	if err != nil {
		return nil, fmt.Errorf("%w: event %s does not decrypt under its subject key", ErrCorrupt, header.GetEventId())
	}
	ev := &piledgerv1.Event{}
	if err := proto.Unmarshal(pt, ev); err != nil {
		return nil, fmt.Errorf("%w: event %s: %w", ErrCorrupt, header.GetEventId(), err)
	}
	entry.Event = ev
	return entry, nil
}

// decodeBlock parses one stream message.
func decodeBlock(data []byte) (*piledgerv1.Block, error) {
	b := &piledgerv1.Block{}
	if err := proto.Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("%w: block: %w", ErrCorrupt, err)
	}
	if b.GetVersion() != envelopeVersion {
		return nil, fmt.Errorf("%w: block: unknown version %d", ErrCorrupt, b.GetVersion())
	}
	return b, nil
}
