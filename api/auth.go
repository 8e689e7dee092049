package api

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Role is what a caller is to the ledger. It comes only from a verified
// credential: an API key or client certificate makes an emitter, a token's
// piledger_role claim makes a subject, regulator or admin.
type Role uint8

// The roles. RoleNone is the role of an unauthenticated call, which only the
// public methods (health, reflection) accept.
const (
	RoleNone Role = iota
	RoleEmitter
	RoleSubject
	RoleRegulator
	RoleAdmin
)

var roleNames = [...]string{"none", "emitter", "subject", "regulator", "admin"}

// String returns the role's name as tokens carry it ("regulator").
func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return "unknown"
}

// ParseRole parses a token role name: subject, regulator or admin. Emitters
// have no tokens: they authenticate with an API key or a client certificate.
func ParseRole(s string) (Role, error) {
	switch s {
	case "subject":
		return RoleSubject, nil
	case "regulator":
		return RoleRegulator, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("unknown role %q: want subject, regulator or admin", s)
}

// How a caller proved who it is (Identity.Credential).
const (
	CredentialAPIKey = "api-key"
	CredentialMTLS   = "mtls"
	CredentialToken  = "jwt"
)

// Identity is a verified caller. For a data subject it holds the pseudonym
// of the token's subject reference, never the reference itself.
type Identity struct {
	// Role is what the caller may do.
	Role Role
	// Processor is an emitter's processor id.
	Processor string
	// Pseudonym is a data subject's pseudonym.
	Pseudonym string
	// Subject is a regulator's or admin's token subject (their account).
	Subject string
	// Issuer is the token issuer, for token callers.
	Issuer string
	// Credential is CredentialAPIKey, CredentialMTLS or CredentialToken.
	Credential string
	// KeyID identifies the API key (not secret) for API-key callers.
	KeyID string
}

// actor is how access events name the caller: "processor:<id>",
// "regulator:<sub>" or "admin:<sub>".
func (id *Identity) actor() string {
	switch id.Role {
	case RoleEmitter:
		return "processor:" + id.Processor
	case RoleSubject:
		return "subject:" + id.Pseudonym
	default:
		return id.Role.String() + ":" + id.Subject
	}
}

// limiterKey is the rate limiter bucket of the caller: one per identity
// (issuer and subject for tokens, as ASVS 10.3.3 identifies users).
func (id *Identity) limiterKey() string {
	switch id.Role {
	case RoleEmitter:
		return "p\x00" + id.Processor
	case RoleSubject:
		return "s\x00" + id.Pseudonym
	default:
		return "t\x00" + id.Role.String() + "\x00" + id.Issuer + "\x00" + id.Subject
	}
}

type identityKey struct{}

// CallerIdentity returns the verified identity of the caller of a gRPC
// handler, set by the server's authentication interceptor. ok is false when
// authentication is off or the method is public.
func CallerIdentity(ctx context.Context) (id Identity, ok bool) {
	p, ok := ctx.Value(identityKey{}).(*Identity)
	if !ok || p == nil {
		return Identity{}, false
	}
	return *p, true
}

func withIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// Metadata keys. Only authorization comes from clients; the gateway keys are
// set by the server's own REST gateway and are accepted only with the
// gateway secret, which exists only in the server process.
const (
	mdAuthorization = "authorization"
	mdReason        = "x-piledger-reason"
	mdGatewayPrefix = "x-piledger-gateway-"
	mdGatewaySecret = mdGatewayPrefix + "secret"
	mdGatewayClient = mdGatewayPrefix + "client"
	mdGatewayCert   = mdGatewayPrefix + "cert"
)

// Authorization schemes.
const (
	schemeAPIKey = "ApiKey"
	schemeBearer = "Bearer"
)

// maxCredentialBytes bounds an authorization value: a token longer than
// this is refused before any parsing.
const maxCredentialBytes = 8 << 10

// authError is a failed authentication. reason is a fixed label (for the
// piledger_auth_failures_total metric and the log), never credential data.
type authError struct{ reason string }

func (e *authError) Error() string { return "api: unauthenticated: " + e.reason }

func unauthenticated(reason string) error { return &authError{reason: reason} }

// Authentication failure reasons.
const (
	authMissing         = "missing_credentials"
	authMalformed       = "malformed_credentials"
	authMultiple        = "multiple_credentials"
	authUnknownKey      = "unknown_api_key"
	authBadToken        = "invalid_token"
	authConflict        = "conflicting_credentials"
	authGatewaySpoof    = "spoofed_gateway_metadata"
	authNoTokenIssuer   = "tokens_not_accepted"
	authNoAPIKeys       = "api_keys_not_accepted"
	authUnsupportedAuth = "unsupported_scheme"
)

// authenticator verifies credentials. It is safe for concurrent use.
type authenticator struct {
	apiKeys       *APIKeyStore
	tokens        []*TokenVerifier
	pseudonymize  func(string) string
	gatewaySecret string
	now           func() time.Time
}

// caller is what authentication found out about a call, even when it failed:
// the client address the rate limiter keys unauthenticated calls by.
type caller struct {
	addr string // client IP, as seen by the gateway or the gRPC server
}

// authenticate returns the caller's identity. The only inputs are verified
// credentials: the authorization metadata (an API key or a token, checked
// against the key store or the issuers' keys), the client certificate the TLS
// handshake verified, and, for calls through the server's own gateway, the
// client certificate and address the gateway vouches for with its secret.
// Nothing else a client sends (x-emitter-id, X-Forwarded-*, ...) is read.
func (a *authenticator) authenticate(ctx context.Context) (*Identity, caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var c caller
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.addr = hostOf(p.Addr.String())
	}

	// Metadata only the gateway may set.
	fromGateway := false
	for k := range md {
		if strings.HasPrefix(k, mdGatewayPrefix) {
			fromGateway = true
		}
	}
	var gatewayCert string
	if fromGateway {
		secret := md.Get(mdGatewaySecret)
		if len(secret) != 1 || subtle.ConstantTimeCompare([]byte(secret[0]), []byte(a.gatewaySecret)) != 1 {
			return nil, c, unauthenticated(authGatewaySpoof)
		}
		if v := md.Get(mdGatewayClient); len(v) == 1 {
			c.addr = v[0]
		}
		if v := md.Get(mdGatewayCert); len(v) == 1 {
			gatewayCert = v[0]
		}
	}

	// The client certificate verified by the TLS handshake: the gRPC
	// connection's own, or the one the gateway's listener verified.
	certProcessor := gatewayCert
	if !fromGateway {
		certProcessor = peerCertProcessor(ctx)
	}

	authz := md.Get(mdAuthorization)
	switch {
	case len(authz) > 1:
		return nil, c, unauthenticated(authMultiple)
	case len(authz) == 0 && certProcessor != "":
		return &Identity{Role: RoleEmitter, Processor: certProcessor, Credential: CredentialMTLS}, c, nil
	case len(authz) == 0:
		return nil, c, unauthenticated(authMissing)
	}
	value := authz[0]
	if len(value) > maxCredentialBytes {
		return nil, c, unauthenticated(authMalformed)
	}
	scheme, cred, ok := strings.Cut(value, " ")
	cred = strings.TrimSpace(cred)
	if !ok || cred == "" {
		return nil, c, unauthenticated(authMalformed)
	}
	switch {
	case strings.EqualFold(scheme, schemeAPIKey):
		if a.apiKeys == nil {
			return nil, c, unauthenticated(authNoAPIKeys)
		}
		processor, keyID, ok := a.apiKeys.Verify(cred)
		if !ok {
			return nil, c, unauthenticated(authUnknownKey)
		}
		if certProcessor != "" && certProcessor != processor {
			return nil, c, unauthenticated(authConflict)
		}
		return &Identity{Role: RoleEmitter, Processor: processor, Credential: CredentialAPIKey, KeyID: keyID}, c, nil
	case strings.EqualFold(scheme, schemeBearer):
		if len(a.tokens) == 0 {
			return nil, c, unauthenticated(authNoTokenIssuer)
		}
		claims, err := verifyToken(a.tokens, cred, a.now())
		if err != nil {
			return nil, c, unauthenticated(authBadToken)
		}
		id := &Identity{Role: claims.Role, Issuer: claims.Issuer, Credential: CredentialToken}
		if claims.Role == RoleSubject {
			id.Pseudonym = a.pseudonymize(claims.Subject)
		} else {
			id.Subject = claims.Subject
		}
		return id, c, nil
	default:
		return nil, c, unauthenticated(authUnsupportedAuth)
	}
}

