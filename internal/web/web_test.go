package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func connectSrc(t *testing.T, resp *http.Response) string {
	t.Helper()
	for _, d := range strings.Split(resp.Header.Get("Content-Security-Policy"), ";") {
		if d = strings.TrimSpace(d); strings.HasPrefix(d, "connect-src ") {
			return strings.TrimPrefix(d, "connect-src ")
		}
	}
	t.Fatalf("no connect-src in %q", resp.Header.Get("Content-Security-Policy"))
	return ""
}

// The page may connect to its own origin and to the relays the server
// lists, nothing else: no scheme-wide ws: or wss:, which let a crafted link
// move the page to any host (issue 13).
func TestCSPAllowsOnlyOwnOriginAndListedRelays(t *testing.T) {
	resp, _ := get(t, Handler(), "/")
	if got := connectSrc(t, resp); got != "'self'" {
		t.Errorf("without relays connect-src is %q, want 'self'", got)
	}

	h := Handler("ws://localhost:8082/ws", "wss://relay.example:443/ws",
		"ws://x.example;script-src/ws", "http://not-a-socket:1/", "ws://a b/ws")
	resp, _ = get(t, h, "/")
	if got, want := connectSrc(t, resp), "'self' ws://localhost:8082 wss://relay.example:443"; got != want {
		t.Errorf("connect-src is %q, want %q (only well-formed ws:/wss: relays)", got, want)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, bad := range []string{" ws: ", " wss: ", "x.example", "not-a-socket"} {
		if strings.Contains(csp+" ", bad) {
			t.Errorf("CSP %q contains %q", csp, bad)
		}
	}
	// Every response carries it, the script's included.
	if resp, _ := get(t, h, "/static/app.js"); resp.Header.Get("Content-Security-Policy") != csp {
		t.Errorf("app.js served without the page's CSP")
	}
}

// The page takes no relay from its URL: the script never reads the query.
func TestPageIgnoresItsQuery(t *testing.T) {
	_, js := get(t, Handler(), "/static/app.js")
	if js == "" {
		t.Fatal("empty app.js")
	}
	// The page takes one thing from its URL, a signed publish token; never
	// relays (e2e TestBrowser proves a crafted ?relays= is not followed).
	if strings.Contains(js, "location.hash") {
		t.Error("app.js reads location.hash: fallbacks must come only from the server")
	}
	params := regexp.MustCompile(`URLSearchParams\(location\.search\)\.get\("([^"]*)"\)`).FindAllStringSubmatch(js, -1)
	if n := strings.Count(js, "location.search"); n != len(params) {
		t.Errorf("app.js reads location.search %d times, %d of them for a named parameter", n, len(params))
	}
	for _, m := range params {
		if m[1] != "token" {
			t.Errorf("app.js reads ?%s from its URL: only ?token is allowed; fallbacks must come only from the server", m[1])
		}
	}
}
