// Package projections holds piledger's read models and the projector that
// builds them from the log: for each data subject, the data map (every
// holding of the subject's data and when it is destroyed) and the timeline
// of events; across subjects, the holdings due for destruction and who still
// holds data collected for a purpose.
//
// The log is the source of truth; the read models are disposable. A [Store]
// keeps them in one Pebble database. [Store.Run] follows the log in order
// (ledger.Follow), decrypts each event and applies blocks in batches, each
// batch with the position reached in one atomic, synced write, so every
// event is applied exactly once across crashes; an event id that reached the
// log twice counts once. Deleting the directory and starting again rebuilds
// the same answers.
//
// Nothing about a person is stored in clear: rows that describe a subject
// are sealed under the subject's own key (crypto.Keyring) with the row key as
// associated data, so destroying the key blinds them too; row keys carry the
// pseudonym, never the raw reference, and name processors and purposes next
// to a pseudonym only by keyed tags. docs/READ-MODELS.md describes each read
// model, the key layout and what is encrypted.
//
// Queries read one snapshot each and accept a log index to wait for (read
// your writes). Errors are this package's sentinels (ErrNotFound,
// ErrInvalidPageToken, ErrBehind, ErrStopped, ErrCorrupt), wrapped with
// context that never holds personal data.
package projections
