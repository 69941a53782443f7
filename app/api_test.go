package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/testkit"
	"github.com/skywatch-dev/skywatch/internal/token"
)

// These tests run whole relays through run on one in-process Pub/Sub
// (helpers in run_test.go): the publish API, BROWSER_PUBLISH, and the
// per-address and per-relay limits.

const (
	apiToken   = "api-token-0123456789abcdef"
	signingKey = "signing-key-0123456789abcdef0123456789"
)

// post sends an alert to v's API and returns the status and body.
func post(t *testing.T, v *vm, auth, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest("POST", v.URL("/api/alerts"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /api/alerts on VM %s: %v", v.id, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("POST /api/alerts on VM %s: %d with body %q: %v", v.id, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, m, resp.Header
}

// publishAPI posts text with the good token and returns the alert id.
func publishAPI(t *testing.T, v *vm, text string) string {
	t.Helper()
	status, body, _ := post(t, v, "Bearer "+apiToken, fmt.Sprintf(`{"text":%q}`, text))
	id, _ := body["id"].(string)
	if status != http.StatusAccepted || id == "" {
		t.Fatalf("POST /api/alerts on VM %s: %d %v, want 202 with an id", v.id, status, body)
	}
	return id
}

func withEnv(base map[string]string, kv ...string) map[string]string {
	for i := 0; i < len(kv); i += 2 {
		base[kv[i]] = kv[i+1]
	}
	return base
}

func TestAPIAlertReachesEveryClientOnce(t *testing.T) {
	srv := newPubSub(t)
	regions := []string{"ams", "iad", "syd"}
	var vms []*vm
	var clients []*testkit.Client
	for i, r := range regions {
		vms = append(vms, startVM(t, withEnv(emulatorEnv(srv, fmt.Sprintf("vm%d", i+1), r), "PUBLISH_TOKENS", "other-token-0123456789,"+apiToken)))
	}
	for _, v := range vms {
		v.waitReady(t)
		for j := range 2 {
			clients = append(clients, dial(t, v, fmt.Sprintf("client %d on VM %s", j+1, v.id)))
		}
	}

	id := publishAPI(t, vms[1], "Order 42 shipped")
	for _, c := range clients {
		f := c.MustFrame(t, testkit.Wait, "the API's alert", testkit.IsAlertID(id))
		if f.Text != "Order 42 shipped" || f.Origin.Via != "api" || f.Origin.VM != "vm2" || f.Origin.Region != "iad" {
			t.Errorf("%s: alert %s, want the text with origin vm2/iad via api", c, f)
		}
	}

	// A wrong or missing token: 401, and nothing is broadcast.
	for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Bearer " + apiToken + "x", "Basic " + apiToken} {
		status, body, hdr := post(t, vms[0], auth, `{"text":"intruder"}`)
		code, _ := body["error"].(map[string]any)["code"].(string)
		if status != http.StatusUnauthorized || code != "unauthorized" || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: %d %v, want 401 unauthorized with WWW-Authenticate: Bearer", auth, status, body)
		}
	}
	// Once every client has a marker sent last, anything published before
	// it would have arrived: exactly the two alerts did.
	marker := publishAPI(t, vms[2], "marker")
	for _, c := range clients {
		c.ExpectAlerts(t, testkit.Wait, []string{id, marker}, nil)
	}
	// The token never reaches the logs.
	for _, v := range vms {
		if strings.Contains(v.logs.String(), apiToken) {
			t.Errorf("VM %s logged the API token", v.id)
		}
		if !strings.Contains(v.logs.String(), "publish API on") {
			t.Errorf("VM %s does not log that the API is on", v.id)
		}
	}
}

func TestAPIOffWithoutTokens(t *testing.T) {
	v := startVM(t, map[string]string{})
	if !strings.Contains(v.logs.String(), "publish API off") {
		t.Errorf("no log line says the API is off:\n%s", v.logs)
	}
	if status, body, _ := post(t, v, "Bearer "+apiToken, `{"text":"x"}`); status != http.StatusNotFound {
		t.Errorf("API without PUBLISH_TOKENS: %d %v, want 404", status, body)
	}
}

