// Package transparency makes the ledger's log verifiable by someone who does
// not trust the operator. It keeps an RFC 6962 Merkle tree over every event
// of the log in log order (a read model: rebuilt from the log when its
// directory is deleted, with the same root), signs checkpoints of it into a
// JetStream stream beside the log, serves inclusion and consistency proofs,
// and exports the whole log as a bundle that package tlog verifies offline.
//
// # What is where
//
//   - The tree: Pebble in Config.Dir, node-local. Every perfect-subtree node
//     hash (leaves included) keyed by (level, index), plus the last applied
//     log-stream sequence and tree size, written in one synced batch per
//     group of blocks. Leaf i = tlog.LeafHash(envelope i).
//   - Checkpoints: the stream Config.StreamName (default
//     PILEDGER_CHECKPOINTS), subject <prefix>.checkpoints, file storage,
//     deletes and purges denied, no limits: every checkpoint ever signed. A
//     message is one C2SP signed note. Writers publish with
//     Nats-Expected-Last-Sequence, so the stream is one chain of strictly
//     growing tree sizes even with several nodes signing.
//   - The signing key: crypto.Keyring.LogSigner, named after the origin;
//     the same key on every node.
package transparency
