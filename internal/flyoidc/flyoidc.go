// Package flyoidc holds the relay's keyless Google credentials on Fly.io:
// a Fly Machine asks its local API (a unix socket) for an OIDC token naming
// Google's workload identity provider as audience, Google's Security Token
// Service exchanges it for a federated token, and the IAM Credentials API
// turns that into an access token for the relay's service account. No key
// exists anywhere; every token is short-lived and none is ever logged.
package flyoidc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials/externalaccount"
)

// Defaults for the zero values of Config.
const (
	// DefaultSocketPath is where every Fly Machine reaches its local API;
	// the socket adds the Machine's own token, which the guest never sees.
	DefaultSocketPath = "/.fly/api"
	// DefaultTokenURL is Google's Security Token Service.
	DefaultTokenURL = "https://sts.googleapis.com/v1/token"
	// DefaultIAMCredentialsURL is the base of Google's IAM Credentials API,
	// which mints the service account's access token.
	DefaultIAMCredentialsURL = "https://iamcredentials.googleapis.com"
)

// jwtTokenType is the subject token type for an OIDC ID token (a JWT).
const jwtTokenType = "urn:ietf:params:oauth:token-type:jwt"

// maxTokenBytes bounds what is read from the Fly API: an OIDC token is a
// kilobyte or two.
const maxTokenBytes = 64 << 10

// Config configures Credentials. Audience and ServiceAccountEmail are
// required; the rest default to production values and exist so tests can
// point them at fakes.
type Config struct {
	// Audience is the workload identity provider's full name as STS wants
	// it: //iam.googleapis.com/projects/NUMBER/locations/global/
	// workloadIdentityPools/POOL/providers/PROVIDER. It is also the
	// audience of the Fly token, which Google accepts when the provider
	// lists no allowed audiences of its own.
	Audience string
	// ServiceAccountEmail is the account the relay acts as.
	ServiceAccountEmail string
	// Scopes of the final access token; the relay passes Pub/Sub's.
	Scopes []string

	// SocketPath is the Fly API's unix socket. Default DefaultSocketPath.
	SocketPath string
	// TokenURL is the STS token endpoint. Default DefaultTokenURL.
	TokenURL string
	// IAMCredentialsURL is the IAM Credentials API's base URL. Default
	// DefaultIAMCredentialsURL.
	IAMCredentialsURL string
	// Client makes the STS and IAM Credentials calls. Default: the auth
	// library's own client.
	Client *http.Client
}

// Credentials returns Google credentials that fetch a Fly OIDC token and
// exchange it when a token is needed (not now: this makes no call), and
// cache the result until shortly before it expires.
func Credentials(cfg Config) (*auth.Credentials, error) {
	var errs []error
	if cfg.Audience == "" {
		errs = append(errs, errors.New("missing workload identity audience"))
	} else if !strings.HasPrefix(cfg.Audience, "//iam.googleapis.com/") {
		errs = append(errs, fmt.Errorf("audience %q: want //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER", cfg.Audience))
	}
	if !strings.Contains(cfg.ServiceAccountEmail, "@") {
		errs = append(errs, fmt.Errorf("service account email %q: want name@project.iam.gserviceaccount.com", cfg.ServiceAccountEmail))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("flyoidc: %w", err)
	}
	socket := or(cfg.SocketPath, DefaultSocketPath)
	iam := strings.TrimRight(or(cfg.IAMCredentialsURL, DefaultIAMCredentialsURL), "/")
	creds, err := externalaccount.NewCredentials(&externalaccount.Options{
		Audience:         cfg.Audience,
		SubjectTokenType: jwtTokenType,
		TokenURL:         or(cfg.TokenURL, DefaultTokenURL),
		// Impersonation: the federated identity itself holds no Pub/Sub
		// role; it may only act as the relay's service account
		// (roles/iam.workloadIdentityUser, granted by infra/), which
		// holds the least-privilege roles of docs/iam.md.
		ServiceAccountImpersonationURL: iam + "/v1/projects/-/serviceAccounts/" + url.PathEscape(cfg.ServiceAccountEmail) + ":generateAccessToken",
		Scopes:                         cfg.Scopes,
		SubjectTokenProvider:           &flyAPI{socket: socket, client: unixClient(socket)},
		Client:                         cfg.Client,
	})
	if err != nil {
		return nil, fmt.Errorf("flyoidc: %w", err)
	}
	return creds, nil
}

// flyAPI fetches OIDC tokens from the Machine's local Fly API.
//
// It does not cache them: the auth library asks for one only when it
// exchanges it, and caches the access token it gets (an hour) until
// shortly before it expires, so this is called about once an hour.
type flyAPI struct {
	socket string
	client *http.Client
}

// unixClient is an HTTP client whose every connection goes to socket.
func unixClient(socket string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		},
	}
}

// SubjectToken asks the Fly API for a token for the audience STS will be
// given. Errors never contain the token.
func (f *flyAPI) SubjectToken(ctx context.Context, opts *externalaccount.RequestOptions) (string, error) {
	body, err := json.Marshal(map[string]string{"aud": opts.Audience})
	if err != nil {
		return "", fmt.Errorf("fly oidc token: %w", err)
	}
	// The host is ignored (the transport always dials the socket) but
	// must be valid; "localhost" is what Fly's own examples use.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/v1/tokens/oidc", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("fly oidc token: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("fly oidc token from %s: %w (is this a Fly Machine?)", f.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBytes))
	if err != nil {
		return "", fmt.Errorf("fly oidc token: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// An error body holds a message, never a token: quote its start.
		return "", fmt.Errorf("fly oidc token: status %d: %.200q", resp.StatusCode, data)
	}
	tok := strings.TrimSpace(string(data))
	if strings.Count(tok, ".") != 2 {
		// Not quoted: if it were a token after all, it would leak.
		return "", errors.New("fly oidc token: response is not a JWT")
	}
	return tok, nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
