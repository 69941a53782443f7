package hub

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

func TestHello(t *testing.T) {
	tr := startHub(t, Config{VM: "vm-1", Region: "ams", RateLimit: 2, RateBurst: 7}, &loopback{})
	_, hello := connect(t, tr.url)
	if hello.VM != "vm-1" || hello.Region != "ams" || hello.Protocol != 1 {
		t.Errorf("hello = %+v, want vm-1, ams, protocol 1", hello)
	}
	lim := hello.Limits
	if lim.Text != 280 || lim.Nonce != 64 || lim.Frame != DefaultReadLimit || lim.Burst != 7 || lim.Rate == nil || *lim.Rate != 2 {
		t.Errorf("hello limits = %+v", lim)
	}
}

// TestFanOut sends one alert from a client of VM a and checks that every
// client of both VMs, sender included, gets it exactly once, although the
// broker delivers every message twice.
func TestFanOut(t *testing.T) {
	broker := &loopback{copies: 2}
	a := startHub(t, Config{VM: "vm-a", Region: "ams"}, broker)
	b := startHub(t, Config{VM: "vm-b", Region: "syd"}, broker)

	const perVM = 25
	conns := make([]*websocket.Conn, 2*perVM)
	var wg sync.WaitGroup
	for i := range conns {
		u := a.url
		if i%2 == 1 {
			u = b.url
		}
		wg.Go(func() {
			c, _, err := dial(t, u, nil, nil)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			if f, err := tryRead(c); err != nil || f.Type != protocol.TypeHello {
				t.Errorf("hello: %+v, %v", f, err)
			}
			conns[i] = c
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	sender := conns[0] // on a

	send(t, sender, `{"type":"alert","text":"👽 over Amsterdam","nonce":"n1"}`)
	ack, seen := answer(t, sender, "n1")
	if ack.Type != protocol.TypeAck || len(ack.ID) != 32 {
		t.Fatalf("answer = %+v, want an ack with a 32-digit id", ack)
	}
	// A second alert marks the end: if anyone got the first one twice, the
	// duplicate arrives before the marker.
	send(t, sender, `{"type":"alert","text":"marker","nonce":"n2"}`)
	ack2, seen2 := answer(t, sender, "n2")
	seen = append(seen, seen2...)

	want := func(f testkit.Frame) {
		t.Helper()
		if f.Type != protocol.TypeAlert || f.ID != ack.ID || f.Text != "👽 over Amsterdam" ||
			f.Origin != (protocol.Origin{VM: "vm-a", Region: "ams"}) {
			t.Errorf("alert = %+v, want id %s from vm-a/ams", f, ack.ID)
		}
		if _, err := time.Parse(time.RFC3339, f.SentAt); err != nil {
			t.Errorf("sent_at %q: %v", f.SentAt, err)
		}
	}
	// The sender: the first alert, then the marker, nothing else.
	got := append([]testkit.Frame(nil), seen...)
	for len(got) < 2 {
		got = append(got, read(t, sender))
	}
	want(got[0])
	if got[1].ID != ack2.ID {
		t.Errorf("sender's second alert = %+v, want the marker %s", got[1], ack2.ID)
	}

	for i, c := range conns[1:] {
		wg.Go(func() {
			first, err := tryRead(c)
			if err != nil {
				t.Errorf("client %d: %v", i+1, err)
				return
			}
			want(first)
			second, err := tryRead(c)
			if err != nil || second.ID != ack2.ID {
				t.Errorf("client %d: second frame %+v (%v), want the marker %s", i+1, second, err, ack2.ID)
			}
		})
	}
	wg.Wait()

	if got := broker.published.Load(); got != 2 {
		t.Errorf("published %d alerts, want 2", got)
	}
	for _, tr := range []*testHub{a, b} {
		if got := count(t, tr.m.duplicates); got != 2 {
			t.Errorf("%s: duplicates dropped = %v, want 2", tr.cfg.VM, got)
		}
		if got := count(t, tr.m.delivered); got != 2*perVM {
			t.Errorf("%s: delivered = %v, want %d", tr.cfg.VM, got, 2*perVM)
		}
	}
}

func TestDeliverDropsDuplicatesAndMalformed(t *testing.T) {
	tr := startHub(t, Config{DedupSize: 2}, &loopback{})
	conn, _ := connect(t, tr.url)

	tr.Deliver(alertJSON(t, testID(1), "one"))
	tr.Deliver(alertJSON(t, testID(1), "one again"))
	tr.Deliver([]byte(`{"type":"alert","id":"nothex","text":"x","origin":{"vm":"v","region":"r"},"sent_at":"2026-01-01T00:00:00Z"}`))
	tr.Deliver([]byte(`not json`))
	tr.Deliver(alertJSON(t, testID(2), "two"))
	tr.Deliver(alertJSON(t, testID(3), "three")) // pushes id 1 out of a memory of 2
	tr.Deliver(alertJSON(t, testID(1), "one, long after"))

	for _, want := range []string{"one", "two", "three", "one, long after"} {
		if f := read(t, conn); f.Text != want {
			t.Fatalf("got %+v, want text %q", f, want)
		}
	}
	if got := count(t, tr.m.duplicates); got != 1 {
		t.Errorf("duplicates = %v, want 1", got)
	}
	if got := count(t, tr.m.malformed); got != 2 {
		t.Errorf("malformed = %v, want 2", got)
	}
	if got := count(t, tr.m.received); got != 7 {
		t.Errorf("received = %v, want 7", got)
	}
}

func TestForgedFieldsIgnored(t *testing.T) {
	broker := &loopback{}
	tr := startHub(t, Config{VM: "honest", Region: "ams"}, broker)
	conn, _ := connect(t, tr.url)

	forgedID := strings.Repeat("a", 32)
	send(t, conn, `{"type":"alert","text":"hi","nonce":"f","id":"`+forgedID+`",`+
		`"origin":{"vm":"evil","region":"nowhere"},"sent_at":"1999-12-31T23:59:59Z","ID":"`+forgedID+`"}`)
	ack, seen := answer(t, conn, "f")
	if ack.Type != protocol.TypeAck || ack.ID == forgedID {
		t.Fatalf("answer = %+v, want an ack with a fresh id", ack)
	}
	f := alertWithID(t, conn, ack.ID, seen)
	if f.Origin != (protocol.Origin{VM: "honest", Region: "ams"}) {
		t.Errorf("origin = %+v, want honest/ams", f.Origin)
	}
	sent, err := time.Parse(time.RFC3339, f.SentAt)
	if err != nil || sent.Year() < 2020 {
		t.Errorf("sent_at = %q (%v), want the relay's clock", f.SentAt, err)
	}
}

func TestValidation(t *testing.T) {
	tr := startHub(t, Config{RateBurst: 100}, &loopback{})
	conn, _ := connect(t, tr.url)

	// Every bad frame of the shared table gets its error frame and leaves
	// the connection usable.
	invalid := 0
	for _, tc := range testkit.BadFrames {
		t.Run(tc.Name, func(t *testing.T) {
			if len(tc.Frame) > DefaultReadLimit {
				t.Fatalf("test frame is %d bytes, over the read limit", len(tc.Frame))
			}
			send(t, conn, tc.Frame)
			got, seen := answer(t, conn, tc.Nonce)
			if got.Type != protocol.TypeError || got.Code != tc.Code || got.Message == "" {
				t.Fatalf("answer = %s, want error %s with a message", got, tc.Code)
			}
			if len(seen) > 0 {
				t.Errorf("alerts broadcast for a bad frame: %v", seen)
			}
		})
		if tc.Code == protocol.CodeInvalid {
			invalid++
		}
	}

	// Frames at the edges of the rules are accepted.
	astral := strings.Repeat("👽", protocol.MaxTextRunes) // 280 characters, 1120 bytes
	escaped := strings.Repeat(`\uD83D\uDC7D`, protocol.MaxTextRunes)
	for _, tt := range []struct {
		name, frame, nonce string
		text               string // the alert's text once accepted
	}{
		{"text 280 characters", `{"type":"alert","text":"` + astral + `","nonce":"280"}`, "280", astral},
		{"text 280 escaped surrogate pairs and a 64-character nonce",
			`{"type":"alert","text":"` + escaped + `","nonce":"` + strings.Repeat("n", 64) + `"}`,
			strings.Repeat("n", 64), astral},
		{"text omitted", `{"type":"alert","nonce":"o"}`, "o", protocol.DefaultText},
		{"text null", `{"type":"alert","text":null,"nonce":"0"}`, "0", protocol.DefaultText},
		{"text blank", `{"type":"alert","text":"  \n","nonce":"b"}`, "b", protocol.DefaultText},
		{"no nonce", `{"type":"alert","text":"quiet"}`, "", "quiet"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.frame) > DefaultReadLimit {
				t.Fatalf("test frame is %d bytes, over the read limit", len(tt.frame))
			}
			send(t, conn, tt.frame)
			got, seen := answer(t, conn, tt.nonce)
			if got.Type != protocol.TypeAck {
				t.Fatalf("answer = %s, want ack", got)
			}
			if a := alertWithID(t, conn, got.ID, seen); a.Text != tt.text {
				t.Errorf("alert text = %q, want %q", a.Text, tt.text)
			}
		})
	}
	// Every case above was answered on the same connection: it stayed usable.
	if got := count(t, tr.m.errors.WithLabelValues(protocol.CodeInvalid)); got != float64(invalid) {
		t.Errorf("invalid errors counted = %v, want %d", got, invalid)
	}
}

func TestReadLimitCloses1009(t *testing.T) {
	tr := startHub(t, Config{ReadLimit: 512}, &loopback{})
	conn, _ := connect(t, tr.url)

	// Exactly at the limit is fine (padding is JSON white space).
	frame := `{"type":"alert","nonce":"edge"}`
	send(t, conn, frame+strings.Repeat(" ", 512-len(frame)))
	if got, _ := answer(t, conn, "edge"); got.Type != protocol.TypeAck {
		t.Fatalf("answer = %+v, want ack", got)
	}

	send(t, conn, `{"type":"alert","text":"`+strings.Repeat("x", 600)+`"}`)
	if ce := closeError(t, conn); ce.Code != websocket.CloseMessageTooBig {
		t.Errorf("close = %v, want 1009", ce)
	}
	conn.Close() // ends the server's drain of the oversized frame
	testkit.Eventually(t, "the client to be gone", func() bool { return tr.Clients() == 0 })
}

func TestBinaryFrameCloses1003(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	conn, _ := connect(t, tr.url)
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"alert"}`)); err != nil {
		t.Fatal(err)
	}
	ce := closeError(t, conn)
	if ce.Code != websocket.CloseUnsupportedData || ce.Text != protocol.CloseBinaryReason {
		t.Errorf("close = %v, want 1003 %q", ce, protocol.CloseBinaryReason)
	}
	testkit.Eventually(t, "the client to be gone", func() bool { return tr.Clients() == 0 })
}

func TestRateLimit(t *testing.T) {
	broker := &loopback{}
	const burst = 3
	// A bucket that does not refill during the test makes the count exact.
	tr := startHub(t, Config{RateLimit: rate.Every(time.Hour), RateBurst: burst}, broker)
	conn, _ := connect(t, tr.url)

	const flood = 20
	for i := range flood {
		send(t, conn, fmt.Sprintf(`{"type":"alert","nonce":"%d"}`, i))
	}
	answers := map[string]int{}
	for answered := 0; answered < flood; {
		f := read(t, conn)
		switch f.Type {
		case protocol.TypeAck:
			answers[protocol.TypeAck]++
		case protocol.TypeError:
			answers[f.Code]++
		case protocol.TypeAlert:
			continue
		}
		answered++
	}
	acks := answers[protocol.TypeAck]
	if acks < 1 || acks > burst || acks+answers[protocol.CodeRateLimited] != flood {
		t.Errorf("answers = %v, want 1..%d acks and the rest rate_limited", answers, burst)
	}
	if got := broker.published.Load(); got != int64(acks) {
		t.Errorf("published %d alerts, want %d (one per ack)", got, acks)
	}

	// The bucket is per connection.
	other, _ := connect(t, tr.url)
	send(t, other, `{"type":"alert","nonce":"fresh"}`)
	if got, _ := answer(t, other, "fresh"); got.Type != protocol.TypeAck {
		t.Errorf("another connection's alert: %+v, want ack", got)
	}
}

func TestUnavailable(t *testing.T) {
	for _, hangs := range []bool{false, true} {
		t.Run(fmt.Sprintf("hangs=%v", hangs), func(t *testing.T) {
			broker := &switchable{hangs: hangs}
			tr := startHub(t, Config{PublishTimeout: 200 * time.Millisecond}, broker)
			conn, _ := connect(t, tr.url)

			broker.down.Store(true)
			send(t, conn, `{"type":"alert","nonce":"down"}`)
			// A hung broker only returns when the relay's timeout ends its
			// context, so this answer proves the timeout works.
			if got, _ := answer(t, conn, "down"); got.Type != protocol.TypeError || got.Code != protocol.CodeUnavailable {
				t.Fatalf("answer = %+v, want unavailable", got)
			}

			broker.down.Store(false)
			send(t, conn, `{"type":"alert","nonce":"up"}`)
			got, seen := answer(t, conn, "up")
			if got.Type != protocol.TypeAck {
				t.Fatalf("after recovery: %+v, want ack", got)
			}
			alertWithID(t, conn, got.ID, seen)
			if n := count(t, tr.m.errors.WithLabelValues(protocol.CodeUnavailable)); n != 1 {
				t.Errorf("unavailable errors = %v, want 1", n)
			}
		})
	}
}

// TestSlowClient fills a non-reading client's socket and queue: it must be
// closed with 1008 while a reading client gets every alert and Deliver keeps
// returning.
func TestSlowClient(t *testing.T) {
	tr := startHub(t, Config{MaxQueueBytes: 1024}, &loopback{}, smallBuffers)
	slow, _, err := dial(t, tr.url, nil, smallReadDialer())
	if err != nil {
		t.Fatal(err)
	}
	// The hello is written only once the client is registered, so after
	// reading it the slow client misses no alert. Then it stops reading.
	if f := read(t, slow); f.Type != protocol.TypeHello {
		t.Fatalf("slow client's first frame: %+v", f)
	}
	fast, _ := connect(t, tr.url)

	// Each alert is read by the fast client before the next is delivered,
	// so only the slow client falls behind.
	delivered := 0
	for ; delivered < 20000 && count(t, tr.m.slowCloses) == 0; delivered++ {
		tr.Deliver(alertJSON(t, testID(delivered), "ping"))
		if f := read(t, fast); f.ID != testID(delivered) {
			t.Fatalf("fast client got %+v, want alert %s", f, testID(delivered))
		}
	}
	if count(t, tr.m.slowCloses) != 1 {
		t.Fatalf("slow client not closed after %d alerts", delivered)
	}
	t.Logf("slow client closed after %d alerts", delivered)
	for i := delivered; i < delivered+10; i++ {
		tr.Deliver(alertJSON(t, testID(i), "still flowing"))
		if f := read(t, fast); f.ID != testID(i) {
			t.Fatalf("fast client after the slow close: %+v, want alert %s", f, testID(i))
		}
	}
	if got := count(t, tr.m.slowCloses); got != 1 {
		t.Errorf("slow closes = %v, want 1", got)
	}

	// The slow client finally reads: a prefix of the alerts in order, then
	// the close frame with the reason.
	for i := 0; ; i++ {
		_ = slow.SetReadDeadline(time.Now().Add(waitFor))
		_, data, err := slow.ReadMessage()
		if err != nil {
			ce, ok := err.(*websocket.CloseError)
			if !ok || ce.Code != websocket.ClosePolicyViolation || ce.Text != protocol.CloseTooSlowReason {
				t.Fatalf("slow client ended with %v, want close 1008 %q", err, protocol.CloseTooSlowReason)
			}
			if i >= delivered {
				t.Errorf("slow client got %d of %d alerts, want fewer", i, delivered)
			}
			break
		}
		if !strings.Contains(string(data), testID(i)) {
			t.Fatalf("slow client's alert %d = %s, want id %s", i, data, testID(i))
		}
	}
	testkit.Eventually(t, "the slow client to be gone", func() bool { return tr.Clients() == 1 })
}

func TestCloseSends1012AndRefusesNewClients(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	const n = 20
	closes := make(chan error, n)
	for range n {
		conn, _ := connect(t, tr.url)
		go func() {
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					closes <- err
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := tr.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	for range n {
		err := <-closes
		if !websocket.IsCloseError(err, websocket.CloseServiceRestart) || err.(*websocket.CloseError).Text != protocol.CloseRestartReason {
			t.Errorf("client ended with %v, want 1012 %q", err, protocol.CloseRestartReason)
		}
	}
	if got := tr.Clients(); got != 0 {
		t.Errorf("clients after close = %d", got)
	}
	_, resp, err := dial(t, tr.url, nil, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after close: %v, %v; want 503", resp, err)
	}
}

func TestOrigin(t *testing.T) {
	tests := []struct {
		name    string
		allowed []string
		origin  string // "same" means the server's own host
		ok      bool
	}{
		{"default same host", nil, "same", true},
		{"default foreign", nil, "https://evil.example", false},
		{"default no origin", nil, "", true},
		{"listed", []string{"https://skywatch.example"}, "https://skywatch.example", true},
		{"listed case and slash", []string{"https://SkyWatch.example/"}, "https://skywatch.example", true},
		{"listed other scheme", []string{"https://skywatch.example"}, "http://skywatch.example", false},
		{"not listed", []string{"https://skywatch.example"}, "https://evil.example", false},
		{"listed host", []string{"skywatch.example"}, "https://skywatch.example", true},
		{"list excludes same host", []string{"https://skywatch.example"}, "same", false},
		{"list and no origin", []string{"https://skywatch.example"}, "", true},
		{"star", []string{"*"}, "https://anything.example", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := startHub(t, Config{AllowedOrigins: tt.allowed}, &loopback{})
			h := http.Header{}
			switch tt.origin {
			case "":
			case "same":
				u, _ := url.Parse(tr.srv.URL)
				h.Set("Origin", "http://"+u.Host)
			default:
				h.Set("Origin", tt.origin)
			}
			conn, resp, err := dial(t, tr.url, h, nil)
			if tt.ok {
				if err != nil {
					t.Fatalf("dial: %v, want success", err)
				}
				if f := read(t, conn); f.Type != protocol.TypeHello {
					t.Errorf("first frame %+v", f)
				}
				return
			}
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("dial: %v, %v; want 403", resp, err)
			}
		})
	}
}

func TestPing(t *testing.T) {
	// Pings every 0.75s; each pong must come back within the 0.75s left
	// before the read deadline, generous even on a loaded machine. A short
	// MaxQueueAge keeps that deadline at PongWait (a long one extends it:
	// TestLatePongsKeepClient).
	const pongWait = 1500 * time.Millisecond
	cfg := Config{PongWait: pongWait, MaxQueueAge: pongWait / 10}

	t.Run("answering client stays", func(t *testing.T) {
		tr := startHub(t, cfg, &loopback{})
		conn, _ := connect(t, tr.url)
		pings := make(chan struct{}, 10)
		conn.SetPingHandler(func(data string) error {
			pings <- struct{}{}
			return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(waitFor))
		})
		frames := make(chan testkit.Frame, 1)
		go func() {
			for {
				f, err := tryRead(conn) // reading is what answers pings
				if err != nil {
					close(frames)
					return
				}
				frames <- f
			}
		}()
		// Three pings span 1.5 × PongWait: without the pongs extending the
		// read deadline the server would have dropped the client by now.
		for range 3 {
			select {
			case <-pings:
			case <-time.After(waitFor):
				t.Fatal("no ping")
			}
		}
		tr.Deliver(alertJSON(t, testID(1), "still here?"))
		if f, ok := <-frames; !ok || f.ID != testID(1) {
			t.Fatalf("after pings: %+v (open %v), want the alert", f, ok)
		}
	})

	t.Run("silent client is dropped", func(t *testing.T) {
		tr := startHub(t, cfg, &loopback{})
		conn, _ := connect(t, tr.url)
		conn.SetPingHandler(func(string) error { return nil }) // never pongs
		_ = conn.SetReadDeadline(time.Now().Add(waitFor))
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				break // the server hung up
			}
		}
		testkit.Eventually(t, "the client to be gone", func() bool { return tr.Clients() == 0 })
	})
}

func TestDedupBounded(t *testing.T) {
	d := newDedup(3)
	ids := [][16]byte{{1}, {2}, {3}, {4}}
	for _, id := range ids {
		if !d.add(id) {
			t.Fatalf("%v new, reported seen", id)
		}
	}
	if d.add(ids[3]) || d.add(ids[2]) {
		t.Error("recent id reported new")
	}
	if !d.add(ids[0]) {
		t.Error("evicted id reported seen")
	}
	if len(d.seen) != 3 || len(d.ring) != 3 {
		t.Errorf("dedup holds %d ids (ring %d), want 3", len(d.seen), len(d.ring))
	}
}
