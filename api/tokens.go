package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tink-crypto/tink-go/v2/jwt"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

// Tokens are JWTs (RFC 7519) signed with an asymmetric key and verified with
// Tink (github.com/tink-crypto/tink-go/v2/jwt). A token names a role in the
// private claim piledger_role and the caller in sub: for a data subject, the
// raw subject reference (pseudonymized by the server, never logged); for a
// regulator or admin, their account.
const (
	// RoleClaim is the token claim holding the role: subject, regulator or
	// admin.
	RoleClaim = "piledger_role"
	// TokenType is the typ header the embedded issuer writes and, by
	// default, the one required (RFC 9068 access tokens).
	TokenType = "at+jwt"
	// LocalIssuer is the iss of tokens the embedded issuer signs.
	LocalIssuer = "piledger-local"
	// DefaultAudience is the aud piledger requires by default.
	DefaultAudience = "piledger"
	// DefaultClockSkew is how far token times may be off the server's
	// clock: exp up to this long ago and nbf up to this far ahead pass.
	DefaultClockSkew = time.Minute
	// MaxTokenTTL bounds the lifetime the embedded issuer gives a token.
	MaxTokenTTL = 30 * 24 * time.Hour
	// DefaultJWKSRefresh is how often a JWK set fetched from a URL is
	// fetched again.
	DefaultJWKSRefresh = 15 * time.Minute

	maxSubjectBytes  = 256
	maxJWKSBytes     = 1 << 20
	jwksFetchTimeout = 10 * time.Second
)

// allowedAlgs are the JWS algorithms a token may name. Symmetric (HS*) and
// "none" are never accepted: a verifier holds public keys only.
var allowedAlgs = map[string]bool{
	"ES256": true, "ES384": true, "ES512": true,
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
}

// allowedHeaders are the only JOSE header parameters a token may carry.
// Headers that point at keys (jku, x5u, jwk, x5c) would let a token choose
// the key that verifies it, and crit names extensions nobody here
// understands: all are refused.
var allowedHeaders = map[string]bool{"alg": true, "typ": true, "kid": true}

// Claims are the verified claims of a token piledger uses.
type Claims struct {
	Role    Role
	Subject string
	Issuer  string
}

// TokenVerifierConfig configures a TokenVerifier: one issuer, its keys, and
// what its tokens must say.
type TokenVerifierConfig struct {
	// Issuer is the required iss. Required.
	Issuer string
	// Audience is the required aud (one of the token's audiences). Default
	// DefaultAudience.
	Audience string
	// TypeHeader is the required typ header. Default TokenType.
	TypeHeader string
	// ClockSkew is the tolerance on exp and nbf. Default DefaultClockSkew;
	// at most 10 minutes.
	ClockSkew time.Duration

	// Exactly one key source:

	// Keys is a public Tink JWT keyset (for example the embedded issuer's).
	Keys *keyset.Handle
	// JWKS is a JWK set (RFC 7517) as bytes, for example read from a file.
	JWKS []byte
	// JWKSURL is where to fetch the JWK set: https, or http to a loopback
	// address only. It is fetched by NewTokenVerifier (which fails if that
	// fails) and again every JWKSRefresh in the background of verification;
	// a failed refresh keeps the last good set.
	JWKSURL string
	// JWKSRefresh is how often JWKSURL is fetched again. Default
	// DefaultJWKSRefresh.
	JWKSRefresh time.Duration
	// HTTPClient fetches JWKSURL. Default: a client with a 10 s timeout.
	HTTPClient *http.Client
}

// TokenVerifier verifies the tokens of one issuer. It is safe for concurrent
// use.
type TokenVerifier struct {
	cfg      TokenVerifierConfig
	verifier atomic.Pointer[jwtVerifier]

	refreshing atomic.Bool
	mu         sync.Mutex
	fetched    time.Time
}

type jwtVerifier struct{ v jwt.Verifier }

