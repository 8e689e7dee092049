// Package api is piledger's transport layer: the gRPC services, the REST/JSON
// gateway in front of them, health checking and the OpenAPI description.
//
// A [Server] serves gRPC on one listener and HTTP on another. The HTTP side is
// a grpc-gateway that dials the gRPC listener like any other client, so every
// gRPC interceptor (metrics, logging, panic recovery, authentication,
// authorization, rate limiting and access recording) covers REST calls too.
// With Config.Auth set, every caller is identified by a verified credential
// (API key, client certificate or token), every method is allowed only by
// its entry in one policy table (authz.go; no entry, no access), and every
// read of a person's records by someone else is appended to the log as an
// access event before the records are sent (docs/SECURITY.md). Domain errors become gRPC statuses with google.rpc details in
// exactly one place (status.go); the gateway turns them into HTTP statuses
// with the same details in the JSON body.
//
// Nothing in this package logs or returns personal data: logs carry the
// method, the status code and the duration of a call, and error messages carry
// field paths, never field values.
package api