// processorIDPattern is the form of a processor id (the ledger's rule for
// event.processor).
var processorIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// LedgerProcessor is the processor id of events the ledger writes itself
// (access events). No emitter may be bound to it.
const LedgerProcessor = "piledger"

// validProcessorID reports whether id may name an emitter's processor.
func validProcessorID(id string) bool {
	return processorIDPattern.MatchString(id) && id != LedgerProcessor
}

// peerCertProcessor returns the processor id of the client certificate the
// TLS handshake verified on this gRPC connection, or "".
func peerCertProcessor(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return ""
	}
	return chainsProcessor(info.State.VerifiedChains)
}

// chainsProcessor returns the processor id a verified client certificate
// names, or "" when there is no verified chain or the certificate names none.
// Only verified chains count: an unverified certificate never identifies.
func chainsProcessor(chains [][]*x509.Certificate) string {
	if len(chains) == 0 || len(chains[0]) == 0 {
		return ""
	}
	return CertificateProcessor(chains[0][0])
}

// CertificateProcessor returns the processor id a client certificate names:
// the last path segment of a URI SAN ".../processor/<id>" (for example the
// SPIFFE ID spiffe://example.org/processor/city-police), else the subject
// common name. It returns "" when neither is a valid processor id.
func CertificateProcessor(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		dir, id, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if ok && dir == "processor" && validProcessorID(id) {
			return id
		}
	}
	if cn := cert.Subject.CommonName; validProcessorID(cn) {
		return cn
	}
	return ""
}

