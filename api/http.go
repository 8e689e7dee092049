package api

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// openAPI is the generated OpenAPI description, served at GET /openapi.json.
//
//go:embed openapi/piledger.swagger.json
var openAPI []byte

// newHTTPHandler returns the HTTP side: GET /openapi.json, and everything
// else through the grpc-gateway, which calls the gRPC server over conn.
//
// The gateway is strict: unknown JSON fields and trailing data are rejected
// (400), bodies over cfg.MaxRequestBytes get 413 before any decoding, and no
// incoming HTTP header is forwarded as gRPC metadata except Authorization
// (which the gateway always forwards), so a client cannot set metadata that a
// server-side interceptor would trust. Responses are canonical proto3 JSON
// (see strictJSON). Server streams are
// newline-delimited JSON, one {"result": ...} object per message and an
// {"error": ...} object if the stream fails.
func newHTTPHandler(ctx context.Context, cfg Config, conn *grpc.ClientConn, logger *slog.Logger, sec *security) (http.Handler, error) {
	gw := runtime.NewServeMux(append([]runtime.ServeMuxOption{
		runtime.WithMarshalerOption(runtime.MIMEWildcard, newStrictJSON()),
		runtime.WithIncomingHeaderMatcher(forwardHeaders),
		runtime.WithErrorHandler(httpErrorHandler(logger)),
		runtime.WithHealthzEndpoint(healthpb.NewHealthClient(conn)),
	}, sec.gatewayMuxOptions()...)...)
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		piledgerv1.RegisterLedgerServiceHandler,
		piledgerv1.RegisterSubjectServiceHandler,
		piledgerv1.RegisterHoldingServiceHandler,
		piledgerv1.RegisterFindingServiceHandler,
		piledgerv1.RegisterTransparencyServiceHandler,
	} {
		if err := register(ctx, gw, conn); err != nil {
			return nil, fmt.Errorf("api: register gateway: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openapi.json", serveOpenAPI)
	mux.Handle("GET /v1/log/checkpoint", sec.forwardAuth(checkpointHandler(conn, logger)))
	mux.Handle("/", http.MaxBytesHandler(readBody(gw, logger), cfg.MaxRequestBytes))
	return mux, nil
}

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}

// forwardHeaders is the gateway's incoming header matcher: it forwards no
// header as gRPC metadata but X-Piledger-Reason (the reason a regulator
// gives for a read). In particular Grpc-Metadata-* headers cannot spoof
// metadata that interceptors read. (The gateway forwards Authorization
// itself.)
func forwardHeaders(h string) (string, bool) {
	if http.CanonicalHeaderKey(h) == "X-Piledger-Reason" {
		return mdReason, true
	}
	return "", false
}