// NewTokenVerifier returns a verifier for cfg.
func NewTokenVerifier(ctx context.Context, cfg TokenVerifierConfig) (*TokenVerifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("api: token verifier: an issuer is required")
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	if cfg.TypeHeader == "" {
		cfg.TypeHeader = TokenType
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.ClockSkew < 0 || cfg.ClockSkew > 10*time.Minute {
		return nil, fmt.Errorf("api: token verifier: clock skew %v: want 0 to 10 minutes", cfg.ClockSkew)
	}
	if cfg.JWKSRefresh == 0 {
		cfg.JWKSRefresh = DefaultJWKSRefresh
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: jwksFetchTimeout}
	}
	sources := 0
	for _, set := range []bool{cfg.Keys != nil, cfg.JWKS != nil, cfg.JWKSURL != ""} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return nil, errors.New("api: token verifier: give exactly one of Keys, JWKS and JWKSURL")
	}
	v := &TokenVerifier{cfg: cfg}
	switch {
	case cfg.Keys != nil:
		if err := v.setKeys(cfg.Keys); err != nil {
			return nil, err
		}
	case cfg.JWKS != nil:
		if err := v.setJWKS(cfg.JWKS); err != nil {
			return nil, err
		}
	default:
		if err := checkJWKSURL(cfg.JWKSURL); err != nil {
			return nil, err
		}
		if err := v.fetch(ctx); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Issuer returns the issuer whose tokens v verifies.
func (v *TokenVerifier) Issuer() string { return v.cfg.Issuer }

func (v *TokenVerifier) setKeys(h *keyset.Handle) error {
	jv, err := jwt.NewVerifier(h)
	if err != nil {
		return fmt.Errorf("api: token verifier: not a public JWT keyset: %w", err)
	}
	v.verifier.Store(&jwtVerifier{v: jv})
	return nil
}

func (v *TokenVerifier) setJWKS(set []byte) error {
	h, err := jwt.JWKSetToPublicKeysetHandle(set)
	if err != nil {
		return fmt.Errorf("api: token verifier: JWK set: %w", err)
	}
	return v.setKeys(h)
}

// checkJWKSURL refuses a JWK set URL a network attacker could answer.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("api: JWKS URL: %w", err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("api: JWKS URL %s: want https (http only to a loopback address)", u.Redacted())
}

// fetch gets the JWK set from the URL and installs it.
func (v *TokenVerifier) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return fmt.Errorf("api: JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("api: JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("api: JWKS: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fmt.Errorf("api: JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return fmt.Errorf("api: JWKS: larger than %d bytes", maxJWKSBytes)
	}
	if err := v.setJWKS(body); err != nil {
		return err
	}
	v.mu.Lock()
	v.fetched = time.Now()
	v.mu.Unlock()
	return nil
}

// maybeRefresh starts a background fetch of the JWK set when it is older
// than JWKSRefresh; verification goes on with the current set meanwhile.
func (v *TokenVerifier) maybeRefresh() {
	if v.cfg.JWKSURL == "" {
		return
	}
	v.mu.Lock()
	stale := time.Since(v.fetched) >= v.cfg.JWKSRefresh
	v.mu.Unlock()
	if !stale || !v.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer v.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
		defer cancel()
		if err := v.fetch(ctx); err != nil {
			v.mu.Lock()
			v.fetched = time.Now() // retry after another interval, not on every call
			v.mu.Unlock()
		}
	}()
}

// errToken is every token rejection: the reason is deliberately not told to
// the client.
var errToken = errors.New("api: invalid token")

// tokenHeader is the checked JOSE header of a token.
type tokenHeader struct {
	alg, typ string
}

// checkTokenShape checks what Tink does not, before any signature work:
// the size, the compact form, and a header with only alg, typ and kid, an
// asymmetric alg and the expected typ. It returns the unverified issuer,
// which only selects the verifier to try.
func checkTokenShape(token string) (tokenHeader, string, error) {
	var h tokenHeader
	if len(token) > maxCredentialBytes || strings.Count(token, ".") != 2 {
		return h, "", errToken
	}
	parts := strings.Split(token, ".")
	hb, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil {
		return h, "", errToken
	}
	var header map[string]any
	if err := json.Unmarshal(hb, &header); err != nil || header == nil {
		return h, "", errToken
	}
	for k := range header {
		if !allowedHeaders[k] {
			return h, "", errToken
		}
	}
	alg, _ := header["alg"].(string)
	typ, _ := header["typ"].(string)
	if !allowedAlgs[alg] {
		return h, "", errToken
	}
	h.alg, h.typ = alg, typ
	pb, err := base64.RawURLEncoding.Strict().DecodeString(parts[1])
	if err != nil {
		return h, "", errToken
	}
	var payload struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(pb, &payload); err != nil {
		return h, "", errToken
	}
	return h, payload.Iss, nil
}

// verifyToken verifies token with the verifier of its issuer and returns its
// claims. Every failure is errToken.
func verifyToken(verifiers []*TokenVerifier, token string, now time.Time) (*Claims, error) {
	h, iss, err := checkTokenShape(token)
	if err != nil {
		return nil, err
	}
	for _, v := range verifiers {
		if v.cfg.Issuer == iss {
			if h.typ != v.cfg.TypeHeader {
				return nil, errToken
			}
			return v.verify(token, now)
		}
	}
	return nil, errToken
}

