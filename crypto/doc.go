// Package crypto holds piledger's keys: the key-encryption key (KEK) and its
// providers, the pseudonym PRF, the per-subject keyring whose keys are stored
// wrapped in a JetStream stream shared by all nodes, and crypto-shredding.
//
// Every subject has its own Tink AEAD keyset. Destroying it makes every event
// of the subject unreadable without rewriting the log.
package crypto
