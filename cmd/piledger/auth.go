package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/piledger/piledger/api"
	"github.com/piledger/piledger/crypto"
)

// authDir is where credentials live under the data directory: the API key
// store (processors.json) and the embedded issuer's wrapped signing key.
func authDir(dataDir string) string { return filepath.Join(dataDir, "auth") }

// securityFlags are the flags of `piledger serve` about authentication,
// TLS, limits and metrics.
type securityFlags struct {
	tlsCert, tlsKey, tlsClientCA string
	jwksURL, jwksFile            string
	jwtIssuer, jwtAudience       string
	jwtType                      string
	localTokens                  bool
	metricsAddr                  string
	rateLimit                    float64
	rateBurst                    int
	insecurePlaintext            bool
	insecureNoAuth               bool
}

// addSecurityFlags defines the flags on cmd and returns their names, for
// withEnv.
func addSecurityFlags(cmd *cobra.Command, sf *securityFlags) []string {
	f := cmd.Flags()
	f.StringVar(&sf.tlsCert, "tls-cert", "", "PEM certificate chain of the server; serves gRPC and HTTP over TLS (with --tls-key)")
	f.StringVar(&sf.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&sf.tlsClientCA, "tls-client-ca", "", "PEM CA certificates of emitters' client certificates: a verified certificate naming a processor (URI SAN .../processor/<id>, or CN) authenticates an emitter")
	f.StringVar(&sf.jwksURL, "jwks-url", "", "JWK set URL of an external token issuer (https; refreshed every 15 min)")
	f.StringVar(&sf.jwksFile, "jwks-file", "", "JWK set file of an external token issuer")
	f.StringVar(&sf.jwtIssuer, "jwt-issuer", "", "iss of the external issuer's tokens (required with --jwks-url or --jwks-file)")
	f.StringVar(&sf.jwtAudience, "jwt-audience", api.DefaultAudience, "aud the external issuer's tokens must carry")
	f.StringVar(&sf.jwtType, "jwt-type", api.TokenType, "typ header the external issuer's tokens must carry")
	f.BoolVar(&sf.localTokens, "local-tokens", true, "accept tokens of the embedded issuer ('piledger token', key under <data>/auth)")
	f.StringVar(&sf.metricsAddr, "metrics-addr", api.DefaultMetricsAddr, "operator listener for GET /metrics (Prometheus); empty serves none")
	f.Float64Var(&sf.rateLimit, "rate-limit", api.DefaultRateLimit, "calls per second per caller (token bucket per identity); negative: no limit")
	f.IntVar(&sf.rateBurst, "rate-burst", api.DefaultRateBurst, "burst of calls per caller")
	f.BoolVar(&sf.insecurePlaintext, "insecure-plaintext", false, "allow serving credentials without TLS on a non-loopback address (only behind a TLS proxy on this host)")
	f.BoolVar(&sf.insecureNoAuth, "insecure-no-auth", false, "serve WITHOUT authentication: every caller may do everything and reads are not recorded; loopback addresses only, for development")
	return []string{"tls-cert", "tls-key", "tls-client-ca", "jwks-url", "jwks-file", "jwt-issuer", "jwt-audience", "jwt-type",
		"local-tokens", "metrics-addr", "rate-limit", "rate-burst", "insecure-plaintext", "insecure-no-auth"}
}

