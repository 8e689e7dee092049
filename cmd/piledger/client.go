package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/api/client"
	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// defaultServer is the --server default of the client commands.
const defaultServer = api.DefaultGRPCAddr

// dial returns a plaintext client of the piledger server at addr, without
// credentials. Commands should prefer connFlags.dial.
func dial(addr string) (piledgerv1.LedgerServiceClient, io.Closer, error) {
	cf := connFlags{server: addr}
	return cf.dial()
}

// rpcError turns a failed call to the server at addr into an actionable
// error. For INVALID_ARGUMENT it prints every field violation to stderr on
// its own line and returns an error with exit code 2.
func rpcError(err error, addr string, stderr io.Writer) error {
	st := status.Convert(err)
	var reason string
	var violations []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.BadRequest:
			violations = append(violations, d.GetFieldViolations()...)
		}
	}
	switch {
	case st.Code() == codes.InvalidArgument:
		for _, v := range violations {
			fmt.Fprintf(stderr, "%s: %s\n", v.GetField(), v.GetDescription())
		}
		return &exitError{code: exitInvalid, err: fmt.Errorf("rejected: %s (%d field violation(s))", st.Message(), len(violations))}
	case st.Code() == codes.Unauthenticated:
		return fmt.Errorf("piledger at %s refused the credentials (none, unknown, revoked or expired): give an API key (--api-key-file or $PILEDGER_API_KEY) or a token (--token-file or $PILEDGER_TOKEN)", addr)
	case st.Code() == codes.PermissionDenied:
		return fmt.Errorf("piledger at %s: %s", addr, st.Message())
	case st.Code() == codes.ResourceExhausted && reason == api.ReasonRateLimited:
		return fmt.Errorf("piledger at %s: rate limit exceeded; retry in a moment", addr)
	case st.Code() == codes.Unavailable && reason == api.ReasonUnavailable:
		return fmt.Errorf("piledger at %s cannot reach its log right now; retry later (event ids make retries safe)", addr)
	case st.Code() == codes.Unavailable:
		return fmt.Errorf("cannot reach piledger at %s: is `piledger serve` running? (%s)", addr, st.Message())
	case st.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("piledger at %s did not answer in time; retry with the same event ids, or raise --timeout", addr)
	case st.Code() == codes.Canceled:
		return errors.New("canceled")
	default:
		return fmt.Errorf("piledger at %s: %s: %s", addr, st.Code(), st.Message())
	}
}

// connFlags are the flags every client command uses to reach a server. The
// API key and the token are secrets: they come from --api-key-file or
// $PILEDGER_API_KEY and --token-file or $PILEDGER_TOKEN, never from a flag
// value (flag values show up in process lists and shell history).
type connFlags struct {
	server     string
	apiKeyFile string
	tokenFile  string
	reason     string
	tlsCA      string
	tlsCert    string
	tlsKey     string
	apiKey     string // set by resolve
	token      string // set by resolve
}

// withConnFlags returns the names of the flags addConnFlags defines followed
// by names, for withEnv.
func withConnFlags(names ...string) []string {
	return append([]string{"server", "api-key-file", "token-file", "reason", "tls-ca", "tls-cert", "tls-key"}, names...)
}

