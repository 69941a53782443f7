package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/reqlog"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// statusFrame is a server frame read with the fields the status tests need.
type statusFrame struct {
	Type   string   `json:"type"`
	Ready  *bool    `json:"ready"`
	Relays []string `json:"relays"`
	ID     string   `json:"id"`
}

func readStatus(t *testing.T, conn *websocket.Conn) statusFrame {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	_, data, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f statusFrame
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return f
}

func wantStatus(t *testing.T, conn *websocket.Conn, ready bool) {
	t.Helper()
	f := readStatus(t, conn)
	if f.Type != protocol.TypeStatus || f.Ready == nil || *f.Ready != ready {
		t.Fatalf("got %+v, want a status frame with ready=%v", f, ready)
	}
}

// A relay that nobody tells otherwise is ready and sends no status frame;
// each change of readiness reaches every client once, in order; repeating
// the same readiness sends nothing.
func TestSetReadyBroadcastsChanges(t *testing.T) {
	lb := &loopback{}
	r := startHub(t, Config{VM: "vm-a"}, lb)
	var conns []*websocket.Conn
	for range 3 {
		c, _ := connect(t, r.url)
		conns = append(conns, c)
	}
	if !r.Ready() {
		t.Fatal("a new hub: want Ready() true")
	}

	r.SetReady(false)
	r.SetReady(false) // no change: no frame
	for _, c := range conns {
		wantStatus(t, c, false)
	}
	r.SetReady(true)
	r.SetReady(true)
	for _, c := range conns {
		// The next frame is ready=true, not a second ready=false.
		wantStatus(t, c, true)
	}

	// After the status frames, alerts flow as before: the next frame is the
	// alert, so no stray status frame was queued in between.
	lb.Publish(context.Background(), alertJSON(t, testID(1), "after"))
	for _, c := range conns {
		if f := readStatus(t, c); f.Type != protocol.TypeAlert || f.ID != testID(1) {
			t.Fatalf("got %+v, want alert %s", f, testID(1))
		}
	}
}

// A client that connects while the relay is not ready hears so right after
// the hello, before anything else; one that connects after it recovered
// gets no status frame.
func TestStatusAfterHelloWhileNotReady(t *testing.T) {
	lb := &loopback{}
	r := startHub(t, Config{}, lb)
	r.SetReady(false)

	c, _ := connect(t, r.url) // reads the hello
	wantStatus(t, c, false)

	r.SetReady(true)
	wantStatus(t, c, true)

	c2, _ := connect(t, r.url)
	lb.Publish(context.Background(), alertJSON(t, testID(2), "x"))
	if f := readStatus(t, c2); f.Type != protocol.TypeAlert {
		t.Fatalf("a client of a ready relay: got %+v first after the hello, want the alert", f)
	}
}

// FollowReadiness reports the function's value at once and each change
// after, and stops when its context ends.
func TestFollowReadiness(t *testing.T) {
	r := startHub(t, Config{}, &loopback{})
	c, _ := connect(t, r.url)

	var ready atomic.Bool // starts false, like a feed at boot
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.FollowReadiness(ctx, ready.Load, 5*time.Millisecond)
	}()
	wantStatus(t, c, false)
	ready.Store(true)
	wantStatus(t, c, true)
	ready.Store(false)
	wantStatus(t, c, false)

	cancel()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("FollowReadiness did not return after its context ended")
	}
	ready.Store(true)
	time.Sleep(50 * time.Millisecond) // ten intervals: a running poller would have noticed
	if r.Ready() {
		t.Error("after FollowReadiness returned, the hub still followed the function")
	}
}

// SetReady from many goroutines while clients come and go: no race, no
// block, and every client ends up told the final state (run with -race).
func TestSetReadyConcurrent(t *testing.T) {
	r := startHub(t, Config{}, &loopback{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				r.SetReady((i+j)%2 == 0)
			}
		})
		wg.Go(func() {
			// Not connect: t.Fatal belongs to the test's goroutine.
			c, _, err := (&websocket.Dialer{HandshakeTimeout: waitFor}).Dial(r.url, nil)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = tryRead(c)
			c.Close()
		})
	}
	wg.Wait()
	r.SetReady(true)
	r.SetReady(false)
	c, _ := connect(t, r.url)
	wantStatus(t, c, false)
}

// The hello lists the fallback relays the configuration names, and only
// when there are some (v1 clients see the hello they always did).
func TestHelloListsRelays(t *testing.T) {
	relays := []string{"ws://localhost:8082/ws", "ws://localhost:8083/ws"}
	r := startHub(t, Config{Relays: relays}, &loopback{})
	conn, _, err := dial(t, r.url, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := readStatus(t, conn); f.Type != protocol.TypeHello || strings.Join(f.Relays, ",") != strings.Join(relays, ",") {
		t.Errorf("hello %+v: want relays %v", f, relays)
	}
	if got := strings.Join(r.Relays(), ","); got != strings.Join(relays, ",") {
		t.Errorf("Relays() = %s, want %v", got, relays)
	}

	plain := startHub(t, Config{}, &loopback{})
	conn2, _, err := dial(t, plain.url, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn2.SetReadDeadline(time.Now().Add(waitFor))
	_, data, err := conn2.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("relays")) {
		t.Errorf("hello without relays configured: %s, want no relays key", data)
	}
}

// A refused origin is logged once, saying what to set, with the request's
// Origin cut short.
func TestRefusedOriginLogSaysWhatToSet(t *testing.T) {
	var buf testkit.SyncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	r := startHub(t, Config{AllowedOrigins: []string{"http://localhost:8081"}, Logger: log}, &loopback{})

	long := "http://evil.example/" + strings.Repeat("a", 5000)
	_, resp, err := dial(t, r.url, http.Header{"Origin": {long}}, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial with a foreign origin: got %v %v, want 403", resp, err)
	}
	testkit.Eventually(t, "the refused-origin log line", func() bool { return strings.Contains(buf.String(), "origin refused") })
	out := buf.String()
	for _, want := range []string{"ALLOWED_ORIGINS", "http://evil.example/aaa", "allowed=http://localhost:8081"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q: want it to contain %q", out, want)
		}
	}
	if strings.Contains(out, strings.Repeat("a", reqlog.MaxValue+1)) {
		t.Errorf("log holds more than %d bytes of the Origin header: %d bytes in all", reqlog.MaxValue, len(out))
	}

	// An allowed origin is not logged as refused.
	buf.Reset()
	if _, _, err := dial(t, r.url, http.Header{"Origin": {"http://localhost:8081"}}, nil); err != nil {
		t.Fatalf("dial with an allowed origin: %v", err)
	}
	if strings.Contains(buf.String(), "refused") {
		t.Errorf("allowed origin logged as refused: %s", buf.String())
	}
}