// apply fills the security part of cfg: TLS, the API key store and token
// verifiers under dataDir, limits and the metrics listener. It returns a
// one-line description of the accepted credentials for the startup log.
func (sf *securityFlags) apply(ctx context.Context, cfg *api.Config, dataDir string, kek crypto.KEK, keys *crypto.Keyring) (string, error) {
	cfg.MetricsAddr = sf.metricsAddr
	cfg.RateLimit, cfg.RateBurst = sf.rateLimit, sf.rateBurst
	if sf.rateLimit == 0 {
		return "", usageError(errors.New("--rate-limit 0 would refuse every call: give a positive rate, or a negative one for no limit"))
	}
	cfg.InsecurePlaintext = sf.insecurePlaintext
	if (sf.tlsCert == "") != (sf.tlsKey == "") {
		return "", usageError(errors.New("--tls-cert and --tls-key go together"))
	}
	if sf.tlsClientCA != "" && sf.tlsCert == "" {
		return "", usageError(errors.New("--tls-client-ca needs --tls-cert and --tls-key"))
	}
	if sf.tlsCert != "" {
		tc, err := api.LoadTLSConfig(sf.tlsCert, sf.tlsKey, sf.tlsClientCA)
		if err != nil {
			return "", usageError(err)
		}
		cfg.TLS = tc
	}
	if sf.insecureNoAuth {
		for _, a := range []string{cfg.GRPCAddr, cfg.HTTPAddr} {
			if !isLoopbackAddr(a) {
				return "", usageError(fmt.Errorf("--insecure-no-auth is for development on this machine only: %s is not a loopback address", a))
			}
		}
		return "none (--insecure-no-auth)", nil
	}

	var desc []string
	auth := &api.AuthConfig{Pseudonymize: keys.Pseudonym}
	store, err := api.OpenAPIKeyStore(authDir(dataDir))
	if err != nil {
		return "", err
	}
	auth.APIKeys = store
	desc = append(desc, "api-keys")
	if sf.tlsClientCA != "" {
		desc = append(desc, "client-certificates")
	}
	if sf.localTokens {
		priv, err := crypto.OpenTokenKey(ctx, kek, authDir(dataDir))
		if err != nil {
			return "", err
		}
		issuer, err := api.NewTokenIssuer(priv, api.LocalIssuer, api.DefaultAudience)
		if err != nil {
			return "", err
		}
		v, err := api.NewTokenVerifier(ctx, api.TokenVerifierConfig{Issuer: api.LocalIssuer, Keys: issuer.PublicKeyset()})
		if err != nil {
			return "", err
		}
		auth.Tokens = append(auth.Tokens, v)
		desc = append(desc, "local-tokens")
	}
	switch {
	case sf.jwksURL != "" && sf.jwksFile != "":
		return "", usageError(errors.New("give --jwks-url or --jwks-file, not both"))
	case (sf.jwksURL != "" || sf.jwksFile != "") && sf.jwtIssuer == "":
		return "", usageError(errors.New("--jwks-url and --jwks-file need --jwt-issuer"))
	case sf.jwtIssuer != "" && sf.jwksURL == "" && sf.jwksFile == "":
		return "", usageError(errors.New("--jwt-issuer needs --jwks-url or --jwks-file"))
	case sf.jwtIssuer == api.LocalIssuer:
		return "", usageError(fmt.Errorf("--jwt-issuer %q is the embedded issuer's name", api.LocalIssuer))
	}
	if sf.jwtIssuer != "" {
		vc := api.TokenVerifierConfig{Issuer: sf.jwtIssuer, Audience: sf.jwtAudience, TypeHeader: sf.jwtType, JWKSURL: sf.jwksURL}
		if sf.jwksFile != "" {
			b, err := os.ReadFile(sf.jwksFile)
			if err != nil {
				return "", usageError(fmt.Errorf("--jwks-file: %w", err))
			}
			vc.JWKS = b
		}
		v, err := api.NewTokenVerifier(ctx, vc)
		if err != nil {
			return "", err
		}
		auth.Tokens = append(auth.Tokens, v)
		desc = append(desc, "tokens from "+sf.jwtIssuer)
	}
	cfg.Auth = auth
	return strings.Join(desc, ", "), nil
}

// newProcessorsCmd is `piledger processors add|list|revoke`: the API keys
// of emitters, kept hashed in <data>/auth/processors.json. It works on the
// data directory directly (the operator's privilege), also while the server
// runs: the server sees changes within a second.
func newProcessorsCmd(getenv func(string) string) *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "processors",
		Short: "Manage emitters' API keys (each bound to one processor id)",
		Long: `Manage the API keys emitters authenticate with. Each key is bound to one
processor id: an emitter appends events only as that processor and sees only
its own holdings. Keys are stored hashed (SHA-256) in <data>/auth/processors.json;
the key itself is printed once, by 'add'. A running server notices added and
revoked keys within a second.`,
		Example: `  piledger processors add city-police > city-police.key   # keep the file private
  piledger processors list
  piledger processors revoke --key-id 3f9a0c1b2d4e5f60`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data", "./data", "data directory of the server [$PILEDGER_DATA]")
	data := func() string {
		if !cmd.PersistentFlags().Changed("data") {
			if v := getenv("PILEDGER_DATA"); v != "" {
				return v
			}
		}
		return dataDir
	}

	add := &cobra.Command{
		Use:   "add PROCESSOR",
		Short: "Make an API key for a processor and print it (once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, info, err := api.AddAPIKey(authDir(data()), args[0], time.Now())
			if err != nil {
				return usageError(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "API key %s for processor %s; it is shown only now: store it in a private file and pass it with --api-key-file or $PILEDGER_API_KEY\n", info.ID, info.Processor)
			_, err = fmt.Fprintln(cmd.OutOrStdout(), key)
			return err
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (never the keys themselves)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := api.ListAPIKeys(authDir(data()))
			if err != nil {
				return err
			}
			return printKeys(cmd.OutOrStdout(), keys)
		},
	}
	var keyID, processor string
	revoke := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke one API key (--key-id) or every key of a processor (--processor)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (keyID == "") == (processor == "") {
				return usageError(errors.New("give --key-id or --processor"))
			}
			n, err := api.RevokeAPIKeys(authDir(data()), keyID, processor, time.Now())
			if err != nil {
				return err
			}
			if n == 0 {
				return &exitError{code: exitFailure, err: errors.New("no valid key matched")}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "revoked %d key(s); servers refuse them within a second\n", n)
			return nil
		},
	}
	revoke.Flags().StringVar(&keyID, "key-id", "", "id of the key to revoke (see 'list')")
	revoke.Flags().StringVar(&processor, "processor", "", "revoke every key of this processor")
	cmd.AddCommand(add, list, revoke)
	return cmd
}