// addConnFlags defines the connection flags on cmd.
func addConnFlags(cmd *cobra.Command, cf *connFlags) {
	f := cmd.Flags()
	f.StringVar(&cf.server, "server", defaultServer, "piledger gRPC address (host:port)")
	f.StringVar(&cf.apiKeyFile, "api-key-file", "", "file holding the API key sent with every call (or set $PILEDGER_API_KEY); emitters use one")
	f.StringVar(&cf.tokenFile, "token-file", "", "file holding the token sent with every call (or set $PILEDGER_TOKEN); subjects, regulators and admins use one (see 'piledger token')")
	f.StringVar(&cf.reason, "reason", "", "why you read these records (a case or request reference), recorded in the access events; required from regulators and admins reading people's records")
	f.StringVar(&cf.tlsCA, "tls-ca", "", "PEM file of the CA that signs the server's certificate; TLS is used when this or --tls-cert is set, plaintext otherwise")
	f.StringVar(&cf.tlsCert, "tls-cert", "", "PEM client certificate for mutual TLS (with --tls-key)")
	f.StringVar(&cf.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
}

// resolve reads the credentials: the API key from --api-key-file, else
// $PILEDGER_API_KEY; the token from --token-file, else $PILEDGER_TOKEN. A
// credential given by flag wins over one from the environment; with both
// from the same source, the call would be ambiguous and is refused.
func (cf *connFlags) resolve(getenv func(string) string) error {
	cf.apiKey = strings.TrimSpace(getenv("PILEDGER_API_KEY"))
	cf.token = strings.TrimSpace(getenv("PILEDGER_TOKEN"))
	readSecret := func(flag, path string) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", usageError(fmt.Errorf("--%s: %w", flag, err))
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", usageError(fmt.Errorf("--%s %s is empty", flag, path))
		}
		return v, nil
	}
	var err error
	switch {
	case cf.apiKeyFile != "" && cf.tokenFile != "":
		return usageError(errors.New("give --api-key-file or --token-file, not both"))
	case cf.apiKeyFile != "":
		cf.token = ""
		if cf.apiKey, err = readSecret("api-key-file", cf.apiKeyFile); err != nil {
			return err
		}
	case cf.tokenFile != "":
		cf.apiKey = ""
		if cf.token, err = readSecret("token-file", cf.tokenFile); err != nil {
			return err
		}
	case cf.apiKey != "" && cf.token != "":
		return usageError(errors.New("both $PILEDGER_API_KEY and $PILEDGER_TOKEN are set: choose one with --api-key-file or --token-file"))
	}
	if (cf.tlsCert == "") != (cf.tlsKey == "") {
		return usageError(errors.New("--tls-cert and --tls-key go together"))
	}
	return nil
}

func (cf *connFlags) tls() bool { return cf.tlsCA != "" || cf.tlsCert != "" }

// sdkOptions returns the Go SDK options for these flags.
func (cf *connFlags) sdkOptions() []client.Option {
	var opts []client.Option
	if cf.tls() {
		opts = append(opts, client.WithTLSFiles(cf.tlsCA, cf.tlsCert, cf.tlsKey))
	} else {
		opts = append(opts, client.WithInsecure())
	}
	if cf.apiKey != "" {
		opts = append(opts, client.WithAPIKey(cf.apiKey))
	}
	return opts
}

// dial returns a raw gRPC client of the server, with the credentials the
// flags give. Connecting is lazy: an unreachable server shows up as
// UNAVAILABLE on the first call.
func (cf *connFlags) dial() (piledgerv1.LedgerServiceClient, io.Closer, error) {
	var opts []grpc.DialOption
	if cf.tls() {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if cf.tlsCA != "" {
			pem, err := os.ReadFile(cf.tlsCA)
			if err != nil {
				return nil, nil, usageError(fmt.Errorf("--tls-ca: %w", err))
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, nil, usageError(fmt.Errorf("--tls-ca %s holds no PEM certificate", cf.tlsCA))
			}
		}
		if cf.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(cf.tlsCert, cf.tlsKey)
			if err != nil {
				return nil, nil, usageError(fmt.Errorf("--tls-cert/--tls-key: %w", err))
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if cf.apiKey != "" || cf.token != "" {
		if !cf.tls() && !isLoopbackAddr(cf.server) {
			what := "the API key"
			if cf.apiKey == "" {
				what = "the token"
			}
			return nil, nil, usageError(fmt.Errorf("refusing to send %s in plaintext to %s: give --tls-ca (and --tls-cert for mutual TLS)", what, cf.server))
		}
	}
	if cf.apiKey != "" || cf.token != "" || cf.reason != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(callCreds{apiKey: cf.apiKey, token: cf.token, reason: cf.reason, tls: cf.tls()}))
	}
	conn, err := grpc.NewClient(cf.server, opts...)
	if err != nil {
		return nil, nil, usageError(fmt.Errorf("--server %q: %w", cf.server, err))
	}
	return piledgerv1.NewLedgerServiceClient(conn), conn, nil
}

// callCreds sends the credential with every call, the API key the way the
// Go SDK does ("authorization: ApiKey <key>"), a token as
// "authorization: Bearer <token>", and the reason as x-piledger-reason
// (percent-encoded, so any UTF-8 text fits an ASCII header).
type callCreds struct {
	apiKey, token, reason string
	tls                   bool
}

func (c callCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	md := map[string]string{}
	switch {
	case c.apiKey != "":
		md[client.APIKeyMetadata] = client.APIKeyScheme + " " + c.apiKey
	case c.token != "":
		md["authorization"] = "Bearer " + c.token
	}
	if c.reason != "" {
		md["x-piledger-reason"] = url.PathEscape(c.reason)
	}
	return md, nil
}

func (c callCreds) RequireTransportSecurity() bool { return c.tls }

// isLoopbackAddr reports whether host:port names this machine.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
