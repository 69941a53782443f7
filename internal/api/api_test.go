package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

const (
	tokA = "token-a-0123456789abcdef"
	tokB = "token-b-0123456789abcdef"
)

func TestParseTokens(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		fail bool
	}{
		{"", 0, false},
		{"   ", 0, false},
		{tokA, 1, false},
		{" " + tokA + " , " + tokB + " ", 2, false},
		{tokA + ",", 0, true},
		{tokA + ",," + tokB, 0, true},
		{"short", 0, true},
	} {
		toks, err := ParseTokens(tc.in)
		if tc.fail {
			if err == nil {
				t.Errorf("ParseTokens(%q): want an error", tc.in)
			} else if strings.Contains(err.Error(), tokA) || strings.Contains(err.Error(), "short") {
				t.Errorf("ParseTokens error quotes a token: %v", err)
			}
			continue
		}
		if err != nil || toks.Len() != tc.n {
			t.Errorf("ParseTokens(%q) = %d tokens, %v; want %d", tc.in, toks.Len(), err, tc.n)
		}
	}
}

func TestMatch(t *testing.T) {
	toks, err := ParseTokens(tokA + "," + tokB)
	if err != nil {
		t.Fatal(err)
	}
	for presented, want := range map[string]int{
		tokA:                  0,
		tokB:                  1,
		tokA[:len(tokA)-1]:    -1, // a prefix
		tokA + "x":            -1,
		"":                    -1,
		strings.ToUpper(tokA): -1,
	} {
		idx, ok := toks.Match(presented)
		if idx != want || ok != (want >= 0) {
			t.Errorf("Match(%q) = %d, %v; want %d", presented, idx, ok, want)
		}
	}
}

// fakeBroker records what was published, or fails.
type fakeBroker struct {
	mu   sync.Mutex
	msgs [][]byte
	err  error
}

func (b *fakeBroker) Publish(_ context.Context, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	b.msgs = append(b.msgs, append([]byte(nil), data...))
	return nil
}

func (b *fakeBroker) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

type response struct {
	status int
	header http.Header
	body   errorBody
	id     string
}

func post(t *testing.T, h http.Handler, auth, body string) response {
	t.Helper()
	req := httptest.NewRequest("POST", "/api/alerts", strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header()}
	raw, _ := io.ReadAll(rec.Body)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if rec.Code == http.StatusAccepted {
		var ok struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(raw, &ok); err != nil {
			t.Fatalf("202 body %s: %v", raw, err)
		}
		res.id = ok.ID
		return res
	}
	if err := json.Unmarshal(raw, &res.body); err != nil || res.body.Error.Code == "" || res.body.Error.Message == "" {
		t.Fatalf("%d body %s: want {\"error\":{\"code\",\"message\"}} (%v)", rec.Code, raw, err)
	}
	return res
}

func newHandler(t *testing.T, cfg Config, b *fakeBroker) *Handler {
	t.Helper()
	toks, err := ParseTokens(tokA + "," + tokB)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tokens = toks
	cfg.VM, cfg.Region = "vm-1", "ams"
	return New(cfg, b)
}

