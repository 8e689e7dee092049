// Package client is the Go SDK for systems that emit personal-information
// lifecycle events to piledger (emitters).
//
// A [Client] talks gRPC to a piledger server. Build events with the
// operation types ([Collect], [Store], [Use], ..., [PurposeEnded]), which
// carry exactly the fields their operation allows, and send them either:
//
//   - with [Client.Emit]: queued and batched in the background with the
//     events of every other goroutine (count, byte and delay thresholds, like
//     Google Cloud Pub/Sub's publisher), returning a [Pending] whose Get
//     gives the event's [Receipt]; [Client.Flush] and [Client.Close] drain
//     the queue; or
//   - with [Client.Append]: one caller-chosen batch, appended atomically and
//     synchronously.
//
// # Reading
//
// The client also reads what the server derived from the log, under the
// same retry policy as appends:
//
//   - [Client.Findings] (an iterator over every page) and
//     [Client.ListFindings] (one page): the rule findings the server raised
//     on the recorded events;
//   - [Client.DueHoldings] and [Client.ListDueHoldings]: the holdings whose
//     destruction is due or overdue;
//   - [Client.DataMap] (by a person's raw reference, which travels only in
//     a request body) and [Client.MyDataMap] (the caller's own): every
//     holding of one person's data and when it is destroyed.
//
// What a caller may read depends on its credential. An emitter (API key or
// client certificate) reads the findings and due holdings of its own
// processor — the server enforces it — and no data map. A data subject
// ([WithToken] with a subject token) reads their own data map. A regulator
// or an admin ([WithToken]) reads everything, and must say why with
// [WithReason]; the server records each such read, with the reason, in the
// timeline of every person it shows. A refused call fails with
// [ErrPermissionDenied].
//
// # Durability
//
// A receipt means the event is durably recorded: the server acknowledges a
// batch only once JetStream has written the block holding it to disk and
// fsynced it (the embedded server runs with sync always; an external NATS
// must be configured with sync_interval: always, as deploy/nats does). The
// receipt's Index is the event's permanent position in the log.
//
// # Idempotency and retries
//
// Every event has an id, its idempotency key: the caller's, or a UUIDv7 the
// client generates once, before the first attempt. Calls that fail with
// UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED are retried with
// exponential backoff and jitter ([RetryPolicy]) and the same ids; the
// server records an id at most once and answers a repeat with the original
// receipt. So an event is in the log once however often it was sent, even
// across server restarts and lost answers.
//
// # Errors
//
// Errors are values to test with errors.Is and errors.As, never messages to
// parse: [ErrInvalidEvent] with [InvalidEventError] and its
// [FieldViolation]s (the server's google.rpc.BadRequest, also unpacked from
// raw gRPC errors by [FieldViolations]), [ErrUnavailable],
// [ErrPermissionDenied], [ErrPushback], [ErrClosed] and [ErrInvalidOption].
// Errors from the server keep its gRPC status (status.Code works on them);
// [Reason] returns its google.rpc.ErrorInfo reason.
//
// # Credentials
//
// The connection uses TLS with the system's roots unless told otherwise:
// [WithTLSConfig] or [WithTLSFiles] (custom roots, mutual TLS), or
// [WithInsecure] for a server on the same machine. [WithAPIKey] sends an
// emitter's API key with every call, [WithToken] the token (JWT) of a data
// subject, a regulator or an admin — one or the other, never both — and
// [WithReason] the reason regulators and admins give for their reads. New
// refuses to send a key or a token in clear to anything but a loopback
// address.
//
// # Dependencies
//
// The package depends only on the generated piledger protocol, gRPC, the
// google.rpc error details and github.com/google/uuid — never on the server
// side (NATS, Pebble, Tink or key providers). A test enforces this.
package client