func printKeys(w io.Writer, keys []api.APIKeyInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tPROCESSOR\tCREATED\tREVOKED")
	for _, k := range keys {
		revoked := "-"
		if !k.Revoked.IsZero() {
			revoked = k.Revoked.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.Processor, k.Created.Format(time.RFC3339), revoked)
	}
	return tw.Flush()
}

// newTokenCmd is `piledger token`: tokens of the embedded issuer, signed
// with the key under <data>/auth (wrapped under the KEK in <data>/kek).
func newTokenCmd(getenv func(string) string) *cobra.Command {
	var (
		dataDir, role, sub, subFile, out string
		ttl                              time.Duration
		printJWKS                        bool
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Issue a token for a data subject, a regulator or an admin",
		Long: `Issue a token of the embedded issuer (iss "piledger-local", aud "piledger",
ES256, key under <data>/auth, wrapped under the key-encryption key). Run it on
the server's host: it needs the data directory. The token goes to stdout, or
to --out (mode 0600); pass it to client commands with --token-file or
$PILEDGER_TOKEN.

A subject token's sub is the person's raw subject reference, exactly as
emitters send it: give it with --sub-file (or "-" for stdin) rather than on
the command line. --jwks prints the issuer's public keys as a JWK set, for
servers that verify these tokens with --jwks-file.`,
		Example: `  piledger token --role admin --sub ops-1 --out admin.token
  piledger token --role regulator --sub officer-7 --ttl 8h > regulator.token
  echo -n resident-42 | piledger token --role subject --sub-file - > resident.token
  piledger token --jwks > piledger-local.jwks.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("data") {
				if v := getenv("PILEDGER_DATA"); v != "" {
					dataDir = v
				}
			}
			kek, err := crypto.OpenLocalKEK(filepath.Join(dataDir, "kek"))
			if err != nil {
				return err
			}
			priv, err := crypto.OpenTokenKey(cmd.Context(), kek, authDir(dataDir))
			if err != nil {
				return err
			}
			issuer, err := api.NewTokenIssuer(priv, api.LocalIssuer, api.DefaultAudience)
			if err != nil {
				return err
			}
			if printJWKS {
				b, err := issuer.JWKS()
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
				return err
			}
			r, err := api.ParseRole(role)
			if err != nil {
				return usageError(fmt.Errorf("--role: %w", err))
			}
			switch {
			case sub != "" && subFile != "":
				return usageError(errors.New("give --sub or --sub-file, not both"))
			case subFile == "-":
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 4096))
				if err != nil {
					return err
				}
				sub = strings.TrimSpace(string(b))
			case subFile != "":
				b, err := os.ReadFile(subFile)
				if err != nil {
					return usageError(fmt.Errorf("--sub-file: %w", err))
				}
				sub = strings.TrimSpace(string(b))
			}
			tok, err := issuer.Issue(r, sub, ttl, time.Now())
			if err != nil {
				return usageError(err)
			}
			if out == "" {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
				return err
			}
			return writePrivateFile(out, []byte(tok+"\n"))
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", "./data", "data directory of the server [$PILEDGER_DATA]")
	f.StringVar(&role, "role", "", "subject, regulator or admin")
	f.StringVar(&sub, "sub", "", "the token's subject: a regulator's or admin's account")
	f.StringVar(&subFile, "sub-file", "", `file holding the subject ("-": stdin); use it for a data subject's reference`)
	f.DurationVar(&ttl, "ttl", time.Hour, "lifetime of the token (at most 720h)")
	f.StringVar(&out, "out", "", "write the token to this file (mode 0600) instead of stdout")
	f.BoolVar(&printJWKS, "jwks", false, "print the issuer's public JWK set instead of a token")
	return cmd
}

// writePrivateFile writes data to a new file readable by its owner only.
func writePrivateFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return usageError(err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