// dialQuery dials v's /ws with a query string.
func dialQuery(t *testing.T, v *vm, name, query string) *testkit.Client {
	t.Helper()
	return testkit.MustDial(t, v.WS(query), nil, name)
}

func TestBrowserPublishModes(t *testing.T) {
	srv := newPubSub(t)
	off := startVM(t, withEnv(emulatorEnv(srv, "off1", "ams"), "BROWSER_PUBLISH", "off", "PUBLISH_TOKENS", apiToken))
	signed := startVM(t, withEnv(emulatorEnv(srv, "signed1", "iad"), "BROWSER_PUBLISH", "signed", "PUBLISH_SIGNING_KEY", signingKey))
	off.waitReady(t)
	signed.waitReady(t)

	good, err := token.Mint([]byte(signingKey), time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := token.Mint([]byte(signingKey), time.Now().Add(-time.Hour), time.Minute)
	forged, _ := token.Mint([]byte(strings.Repeat("k", 40)), time.Now(), time.Minute)

	listener := dial(t, off, "listener on the off VM")
	withToken := dialQuery(t, signed, "client with a token", "token="+good)
	refused := []*testkit.Client{
		listener,
		dial(t, signed, "client without a token"),
		dialQuery(t, signed, "client with an expired token", "token="+expired),
		dialQuery(t, signed, "client with a forged token", "token="+forged),
	}
	for i, c := range refused {
		nonce := fmt.Sprint("r", i)
		if f := c.MustAnswer(t, "not allowed", nonce); f.Type != "error" || f.Code != "forbidden" || f.Message == "" {
			t.Errorf("%s: %s, want error forbidden", c, f)
		}
	}
	id := ack(t, withToken, "signed alert", "ok")
	// The signed alert and the API's marker, nothing else: nothing refused
	// was published.
	marker := publishAPI(t, off, "marker")
	for _, c := range append(refused, withToken) {
		if f := c.ExpectAlerts(t, testkit.Wait, []string{id, marker}, nil)[id]; f.Text != "signed alert" || f.Origin.Via != "" {
			t.Errorf("%s: alert %s, want the signed one, from a browser (no via)", c, f)
		}
	}
}

// flood opens conns WebSockets to v, each with its own Fly-Client-IP when
// ips is true, sends each alerts at once, and returns the acked ids and
// how many were refused rate_limited.
func flood(t *testing.T, v *vm, conns, each int, ips bool) (acked map[string]bool, limited int) {
	t.Helper()
	acked = map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range conns {
		hdr := http.Header{}
		if ips {
			hdr.Set("Fly-Client-IP", fmt.Sprintf("198.51.100.%d", i+1))
		}
		conn, resp, err := websocket.DefaultDialer.Dial(v.WS(""), hdr)
		if err != nil {
			t.Fatalf("flood connection %d: %v (%v)", i, err, resp)
		}
		t.Cleanup(func() { conn.Close() })
		wg.Go(func() {
			for j := range each {
				if err := conn.WriteJSON(map[string]any{"type": "alert", "text": "flood", "nonce": fmt.Sprint(j)}); err != nil {
					t.Error(err)
					return
				}
			}
			_ = conn.SetReadDeadline(time.Now().Add(testkit.Wait))
			for answered := 0; answered < each; {
				var f testkit.Frame
				if err := conn.ReadJSON(&f); err != nil {
					t.Errorf("flood connection %d: %v", i, err)
					return
				}
				mu.Lock()
				switch {
				case f.Type == "ack":
					acked[f.ID] = true
					answered++
				case f.Type == "error" && f.Code == "rate_limited":
					limited++
					answered++
				case f.Type == "error":
					t.Errorf("flood connection %d: %+v", i, f)
					answered++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return acked, limited
}

// TestLimitsHoldUnderFlood floods a relay from many connections: the
// per-address limits, then the per-relay ceiling, let through at most
// their burst plus their rate times the time the flood took, and a witness
// on another relay receives exactly the acknowledged alerts.
func TestLimitsHoldUnderFlood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   []string
		ips   bool // each connection its own Fly-Client-IP
		burst int
		rate  float64
	}{
		{"per address", []string{"IP_ALERT_RATE", "1", "IP_ALERT_BURST", "6"}, false, 6, 1},
		{"per relay, many addresses", []string{"TRUST_FLY_CLIENT_IP", "true", "IP_MAX_CONNECTIONS", "2",
			"RELAY_ALERT_RATE", "1", "RELAY_ALERT_BURST", "8"}, true, 8, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newPubSub(t)
			target := startVM(t, withEnv(emulatorEnv(srv, "target", "ams"), append(tc.env, "PUBLISH_TOKENS", apiToken)...))
			other := startVM(t, withEnv(emulatorEnv(srv, "other", "iad"), "PUBLISH_TOKENS", apiToken))
			target.waitReady(t)
			other.waitReady(t)
			witness := dial(t, other, "witness")

			const conns, each = 10, 8 // 80 alerts; each connection within its own bucket (10)
			start := time.Now()
			acked, limited := flood(t, target, conns, each, tc.ips)
			elapsed := time.Since(start).Seconds()
			bound := tc.burst + int(tc.rate*elapsed) + 1
			t.Logf("%d acked, %d rate_limited in %.2f s (bound %d)", len(acked), limited, elapsed, bound)
			if len(acked) == 0 || len(acked) > bound || len(acked)+limited != conns*each {
				t.Fatalf("%d acked and %d rate_limited of %d; want 1..%d acked and the rest rate_limited", len(acked), limited, conns*each, bound)
			}
			// Exactly the acknowledged alerts were published.
			ids := []string{publishAPI(t, target, "marker")}
			for id := range acked {
				ids = append(ids, id)
			}
			witness.ExpectAlerts(t, testkit.Wait, ids, nil)
		})
	}
}

func TestConnectionsPerAddress(t *testing.T) {
	v := startVM(t, map[string]string{"IP_MAX_CONNECTIONS": "3"})
	v.waitReady(t)
	for i := range 3 {
		dial(t, v, fmt.Sprint("client ", i))
	}
	// Over the limit: 429, and a Fly-Client-IP of one's choosing does not
	// help while the header is not trusted.
	for _, hdr := range []http.Header{nil, {"Fly-Client-IP": {"203.0.113.9"}}} {
		conn, resp, err := websocket.DefaultDialer.Dial(v.WS(""), hdr)
		if err == nil {
			conn.Close()
			t.Fatalf("fourth connection (header %v) admitted, want 429", hdr)
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("fourth connection (header %v): %v %v, want 429", hdr, resp, err)
		}
	}
}

func TestPublishConfigErrors(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"unknown mode":         {"BROWSER_PUBLISH": "maybe"},
		"signed without a key": {"BROWSER_PUBLISH": "signed"},
		"short signing key":    {"BROWSER_PUBLISH": "signed", "PUBLISH_SIGNING_KEY": "short"},
		"empty token entry":    {"PUBLISH_TOKENS": apiToken + ","},
		"short token":          {"PUBLISH_TOKENS": "abc"},
		"empty origin entry":   {"ALLOWED_ORIGINS": "https://a.example,/"},
		"blank origin entry":   {"ALLOWED_ORIGINS": "https://a.example,,https://b.example"},
		"bad relay rate":       {"RELAY_ALERT_RATE": "0"},
		"bad IP connections":   {"IP_MAX_CONNECTIONS": "x"},
		"bad trust value":      {"TRUST_FLY_CLIENT_IP": "yes"},
	} {
		_, err := loadConfig(env(vars))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for k, v := range vars {
			if !strings.Contains(err.Error(), k) && k != "BROWSER_PUBLISH" {
				t.Errorf("%s: error %q does not name %s", name, err, k)
			}
			if len(v) >= 16 && strings.Contains(err.Error(), v) {
				t.Errorf("%s: error quotes the secret value", name)
			}
		}
	}
}