// hostOf returns the host of host:port (or addr itself).
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// maxReasonBytes bounds an access reason: the ledger's access.reason limit.
const maxReasonBytes = 1024

// readReason returns the x-piledger-reason metadata: percent-decoded (so a
// reason may hold any UTF-8 text through an ASCII-only header), at most
// maxReasonBytes of UTF-8 without control characters. It returns "" when
// absent, and an error (naming the field, never the value) when invalid.
func readReason(md metadata.MD) (string, error) {
	vals := md.Get(mdReason)
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1:
		return "", invalidRequest(mdReason, "must be given once")
	}
	r, err := percentDecode(strings.TrimSpace(vals[0]))
	switch {
	case err != nil:
		return "", invalidRequest(mdReason, "must be text with valid %XX escapes")
	case len(r) > maxReasonBytes:
		return "", invalidRequest(mdReason, fmt.Sprintf("must be at most %d bytes", maxReasonBytes))
	case !utf8.ValidString(r) || strings.ContainsFunc(r, unicode.IsControl):
		return "", invalidRequest(mdReason, "must be valid UTF-8 without control characters")
	}
	return r, nil
}

var errBadEscape = errors.New("bad escape")

// percentDecode decodes %XX escapes; every other byte stands for itself
// ('+' included).
func percentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", errBadEscape
		}
		b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// The google.rpc.ErrorInfo reasons of authentication and authorization
// failures (see status.go for the others).
const (
	// ReasonUnauthenticated: no credentials, or credentials that do not
	// verify (unknown or revoked API key, invalid or expired token). The
	// message does not say which. HTTP 401.
	ReasonUnauthenticated = "UNAUTHENTICATED"
	// ReasonPermissionDenied: the caller's role or identity may not make
	// this call; metadata "field" names the request field at fault, if
	// any (for example "events[2].processor"). HTTP 403.
	ReasonPermissionDenied = "PERMISSION_DENIED"
	// ReasonRateLimited: the caller's rate limit is exhausted; nothing was
	// done. Retry after the RetryInfo delay. HTTP 429.
	ReasonRateLimited = "RATE_LIMITED"
)