// verify checks the signature (Tink: the key's algorithm must match alg, and
// a kid must match the key's), then iss, aud, typ, exp (required), nbf, and
// piledger's claims: sub and piledger_role.
func (v *TokenVerifier) verify(token string, now time.Time) (*Claims, error) {
	v.maybeRefresh()
	jv := v.verifier.Load()
	if jv == nil {
		return nil, errToken
	}
	iss, aud, typ := v.cfg.Issuer, v.cfg.Audience, v.cfg.TypeHeader
	validator, err := jwt.NewValidator(&jwt.ValidatorOpts{
		ExpectedIssuer:     &iss,
		ExpectedAudience:   &aud,
		ExpectedTypeHeader: &typ,
		ClockSkew:          v.cfg.ClockSkew,
		FixedNow:           now,
	})
	if err != nil {
		return nil, errToken
	}
	vt, err := jv.v.VerifyAndDecode(token, validator)
	if err != nil {
		return nil, errToken
	}
	sub, err := vt.Subject()
	if err != nil || sub == "" || len(sub) > maxSubjectBytes || !utf8.ValidString(sub) || strings.ContainsFunc(sub, unicode.IsControl) {
		return nil, errToken
	}
	roleName, err := vt.StringClaim(RoleClaim)
	if err != nil {
		return nil, errToken
	}
	role, err := ParseRole(roleName)
	if err != nil {
		return nil, errToken
	}
	return &Claims{Role: role, Subject: sub, Issuer: iss}, nil
}

// TokenIssuer signs tokens: the embedded issuer behind `piledger token`.
type TokenIssuer struct {
	signer   jwt.Signer
	public   *keyset.Handle
	issuer   string
	audience string
}

// NewTokenIssuer returns an issuer signing with the private JWT keyset
// priv (crypto.OpenTokenKey) as issuer for audience (default
// DefaultAudience).
func NewTokenIssuer(priv *keyset.Handle, issuer, audience string) (*TokenIssuer, error) {
	if issuer == "" {
		return nil, errors.New("api: token issuer: an issuer name is required")
	}
	if audience == "" {
		audience = DefaultAudience
	}
	s, err := jwt.NewSigner(priv)
	if err != nil {
		return nil, fmt.Errorf("api: token issuer: %w", err)
	}
	pub, err := priv.Public()
	if err != nil {
		return nil, fmt.Errorf("api: token issuer: %w", err)
	}
	return &TokenIssuer{signer: s, public: pub, issuer: issuer, audience: audience}, nil
}

// Issue returns a token for role and subject, valid from now for ttl (at
// most MaxTokenTTL). For RoleSubject, subject is the person's raw subject
// reference: the token is then as sensitive as the reference.
func (i *TokenIssuer) Issue(role Role, subject string, ttl time.Duration, now time.Time) (string, error) {
	switch {
	case role != RoleSubject && role != RoleRegulator && role != RoleAdmin:
		return "", fmt.Errorf("api: issue token: role %s has no tokens", role)
	case subject == "" || len(subject) > maxSubjectBytes || !utf8.ValidString(subject) || strings.ContainsFunc(subject, unicode.IsControl):
		return "", fmt.Errorf("api: issue token: the subject must be 1-%d bytes of UTF-8 without control characters", maxSubjectBytes)
	case ttl <= 0 || ttl > MaxTokenTTL:
		return "", fmt.Errorf("api: issue token: lifetime %v: want more than 0 and at most %v", ttl, MaxTokenTTL)
	}
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	typ, iat, exp := TokenType, now.Truncate(time.Second), now.Add(ttl).Truncate(time.Second)
	id := hex.EncodeToString(jti)
	raw, err := jwt.NewRawJWT(&jwt.RawJWTOptions{
		TypeHeader:   &typ,
		Issuer:       &i.issuer,
		Audience:     &i.audience,
		Subject:      &subject,
		JWTID:        &id,
		IssuedAt:     &iat,
		NotBefore:    &iat,
		ExpiresAt:    &exp,
		CustomClaims: map[string]any{RoleClaim: role.String()},
	})
	if err != nil {
		return "", fmt.Errorf("api: issue token: %w", err)
	}
	tok, err := i.signer.SignAndEncode(raw)
	if err != nil {
		return "", fmt.Errorf("api: issue token: %w", err)
	}
	return tok, nil
}

// PublicKeyset returns the public keyset that verifies the issuer's tokens.
func (i *TokenIssuer) PublicKeyset() *keyset.Handle { return i.public }

// JWKS returns the issuer's public keys as a JWK set, for verifiers
// elsewhere (--jwks-file on another node).
func (i *TokenIssuer) JWKS() ([]byte, error) {
	b, err := jwt.JWKSetFromPublicKeysetHandle(i.public)
	if err != nil {
		return nil, fmt.Errorf("api: JWK set: %w", err)
	}
	return b, nil
}