func TestStatuses(t *testing.T) {
	b := &fakeBroker{}
	h := newHandler(t, Config{Rate: rate.Every(1e12), Burst: 1000}, b)
	for _, tc := range []struct {
		name, auth, body string
		status           int
		code             string
	}{
		{"no Authorization", "", `{"text":"x"}`, 401, CodeUnauthorized},
		{"not Bearer", "Basic " + tokA, `{"text":"x"}`, 401, CodeUnauthorized},
		{"wrong token", "Bearer wrong-token-0123456789", `{"text":"x"}`, 401, CodeUnauthorized},
		{"empty bearer", "Bearer ", `{"text":"x"}`, 401, CodeUnauthorized},
		{"not JSON", "Bearer " + tokA, `{"text":`, 400, protocol.CodeInvalid},
		{"not an object", "Bearer " + tokA, `["x"]`, 400, protocol.CodeInvalid},
		{"text not a string", "Bearer " + tokA, `{"text":42}`, 400, protocol.CodeInvalid},
		{"duplicate text", "Bearer " + tokA, `{"text":"a","text":"b"}`, 400, protocol.CodeInvalid},
		{"trailing data", "Bearer " + tokA, `{"text":"a"} {}`, 400, protocol.CodeInvalid},
		{"text over 280 characters", "Bearer " + tokA, `{"text":"` + strings.Repeat("é", 281) + `"}`, 413, protocol.CodeTooLarge},
		{"body over the cap", "Bearer " + tokA, `{"text":"x","pad":"` + strings.Repeat(" ", MaxBody) + `"}`, 413, protocol.CodeTooLarge},
	} {
		res := post(t, h, tc.auth, tc.body)
		if res.status != tc.status || res.body.Error.Code != tc.code {
			t.Errorf("%s: %d %q, want %d %q", tc.name, res.status, res.body.Error.Code, tc.status, tc.code)
		}
		if tc.status == 401 && !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q, want Bearer", tc.name, res.header.Get("WWW-Authenticate"))
		}
	}
	if n := b.count(); n != 0 {
		t.Fatalf("refused requests published %d alerts", n)
	}

	// Accepted: 202 with the id of the alert published, origin via api.
	res := post(t, h, "bearer "+tokB, `{"text":"Order 42 shipped","extra":1}`)
	if res.status != http.StatusAccepted || len(res.id) != 32 {
		t.Fatalf("good request: %d id %q, want 202 and an id", res.status, res.id)
	}
	a, _, _, err := protocol.DecodeAlert(b.msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	want := protocol.Origin{VM: "vm-1", Region: "ams", Via: protocol.ViaAPI}
	if a.ID != res.id || a.Text != "Order 42 shipped" || a.Origin != want {
		t.Errorf("published %+v, want id %s, the text and origin %+v", a, res.id, want)
	}
	if res := post(t, h, "Bearer "+tokA, `{}`); res.status != 202 {
		t.Errorf("empty body object: %d, want 202 with the default text", res.status)
	} else if a, _, _, _ := protocol.DecodeAlert(b.msgs[1]); a.Text != protocol.DefaultText {
		t.Errorf("empty object published text %q, want the default", a.Text)
	}

	// A nonce makes a retry publish the same id (relays drop the second).
	r1 := post(t, h, "Bearer "+tokA, `{"text":"x","nonce":"order-42"}`)
	r2 := post(t, h, "Bearer "+tokA, `{"text":"x","nonce":"order-42"}`)
	r3 := post(t, h, "Bearer "+tokB, `{"text":"x","nonce":"order-42"}`)
	if r1.id != r2.id || r1.id == r3.id {
		t.Errorf("ids for one nonce: %s %s, another token %s; want the first two equal, the third different", r1.id, r2.id, r3.id)
	}

	// Broker down: 503.
	b.err = errors.New("broker down")
	if res := post(t, h, "Bearer "+tokA, `{"text":"x"}`); res.status != 503 || res.body.Error.Code != protocol.CodeUnavailable || res.header.Get("Retry-After") == "" {
		t.Errorf("broker down: %d %q, want 503 unavailable with Retry-After", res.status, res.body.Error.Code)
	}
}

func TestRateLimitPerToken(t *testing.T) {
	b := &fakeBroker{}
	h := newHandler(t, Config{Rate: rate.Every(1e12), Burst: 3}, b) // no refill in the test
	for i := range 3 {
		if res := post(t, h, "Bearer "+tokA, `{"text":"x"}`); res.status != 202 {
			t.Fatalf("alert %d: %d, want 202", i, res.status)
		}
	}
	res := post(t, h, "Bearer "+tokA, `{"text":"x"}`)
	if res.status != 429 || res.body.Error.Code != protocol.CodeRateLimited || res.header.Get("Retry-After") == "" {
		t.Fatalf("over the rate: %d %q Retry-After %q, want 429 rate_limited with Retry-After", res.status, res.body.Error.Code, res.header.Get("Retry-After"))
	}
	// Each token has its own bucket.
	if res := post(t, h, "Bearer "+tokB, `{"text":"x"}`); res.status != 202 {
		t.Errorf("another token: %d, want 202", res.status)
	}
	if n := b.count(); n != 4 {
		t.Errorf("published %d, want 4", n)
	}
}

func TestOffWithoutTokens(t *testing.T) {
	b := &fakeBroker{}
	h := New(Config{}, b)
	if h.Enabled() {
		t.Fatal("enabled without tokens")
	}
	if res := post(t, h, "Bearer "+tokA, `{"text":"x"}`); res.status != 404 || res.body.Error.Code != CodeNotFound {
		t.Errorf("API off: %d %q, want 404 not_found", res.status, res.body.Error.Code)
	}
	if b.count() != 0 {
		t.Error("published with the API off")
	}
}
