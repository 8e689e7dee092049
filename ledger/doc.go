// Package ledger is the write side and the log of piledger: events, their
// validation against the vocabulary, sealed envelopes, the JetStream stream
// that holds them, group-committed appends and reading the log back.
//
// The log is the only source of truth. One JetStream stream holds it, on one
// subject; each message is a [piledgerv1.Block] of sealed envelopes, and each
// envelope is one event encrypted under its subject's key (see package
// crypto). Nothing about a person is stored in clear: the envelope header
// carries only the event id, the subject's pseudonym, the operation, the
// processor, the recording time and the key generation.
package ledger
