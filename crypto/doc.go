// Package crypto holds piledger's keys: the key-encryption key (KEK) and its
// providers, the pseudonym PRF, the per-subject keyring whose keys are stored
// wrapped in a JetStream stream shared by all nodes, and crypto-shredding.
//
// Every subject has its own Tink AEAD keyset. Destroying it makes every event
// of the subject unreadable without rewriting the log.
//
// # Where keys live
//
//   - KEK ([LocalKEK]): <dir>/kek-<epoch>.json, cleartext Tink AES256-GCM
//     keysets, mode 0600 in a 0700 directory, one per epoch.
//   - Key stream (default PILEDGER_KEYS, shared by all nodes): subject keys on
//     <prefix>.keys.subject and the pseudonym PRF key on <prefix>.keys.prf,
//     each a WrappedKey message (proto/piledger/v1/envelope.proto) whose
//     keyset is encrypted under the KEK of an epoch, with associated data
//     binding it to its role, pseudonym, generation and epoch. Messages carry
//     pseudonyms, never subject references.
//   - Key index ([KeyringConfig.IndexDir], one per node): Pebble, mapping
//     (pseudonym, generation) to key-stream sequences. No key bytes.
//   - Memory: unwrapped keys in a bounded LRU per node.
//
// # Creating keys
//
// A subject's first key is created when its first event is sealed. New keys
// are group-committed: while one write to the key stream is in flight the
// next keys wait, then go out together as one JetStream atomic batch (one
// fsync), still one message per key ([Keyring.SealingKeys] creates an
// append's missing keys at once). When two nodes create a subject's key, the
// first in stream order is the key on every node.
//
// # Crypto-shredding
//
// [Keyring.Destroy] publishes an erasure marker on <prefix>.keys.erased,
// which every node's follower applies in key-stream order (the destroyed
// generations leave the index and the cache; a tombstone keeps the highest
// destroyed generation, so SealingKey creates the next one and never an old
// one again), and then removes each destroyed key message with
// SecureDeleteMsg. It is idempotent, so repeating it completes an erasure a
// crash interrupted. [SignErasureReceipt] signs the receipt with the
// ledger's [LogSigner]; [VerifyErasureReceipt] checks it offline. See
// docs/ERASURE.md.
//
// # KEK rotation
//
// [Keyring.Rotate] re-wraps every live key under the current KEK epoch
// (starting a new one with [LocalKEK.NewEpoch]), deletes the old copies, and
// then destroys the older epochs ([LocalKEK.DestroyEpoch]), so that no
// remnant of an erased key (backup, replica, freed disk block) can be
// unwrapped any more. A re-wrapped key carries the header Piledger-Rewrap-Of
// and supersedes, in every node's index, the messages of its key before it;
// a marker on <prefix>.keys.rotated ends a rotation. See
// docs/KEK-ROTATION.md.
package crypto
