// Package tlog is piledger's transparency-log format and its offline
// verifier: what a regulator needs to check the ledger without trusting the
// operator, with no server, no NATS, no Pebble and no private key.
//
// # The tree
//
// The log is an RFC 6962 Merkle tree (SHA-256). Leaf i is the i-th event of
// the log in log order (block by block, envelope by envelope), and its leaf
// hash is SHA-256(0x00 || envelope), where envelope is the marshaled
// piledgerv1.Envelope exactly as stored: the clear header and the Tink
// ciphertext, never plaintext. Destroying a subject's key (crypto-shredding)
// therefore changes nothing in the tree: erased events still verify.
//
// # Checkpoints
//
// The server signs the tree head as a C2SP tlog-checkpoint ("<origin>\n<size>\n
// <base64 root>\n") inside a C2SP signed note, with an Ed25519 key whose name
// is the origin. [OpenCheckpoint] verifies one with a verifier key;
// golang.org/x/mod/sumdb/note.Open and
// github.com/transparency-dev/formats/log.ParseCheckpoint do the same.
//
// # Bundles
//
// A bundle (proto/piledger/v1/bundle.proto) is a length-delimited stream of
// piledgerv1.BundleRecord: a header, the log's blocks in order interleaved
// with every signed checkpoint, and an end record. [BundleWriter] writes one,
// [BundleReader] reads one, and [Verify] recomputes the tree from it, checks
// every checkpoint's signature and root, and says where it found tampering
// ([TamperError]).
//
// Everything in this package is pure computation over bytes and safe for
// concurrent use unless a type says otherwise.
package tlog