// readBody reads the whole request body (bounded by the http.MaxBytesHandler
// around it) before the gateway decodes it, so an oversized body is answered
// 413 with a google.rpc.Status body instead of surfacing as a decoding error.
func readBody(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			code := http.StatusRequestEntityTooLarge
			var tooLarge *http.MaxBytesError
			if !errors.As(err, &tooLarge) {
				// The client went away or sent a broken body.
				code, err = http.StatusBadRequest, invalidRequest("body", "the request body could not be read")
			}
			writeStatus(w, code, toStatus(r.Context(), logger, err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// writeStatus writes a status error as a JSON google.rpc.Status with the
// given HTTP code, as the gateway writes its errors.
func writeStatus(w http.ResponseWriter, code int, err error) {
	b, mErr := protojson.Marshal(status.Convert(err).Proto())
	if mErr != nil {
		code, b = http.StatusInternalServerError, []byte(`{"code":13,"message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// httpErrorHandler is the gateway's error handler. Statuses from the gRPC
// server pass through to runtime.DefaultHTTPErrorHandler. Errors the gateway
// makes itself while decoding a request (an INVALID_ARGUMENT with no details)
// are rebuilt by toStatus as INVALID_REQUEST with a BadRequest detail, so
// every 400 has the same shape.
func httpErrorHandler(logger *slog.Logger) runtime.ErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
		if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument && len(st.Details()) == 0 {
			err = toStatus(ctx, logger, gatewayRequestError(st.Message()))
		}
		if status.Code(err) == codes.Unauthenticated {
			w.Header().Set("WWW-Authenticate", `Bearer realm="piledger", ApiKey realm="piledger"`)
		}
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
	}
}

// bodyErrorPrefix starts the message of every body decoding error strictJSON
// returns, so httpErrorHandler can tell them apart from other gateway errors.
const bodyErrorPrefix = "request body: "

var queryFieldRE = regexp.MustCompile(`field "([A-Za-z0-9_.]{1,64})"`)

// gatewayRequestError turns the message of a gateway-made INVALID_ARGUMENT
// into a requestError. Body errors were already made safe by strictJSON;
// other messages (query parameters, headers) may quote request values, so
// only a field name is kept from them.
func gatewayRequestError(msg string) error {
	if desc, ok := strings.CutPrefix(msg, bodyErrorPrefix); ok {
		return invalidRequest("body", desc)
	}
	if m := queryFieldRE.FindStringSubmatch(msg); m != nil {
		return invalidRequest(jsonFieldPath(m[1]), "invalid value for this query parameter")
	}
	return invalidRequest("", "the request's query parameters or headers are invalid")
}

// jsonFieldPath turns a proto field path the gateway names ("page_size",
// "before.seconds") into the lowerCamelCase JSON path field violations use
// everywhere else ("pageSize", "before.seconds").
func jsonFieldPath(path string) string {
	var b strings.Builder
	upper := false
	for _, r := range path {
		switch {
		case r == '_':
			upper = true
		case upper:
			b.WriteString(strings.ToUpper(string(r)))
			upper = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// strictJSON is the gateway's marshaler: protojson with unknown fields
// rejected and decoding errors that never quote the request. Output omits
// fields with default values (canonical proto3 JSON: an absent field is its
// zero value, so the first log entry has no "index"), which keeps NDJSON
// entries small and matches what the CLI prints.
type strictJSON struct {
	runtime.JSONPb
}

func newStrictJSON() *strictJSON {
	return &strictJSON{runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: false},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
}

// NewDecoder returns a decoder that reads exactly one JSON value into a proto
// message and fails if anything but white space follows it. io.EOF (an empty
// body) is returned as is: the gateway treats it as an empty message.
func (m *strictJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		msg, ok := v.(proto.Message)
		if !ok {
			return m.JSONPb.NewDecoder(r).Decode(v)
		}
		d := json.NewDecoder(r)
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return err
			}
			return bodyError(err)
		}
		if _, err := d.Token(); !errors.Is(err, io.EOF) {
			return errors.New(bodyErrorPrefix + "unexpected data after the JSON value")
		}
		if err := m.UnmarshalOptions.Unmarshal(raw, msg); err != nil {
			return bodyError(err)
		}
		return nil
	})
}

var (
	protojsonErrRE = regexp.MustCompile(`^proto:[\s\x{a0}]+(?:syntax error[\s\x{a0}]+)?\(line (\d+):(\d+)\):[\s\x{a0}]+(.*)$`)
	unknownFieldRE = regexp.MustCompile(`^(unknown|duplicate) field "([A-Za-z0-9_]{1,64})"$`)
	badValueRE     = regexp.MustCompile(`^invalid value for \w+ field ([A-Za-z0-9_]{1,64}):`)
	wktValueRE     = regexp.MustCompile(`^invalid (google\.protobuf\.[A-Za-z]+) value`)
)

// bodyError describes a JSON decoding error without quoting the request: the
// description keeps the position, and a field name from the schema or the
// offending JSON key, but never a value. protojson's messages are not a stable
// API (it even varies the space after "proto:"), so anything unrecognised
// falls back to a generic description; the unit tests pin the known shapes.
func bodyError(err error) error {
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return fmt.Errorf("%snot valid JSON (at byte %d)", bodyErrorPrefix, syntax.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New(bodyErrorPrefix + "JSON ends unexpectedly")
	}
	m := protojsonErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return errors.New(bodyErrorPrefix + "not a valid JSON request message")
	}
	where, rest := "line "+m[1]+", column "+m[2], m[3]
	var what string
	switch {
	case unknownFieldRE.MatchString(rest):
		f := unknownFieldRE.FindStringSubmatch(rest)
		what = fmt.Sprintf("%s field %q", f[1], f[2])
	case badValueRE.MatchString(rest):
		what = fmt.Sprintf("invalid value for field %q", badValueRE.FindStringSubmatch(rest)[1])
	case wktValueRE.MatchString(rest):
		what = "invalid " + wktValueRE.FindStringSubmatch(rest)[1] + " value"
	default:
		what = "invalid JSON for this request message"
	}
	return errors.New(bodyErrorPrefix + where + ": " + what)
}
