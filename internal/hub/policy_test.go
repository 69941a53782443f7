package hub

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/iplimit"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
	"github.com/skywatch-dev/skywatch/internal/token"
)

var signingKey = []byte("test-signing-key-0123456789abcdef")

func TestStrictKeys(t *testing.T) {
	broker := &loopback{}
	tr := startHub(t, Config{}, broker)
	conn, _ := connect(t, tr.url)
	for _, frame := range []string{
		`{"type":"hello","type":"alert","nonce":"dup"}`,
		`{"type":"alert","type":"alert","nonce":"dup"}`,
		`{"TYPE":"alert","nonce":"dup"}`,
		`{"Type":"alert","nonce":"dup"}`,
	} {
		send(t, conn, frame)
		if got, _ := answer(t, conn, "dup"); got.Type != protocol.TypeError || got.Code != protocol.CodeInvalid {
			t.Errorf("%s: answer %+v, want invalid", frame, got)
		}
	}
	if n := broker.published.Load(); n != 0 {
		t.Errorf("published %d alerts, want none", n)
	}
}

func TestBrowserPublishOff(t *testing.T) {
	broker := &loopback{}
	tr := startHub(t, Config{Publish: Policy{Browsers: PublishOff}}, broker)
	conn, _ := connect(t, tr.url)
	send(t, conn, `{"type":"alert","nonce":"x"}`)
	got, _ := answer(t, conn, "x")
	if got.Type != protocol.TypeError || got.Code != protocol.CodeForbidden || got.Message == "" {
		t.Fatalf("answer %+v, want forbidden", got)
	}
	// A bad frame is still invalid, not forbidden.
	send(t, conn, `{"type":"nope","nonce":"y"}`)
	if got, _ := answer(t, conn, "y"); got.Code != protocol.CodeInvalid {
		t.Errorf("unknown type on a listen-only connection: %+v, want invalid", got)
	}
	if n := broker.published.Load(); n != 0 {
		t.Errorf("published %d alerts, want none", n)
	}
}

func TestBrowserPublishSigned(t *testing.T) {
	broker := &loopback{}
	tr := startHub(t, Config{Publish: Policy{Browsers: PublishSigned, SigningKey: signingKey}}, broker)
	good, err := token.Mint(signingKey, time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := token.Mint(signingKey, time.Now().Add(-2*time.Minute), time.Minute)
	forged, _ := token.Mint([]byte(strings.Repeat("x", 32)), time.Now(), time.Minute)
	for _, tc := range []struct {
		name, query string
		want        string // frame type or error code
	}{
		{"valid token", "?token=" + good, protocol.TypeAck},
		{"no token", "", protocol.CodeForbidden},
		{"expired token", "?token=" + expired, protocol.CodeForbidden},
		{"token of another key", "?token=" + forged, protocol.CodeForbidden},
		{"garbage", "?token=abc", protocol.CodeForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := broker.published.Load()
			conn, _ := connect(t, tr.url+tc.query)
			send(t, conn, `{"type":"alert","nonce":"s"}`)
			got, _ := answer(t, conn, "s")
			if got.Type != tc.want && got.Code != tc.want {
				t.Fatalf("answer %+v, want %s", got, tc.want)
			}
			published := broker.published.Load() - before
			if want := int64(map[bool]int{true: 1}[tc.want == protocol.TypeAck]); published != want {
				t.Errorf("published %d, want %d", published, want)
			}
		})
	}
}

