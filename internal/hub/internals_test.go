package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestPublishTimeoutAndInflightBound runs the publish path on a fake clock:
// with a hung broker, a connection has at most a burst of publishes in
// flight, and each is answered `unavailable` exactly when the timeout ends.
func TestPublishTimeoutAndInflightBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 5 * time.Second
		broker := &switchable{hangs: true}
		broker.down.Store(true)
		r := New(Config{PublishTimeout: timeout, RateLimit: rate.Every(time.Hour), RateBurst: 3}, broker)
		c := newClient(r, nil, "test") // the publish path never touches the connection
		c.queue.claim()                // no writer: the test reads the replies itself

		for i := range 4 {
			c.handle(fmt.Appendf(nil, `{"type":"alert","nonce":"%d"}`, i))
		}
		if got := replyFrame(t, c); got.Code != protocol.CodeRateLimited || got.Nonce != "3" {
			t.Fatalf("fourth alert: %+v, want rate_limited: a burst is already in flight", got)
		}

		time.Sleep(timeout - time.Nanosecond)
		synctest.Wait()
		if n := len(c.replies); n != 0 {
			t.Fatalf("%d answers before the publish timeout", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		var nonces []string
		for range 3 {
			got := replyFrame(t, c)
			if got.Code != protocol.CodeUnavailable {
				t.Errorf("answer %+v, want unavailable", got)
			}
			nonces = append(nonces, got.Nonce)
		}
		slices.Sort(nonces)
		if !slices.Equal(nonces, []string{"0", "1", "2"}) {
			t.Errorf("unavailable for nonces %v, want 0 1 2", nonces)
		}
		if n := c.inflight.Load(); n != 0 {
			t.Errorf("%d publishes still in flight", n)
		}
	})
}

func replyFrame(t *testing.T, c *client) testkit.Frame {
	t.Helper()
	select {
	case b := <-c.replies:
		var f testkit.Frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		return f
	default:
		t.Fatal("no answer queued")
		return testkit.Frame{}
	}
}

// TestConcurrentDeliver calls Deliver from many goroutines at once, each
// alert twice (a redelivery racing the original): every client gets every
// alert exactly once.
func TestConcurrentDeliver(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	const clients, senders, each = 8, 8, 25
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i], _ = connect(t, tr.url)
	}
	payloads := make([][]byte, senders*each)
	for i := range payloads {
		payloads[i] = alertJSON(t, testID(i), "concurrent")
	}

	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for _, p := range payloads[s*each : (s+1)*each] {
				tr.Deliver(p)
			}
		})
		wg.Go(func() {
			for _, p := range payloads[s*each : (s+1)*each] {
				tr.Deliver(p)
			}
		})
	}
	wg.Wait()
	// A final marker: everything before it has been queued to every client.
	tr.Deliver(alertJSON(t, testID(len(payloads)), "marker"))

	for i, conn := range conns {
		wg.Go(func() {
			seen := map[string]bool{}
			for {
				f, err := tryRead(conn)
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				if f.Text == "marker" {
					break
				}
				if seen[f.ID] {
					t.Errorf("client %d: alert %s twice", i, f.ID)
				}
				seen[f.ID] = true
			}
			if len(seen) != len(payloads) {
				t.Errorf("client %d: %d alerts, want %d", i, len(seen), len(payloads))
			}
		})
	}
	wg.Wait()
	if got := count(t, tr.m.duplicates); got != float64(len(payloads)) {
		t.Errorf("duplicates = %v, want %d", got, len(payloads))
	}
}

// TestCloseGivesUpAtDeadline: a client that never answers the close frame
// cannot hold Close past its context.
func TestCloseGivesUpAtDeadline(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	connect(t, tr.url) // and never read again, so never answer the close
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tr.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("close = %v, want the context's deadline (the client never answers)", err)
	}
	testkit.Eventually(t, "the client to be dropped", func() bool { return tr.Clients() == 0 })
}

func TestMetricsRegistered(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	conn, _ := connect(t, tr.url)
	send(t, conn, `{"type":"alert","nonce":"m"}`)
	answer(t, conn, "m")

	mfs, err := tr.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{
		"skywatch_connections",
		"skywatch_alerts_published_total",
		"skywatch_alerts_received_total",
		"skywatch_alerts_delivered_total",
		"skywatch_alerts_duplicates_dropped_total",
		"skywatch_alerts_malformed_total",
		"skywatch_frames_dropped_total",
		"skywatch_slow_client_closes_total",
		"skywatch_upgrades_refused_total",
		"skywatch_errors_total",
		"skywatch_publish_duration_seconds",
	} {
		if !got[name] {
			t.Errorf("metric %s not registered", name)
		}
	}
	if n := count(t, tr.m.connections); n != 1 {
		t.Errorf("skywatch_connections = %v, want 1", n)
	}
	if n := count(t, tr.m.published); n != 1 {
		t.Errorf("skywatch_alerts_published_total = %v, want 1", n)
	}

	// Two relays on one registry share the series instead of panicking.
	New(Config{Registerer: tr.reg}, &loopback{})
}

// recorder is a slog.Handler that keeps records.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recorder) WithGroup(string) slog.Handler            { return h }
func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}

func TestNormalCloseLoggedQuietly(t *testing.T) {
	rec := &recorder{}
	tr := startHub(t, Config{Logger: slog.New(rec)}, &loopback{})
	conn, _ := connect(t, tr.url)
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "tab closed")
	if err := conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	if ce := closeError(t, conn); ce.Code != websocket.CloseGoingAway {
		t.Errorf("server answered %v, want the 1001 echoed", ce)
	}
	testkit.Eventually(t, "the client to be gone", func() bool { return tr.Clients() == 0 })

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var disconnects int
	for _, r := range rec.records {
		if r.Level > slog.LevelDebug {
			t.Errorf("logged at %v: %s", r.Level, r.Message)
		}
		if r.Message == "client disconnected" {
			disconnects++
		}
	}
	if disconnects != 1 {
		t.Errorf("%d disconnect lines, want 1", disconnects)
	}
}
