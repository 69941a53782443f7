package flyoidc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
	"github.com/skywatch-dev/skywatch/internal/flyoidc"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

const (
	audience = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/skywatch/providers/fly"
	account  = "skywatch-relay@proj-1.iam.gserviceaccount.com"
	// The three tokens of the chain, each recognisable so a leak shows.
	subjectToken   = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvcmc6YXBwOm0ifQ.FLY-SUBJECT-SIGNATURE"
	federatedToken = "FEDERATED-STS-TOKEN"
	accessToken    = "ya29.RELAY-ACCESS-TOKEN"
)

// fakes are a Fly API on a unix socket and Google's STS and IAM
// Credentials endpoints, recording what they were sent.
type fakes struct {
	socket, stsURL, iamURL string

	mu           sync.Mutex
	flyAud       []string // aud of each Fly token request
	stsForm      url.Values
	iamAuth      string // Authorization header sent to IAM Credentials
	iamPath      string
	stsStatus    int // 0 means 200
	flyStatus    int // 0 means 200
	flyResponses int
}

func newFakes(t *testing.T) *fakes {
	t.Helper()
	f := &fakes{}
	// A short path: unix socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "fly")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f.socket = filepath.Join(dir, "api")
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	fly := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Aud string `json:"aud"`
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v1/tokens/oidc" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "unexpected request "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.flyAud = append(f.flyAud, body.Aud)
		status := f.flyStatus
		f.flyResponses++
		f.mu.Unlock()
		if status != 0 {
			http.Error(w, `{"error":"machine not allowed"}`, status)
			return
		}
		io.WriteString(w, subjectToken)
	})}
	go fly.Serve(ln)
	t.Cleanup(func() { fly.Close() })

	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.stsForm = r.PostForm
		status := f.stsStatus
		f.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			io.WriteString(w, `{"error":"invalid_grant","error_description":"The audience in ID Token does not match the expected audience."}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token":      federatedToken,
			"issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
			"token_type":        "Bearer",
			"expires_in":        3600,
		})
	}))
	t.Cleanup(sts.Close)
	f.stsURL = sts.URL + "/v1/token"

	iam := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.iamAuth = r.Header.Get("Authorization")
		f.iamPath = r.URL.Path
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"accessToken": accessToken,
			"expireTime":  time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		})
	}))
	t.Cleanup(iam.Close)
	f.iamURL = iam.URL
	return f
}

func (f *fakes) config() flyoidc.Config {
	return flyoidc.Config{
		Audience:            audience,
		ServiceAccountEmail: account,
		Scopes:              []string{"https://www.googleapis.com/auth/pubsub"},
		SocketPath:          f.socket,
		TokenURL:            f.stsURL,
		IAMCredentialsURL:   f.iamURL,
	}
}

// TestExchange: the Fly token is asked for with the provider as audience,
// handed to STS as a JWT for that audience, and the federated token is
// used to impersonate the relay's account, whose token is the result.
func TestExchange(t *testing.T) {
	f := newFakes(t)
	creds, err := flyoidc.Credentials(f.config())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := creds.Token(t.Context())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.Value != accessToken {
		t.Errorf("token %q, want the IAM Credentials access token", tok.Value)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.flyAud) != 1 || f.flyAud[0] != audience {
		t.Errorf("Fly token requests with aud %q, want one with %q", f.flyAud, audience)
	}
	for key, want := range map[string]string{
		"grant_type":         "urn:ietf:params:oauth:grant-type:token-exchange",
		"audience":           audience,
		"subject_token":      subjectToken,
		"subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
	} {
		if got := f.stsForm.Get(key); got != want {
			t.Errorf("STS %s = %q, want %q", key, got, want)
		}
	}
	if f.iamAuth != "Bearer "+federatedToken {
		t.Errorf("IAM Credentials Authorization %q, want the federated token", f.iamAuth)
	}
	if want := "/v1/projects/-/serviceAccounts/" + account + ":generateAccessToken"; f.iamPath != want {
		t.Errorf("IAM Credentials path %q, want %q", f.iamPath, want)
	}

	// Cached: a second call asks nobody.
	if _, err := creds.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(f.flyAud) != 1 {
		t.Errorf("%d Fly token requests after two Token calls, want 1 (cached)", len(f.flyAud))
	}
}

// TestFailuresHideTokens: a refused exchange and a refusing Fly API are
// reported with what went wrong, and never with a token.
func TestFailuresHideTokens(t *testing.T) {
	for name, set := range map[string]func(*fakes){
		"sts refuses": func(f *fakes) { f.stsStatus = http.StatusBadRequest },
		"fly refuses": func(f *fakes) { f.flyStatus = http.StatusForbidden },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakes(t)
			set(f)
			creds, err := flyoidc.Credentials(f.config())
			if err != nil {
				t.Fatal(err)
			}
			_, err = creds.Token(t.Context())
			if err == nil {
				t.Fatal("Token: nil error, want one")
			}
			t.Logf("Token: %v", err)
			for _, secret := range []string{subjectToken, "FLY-SUBJECT-SIGNATURE", federatedToken, accessToken} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error holds a token (%s): %v", secret, err)
				}
			}
			if !strings.Contains(err.Error(), "400") && !strings.Contains(err.Error(), "403") {
				t.Errorf("error %v does not give the status", err)
			}
		})
	}
}

func TestNoFlyAPI(t *testing.T) {
	creds, err := flyoidc.Credentials(flyoidc.Config{
		Audience:            audience,
		ServiceAccountEmail: account,
		SocketPath:          filepath.Join(t.TempDir(), "none"),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = creds.Token(t.Context())
	if err == nil || !strings.Contains(err.Error(), "Fly Machine") {
		t.Fatalf("Token without a Fly API: %v, want an error that says it needs a Fly Machine", err)
	}
}

func TestConfigRequired(t *testing.T) {
	for _, cfg := range []flyoidc.Config{
		{ServiceAccountEmail: account},
		{Audience: audience},
		{Audience: "https://example.com/aud", ServiceAccountEmail: account},
	} {
		if _, err := flyoidc.Credentials(cfg); err == nil {
			t.Errorf("Credentials(%+v): nil error, want one", cfg)
		}
	}
}

// TestPubSubClientUsesIt: the access token reaches the Pub/Sub client:
// every call gcppubsub makes arrives at the server with it.
func TestPubSubClientUsesIt(t *testing.T) {
	f := newFakes(t)
	creds, err := flyoidc.Credentials(f.config())
	if err != nil {
		t.Fatal(err)
	}
	srv := newTLSPubSub(t)
	b, err := gcppubsub.New(t.Context(), gcppubsub.Config{
		ProjectID:     "proj-1",
		TopicID:       "alerts",
		Credentials:   creds,
		ClientOptions: srv.clientOptions(),
	})
	if err != nil {
		t.Fatalf("gcppubsub.New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.CreateSubscription(t.Context(), "ID_vm1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), broker.Message{Data: []byte("hello")}); err != nil {
		t.Fatal(err)
	}

	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, m := range []string{
		"/google.pubsub.v1.Publisher/GetTopic",
		"/google.pubsub.v1.Subscriber/CreateSubscription",
		"/google.pubsub.v1.Publisher/Publish",
	} {
		if got, want := srv.auths[m], "Bearer "+accessToken; got != want {
			t.Errorf("%s Authorization %q, want %q", m, got, want)
		}
	}
}

// TestRefusedExchangeLogged: a relay whose token exchange is refused keeps
// retrying and says why (the STS message) without any token in its log.
func TestRefusedExchangeLogged(t *testing.T) {
	f := newFakes(t)
	f.stsStatus = http.StatusBadRequest
	creds, err := flyoidc.Credentials(f.config())
	if err != nil {
		t.Fatal(err)
	}
	srv := newTLSPubSub(t)
	var logs testkit.SyncBuffer
	l, err := gcppubsub.Open(gcppubsub.Config{
		ProjectID:     "proj-1",
		TopicID:       "alerts",
		Credentials:   creds,
		ClientOptions: srv.clientOptions(),
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	logs.WaitFor(t, 30*time.Second, "credentials refused")
	out := logs.String()
	if !strings.Contains(out, "does not match the expected audience") {
		t.Errorf("log lacks STS's reason:\n%s", out)
	}
	for _, secret := range []string{subjectToken, "FLY-SUBJECT-SIGNATURE", federatedToken, accessToken} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds a token (%s):\n%s", secret, out)
		}
	}
	t.Logf("log:\n%s", out)
}

// tlsPubSub is pstest's fake behind TLS (gRPC sends per-call credentials
// only over a secure transport), with an interceptor that records the
// Authorization header of each call.
type tlsPubSub struct {
	addr string
	pool *x509.CertPool

	mu    sync.Mutex
	auths map[string]string // method -> Authorization
}

func newTLSPubSub(t *testing.T) *tlsPubSub {
	t.Helper()
	s := &tlsPubSub{auths: map[string]string{}}
	cert, pool := selfSigned(t)
	s.pool = pool
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewServerTLSFromCert(&cert)),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			s.mu.Lock()
			s.auths[info.FullMethod] = strings.Join(md.Get("authorization"), ",")
			s.mu.Unlock()
			return h(ctx, req)
		}),
	)
	fake := pstest.NewServer()
	t.Cleanup(func() { fake.Close() })
	pubsubpb.RegisterPublisherServer(gs, &fake.GServer)
	pubsubpb.RegisterSubscriberServer(gs, &fake.GServer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	if _, err := fake.GServer.CreateTopic(t.Context(), &pubsubpb.Topic{Name: "projects/proj-1/topics/alerts"}); err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	return s
}

func (s *tlsPubSub) clientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(s.addr),
		// Trust the test's certificate; dial options given last win.
		option.WithGRPCDialOption(grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(s.pool, "127.0.0.1"))),
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