func TestConnectionsPerIP(t *testing.T) {
	lim := iplimit.New(iplimit.Config{Conns: 2})
	tr := startHub(t, Config{Publish: Policy{PerIP: lim}}, &loopback{})
	a, _ := connect(t, tr.url)
	connect(t, tr.url)
	_, resp, err := dial(t, tr.url, nil, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection from one address: %v, %v; want 429 with Retry-After", resp, err)
	}
	if got := count(t, tr.pol.refused.WithLabelValues("ip_connections")); got != 1 {
		t.Errorf("ip_connections refused = %v, want 1", got)
	}
	// A connection that ends frees its slot.
	a.Close()
	testkit.Eventually(t, "a slot to free up", func() bool {
		c, _, err := websocket.DefaultDialer.Dial(tr.url, nil)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// TestSharedLimits floods from many connections: the address's bucket and
// the relay's ceiling hold, and nothing over them is published.
func TestSharedLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pol    Policy
		budget int // alerts the limit lets through (no refill in the test)
		reason string
	}{
		{"per address", Policy{PerIP: iplimit.New(iplimit.Config{Rate: rate.Every(time.Hour), Burst: 7})}, 7, "ip_rate"},
		{"per relay", Policy{RelayRate: rate.Every(time.Hour), RelayBurst: 5}, 5, "relay_rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker := &loopback{}
			tr := startHub(t, Config{RateBurst: 10, RateLimit: rate.Every(time.Hour), Publish: tc.pol}, broker)
			const conns, each = 8, 5 // 40 alerts, each connection within its own bucket
			var mu sync.Mutex
			answers := map[string]int{}
			var wg sync.WaitGroup
			for i := range conns {
				conn, _ := connect(t, tr.url)
				wg.Go(func() {
					for j := range each {
						_ = conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"alert","nonce":"%d-%d"}`, i, j))
					}
					for n := 0; n < each; {
						f, err := tryRead(conn)
						if err != nil {
							t.Error(err)
							return
						}
						if f.Type == protocol.TypeAlert {
							continue
						}
						n++
						mu.Lock()
						answers[f.Type+":"+f.Code]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if answers["ack:"] != tc.budget || answers["error:rate_limited"] != conns*each-tc.budget {
				t.Errorf("answers %v, want %d acks and the rest rate_limited", answers, tc.budget)
			}
			if n := broker.published.Load(); n != int64(tc.budget) {
				t.Errorf("published %d, want %d", n, tc.budget)
			}
			if got := count(t, tr.pol.refused.WithLabelValues(tc.reason)); got != float64(conns*each-tc.budget) {
				t.Errorf("refused %s = %v, want %d", tc.reason, got, conns*each-tc.budget)
			}
		})
	}
}

// TestBadFrameFloodCloses sends `{}` as fast as it can: the errors stop at
// the reply budget and the connection is closed with 1008.
func TestBadFrameFloodCloses(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	conn, _ := connect(t, tr.url)
	const n = 150 // under the frame guard's burst: this is the bad-frame budget at work
	start := time.Now()
	go func() {
		for range n {
			if conn.WriteMessage(websocket.TextMessage, []byte(`{}`)) != nil {
				return
			}
		}
	}()
	errorsRead := 0
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	for {
		_, _, err := conn.ReadMessage()
		if err != nil {
			ce, ok := err.(*websocket.CloseError)
			if !ok || ce.Code != protocol.ClosePolicy || ce.Text != protocol.CloseBadFramesReason {
				t.Fatalf("connection ended with %v, want 1008 %q", err, protocol.CloseBadFramesReason)
			}
			break
		}
		errorsRead++
	}
	// The budget, plus its refill while the test ran.
	if bound := replyBurst + int(float64(replyRate)*time.Since(start).Seconds()) + 1; errorsRead > bound {
		t.Errorf("%d error replies to a flood of %d bad frames, want at most %d", errorsRead, n, bound)
	}
	if got := count(t, tr.pol.unanswered); got < strikeBurst {
		t.Errorf("unanswered frames = %v, want at least %d", got, strikeBurst)
	}
}

// writeRaw writes masked frames (zero mask key) straight to the TCP
// connection, as gorilla will not send what a hostile client does.
func writeRaw(t *testing.T, conn *websocket.Conn, frames ...[]byte) {
	t.Helper()
	var b bytes.Buffer
	for _, f := range frames {
		b.Write(f)
	}
	_ = conn.NetConn().SetWriteDeadline(time.Now().Add(waitFor))
	// The server may close while we write; the close code is what counts.
	_, _ = conn.NetConn().Write(b.Bytes())
}

func rawFrame(opcode byte, fin bool, payload string) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	// Payloads under 126 bytes; mask key zero, so the payload goes as is.
	return append([]byte{b0, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

func TestFrameGuard(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames func() [][]byte
	}{
		{"empty continuation frames", func() [][]byte {
			fs := [][]byte{rawFrame(1, false, `{"type":`)}
			for range maxFramesPerMessage + 1 {
				fs = append(fs, rawFrame(0, false, ""))
			}
			return fs
		}},
		{"pings", func() [][]byte {
			var fs [][]byte
			for range frameBurst + 50 {
				fs = append(fs, rawFrame(9, true, ""))
			}
			return fs
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker := &loopback{}
			tr := startHub(t, Config{}, broker)
			conn, _ := connect(t, tr.url)
			writeRaw(t, conn, tc.frames()...)
			ce := closeError(t, conn)
			if ce.Code != protocol.ClosePolicy || ce.Text != protocol.CloseFramesReason {
				t.Fatalf("close %d %q, want 1008 %q", ce.Code, ce.Text, protocol.CloseFramesReason)
			}
			testkit.Eventually(t, "the client to be gone", func() bool { return tr.Clients() == 0 })
		})
	}
	// Within the limits, a fragmented message is read as one.
	broker := &loopback{}
	tr := startHub(t, Config{}, broker)
	conn, _ := connect(t, tr.url)
	writeRaw(t, conn, rawFrame(1, false, `{"type":"alert",`), rawFrame(0, false, ""), rawFrame(0, true, `"nonce":"frag"}`))
	if got, _ := answer(t, conn, "frag"); got.Type != protocol.TypeAck {
		t.Fatalf("fragmented alert: %+v, want ack", got)
	}
}

// TestRefusedUpgradeLogIsBounded sends upgrades with a huge foreign Origin:
// what is logged is clipped and limited in rate.
func TestRefusedUpgradeLogIsBounded(t *testing.T) {
	var logs testkit.SyncBuffer
	tr := startHub(t, Config{AllowedOrigins: []string{"https://good.example"}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, &loopback{})
	origin := "https://" + strings.Repeat("a", 200<<10) + ".example"
	const n = 50
	start := time.Now()
	for range n {
		_, resp, err := dial(t, tr.url, http.Header{"Origin": {origin}}, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("foreign origin: %v %v, want 403", resp, err)
		}
	}
	// The bucket refills while the test runs: its burst, plus its rate
	// times the time taken.
	bound := requestLogBurst + int(float64(requestLogRate)*time.Since(start).Seconds()) + 1
	out := logs.String()
	lines := strings.Count(out, "origin refused")
	if lines == 0 || lines > bound {
		t.Errorf("%d log lines for %d refused upgrades, want 1..%d", lines, n, bound)
	}
	if len(out) > lines*1024 {
		t.Errorf("%d bytes of log for %d lines: the Origin was not clipped", len(out), lines)
	}
}

// TestFramesInOneWrite: frames that arrive together are all answered. The
// reader waits for the socket only when gorilla has nothing buffered; the
// second and third frame here are already in its buffer when the first is
// handled.
func TestFramesInOneWrite(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	conn, _ := connect(t, tr.url)
	var frames [][]byte
	nonces := []string{"one", "two", "three"}
	for _, n := range nonces {
		frames = append(frames, rawFrame(1, true, fmt.Sprintf(`{"type":"alert","text":"together","nonce":%q}`, n)))
	}
	writeRaw(t, conn, frames...)
	// Each is published on its own goroutine: acks come in any order.
	acked := map[string]bool{}
	for len(acked) < len(nonces) {
		f := read(t, conn)
		if f.Type == protocol.TypeAlert {
			continue // the loopback broker delivers them back
		}
		if f.Type != protocol.TypeAck {
			t.Fatalf("got %+v, want acks for %v", f, nonces)
		}
		acked[f.Nonce] = true
	}
	for _, n := range nonces {
		if !acked[n] {
			t.Errorf("no ack for %s (acks: %v)", n, acked)
		}
	}
}

// TestDataBeforeUpgrade: bytes sent before the server's 101 never reach the
// WebSocket reader unseen by the frame guard; the upgrade is refused. The
// same handshake without them upgrades.
func TestDataBeforeUpgrade(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	early := rawFrame(1, true, `{"type":"alert","text":"too early","nonce":"x"}`)
	if got := rawUpgrade(t, tr.url, nil); !bytes.HasPrefix(got, []byte("HTTP/1.1 101 ")) {
		t.Fatalf("the handshake alone: %q, want 101", got)
	}
	if got := rawUpgrade(t, tr.url, early); bytes.Contains(got, []byte(" 101 ")) {
		t.Fatalf("upgraded with data sent before the handshake: %q", got)
	}
}

// rawUpgrade sends a WebSocket handshake to url followed at once by extra
// and returns the server's answer, at least its headers.
func rawUpgrade(t *testing.T, wsURL string, extra []byte) []byte {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /" + strings.TrimPrefix(u.Path, "/") + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write(append([]byte(req), extra...)); err != nil {
		t.Fatal(err)
	}
	// Up to the end of the response's headers: an accepted upgrade keeps
	// the connection open, a refused one closes it.
	_ = nc.SetReadDeadline(time.Now().Add(waitFor))
	var got []byte
	buf := make([]byte, 512)
	for !bytes.Contains(got, []byte("\r\n\r\n")) {
		n, err := nc.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	return got
}
