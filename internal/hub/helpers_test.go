package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// waitFor bounds every wait in these tests: the test kit's hang detector.
const waitFor = testkit.Wait

// loopback is the Publisher of a cluster of relays in one process: it hands
// every published alert to each relay's Deliver, as the broker's
// subscriptions would. copies > 1 simulates at-least-once redelivery.
type loopback struct {
	mu        sync.Mutex
	relays    []*Hub
	copies    int
	published atomic.Int64
}

func (l *loopback) add(h *Hub) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.relays = append(l.relays, h)
}

func (l *loopback) Publish(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.published.Add(1)
	l.mu.Lock()
	relays := append([]*Hub(nil), l.relays...)
	l.mu.Unlock()
	for range max(l.copies, 1) {
		for _, r := range relays {
			r.Deliver(data)
		}
	}
	return nil
}

// switchable is a broker that can be taken down: while down, Publish either
// fails at once or blocks until its context ends (a hung broker).
type switchable struct {
	loopback
	down  atomic.Bool
	hangs bool
}

func (s *switchable) Publish(ctx context.Context, data []byte) error {
	if s.down.Load() {
		if s.hangs {
			<-ctx.Done()
			return fmt.Errorf("publish: %w", ctx.Err())
		}
		return errors.New("publish: broker unreachable")
	}
	return s.loopback.Publish(ctx, data)
}

// testHub is a relay served over real loopback TCP.
type testHub struct {
	*Hub
	srv *httptest.Server
	url string // ws://...
	reg *prometheus.Registry
}

// startHub serves a new hub with cfg. If pub is a *loopback (or embeds
// one) the relay joins it, so its clients' alerts come back through Deliver.
func startHub(t *testing.T, cfg Config, pub Publisher, opts ...func(*httptest.Server)) *testHub {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	r := New(cfg, pub)
	switch p := pub.(type) {
	case *loopback:
		p.add(r)
	case *switchable:
		p.add(r)
	}
	srv := httptest.NewUnstartedServer(r)
	for _, o := range opts {
		o(srv)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		// Runs before srv.Close: http.Server does not know about hijacked
		// connections, the relay closes them.
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("close hub: %v", err)
		}
	})
	return &testHub{Hub: r, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http"), reg: reg}
}

// dial connects to url with header, using d (nil: a plain dialer), and
// closes the connection when the test ends.
func dial(t *testing.T, url string, header http.Header, d *websocket.Dialer) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: waitFor}
	}
	conn, resp, err := d.Dial(url, header)
	if conn != nil {
		t.Cleanup(func() { conn.Close() })
	}
	return conn, resp, err
}

// connect dials url, reads the hello frame, and returns both.
func connect(t *testing.T, url string) (*websocket.Conn, testkit.Frame) {
	t.Helper()
	conn, _, err := dial(t, url, nil, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	hello := read(t, conn)
	if hello.Type != protocol.TypeHello {
		t.Fatalf("first frame: got type %q, want hello", hello.Type)
	}
	return conn, hello
}

// read reads one text frame and decodes it.
func read(t *testing.T, conn *websocket.Conn) testkit.Frame {
	t.Helper()
	f, err := tryRead(conn)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return f
}

// tryRead is read for goroutines other than the test's, which must not call
// t.Fatal.
func tryRead(conn *websocket.Conn) (testkit.Frame, error) { return testkit.ReadFrame(conn, waitFor) }

func send(t *testing.T, conn *websocket.Conn, msg string) {
	t.Helper()
	_ = conn.SetWriteDeadline(time.Now().Add(waitFor))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// answer reads until the ack or error frame that answers nonce, and returns
// it together with the alerts read meanwhile.
func answer(t *testing.T, conn *websocket.Conn, nonce string) (testkit.Frame, []testkit.Frame) {
	t.Helper()
	var alerts []testkit.Frame
	for {
		f := read(t, conn)
		switch f.Type {
		case protocol.TypeAlert:
			alerts = append(alerts, f)
		case protocol.TypeAck, protocol.TypeError:
			if f.Nonce != nonce {
				t.Fatalf("answer for nonce %q, want %q: %+v", f.Nonce, nonce, f)
			}
			return f, alerts
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
}

// alertWithID reads until the alert with id, unless it is already in seen.
func alertWithID(t *testing.T, conn *websocket.Conn, id string, seen []testkit.Frame) testkit.Frame {
	t.Helper()
	for _, f := range seen {
		if f.ID == id {
			return f
		}
	}
	for {
		f := read(t, conn)
		if f.Type == protocol.TypeAlert && f.ID == id {
			return f
		}
		if f.Type != protocol.TypeAlert {
			t.Fatalf("waiting for alert %s: unexpected frame %+v", id, f)
		}
	}
}

// closeError reads until the connection ends and returns the close error.
func closeError(t *testing.T, conn *websocket.Conn) *websocket.CloseError {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("connection ended with %v, want a close frame", err)
			}
			return ce
		}
	}
}

// count reads a counter or gauge.
func count(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("not a counter or gauge: %v", c)
	return 0
}

// alertJSON builds a valid broker message, as another VM would publish it.
func alertJSON(t *testing.T, id, text string) []byte {
	t.Helper()
	b, err := json.Marshal(protocol.Alert{
		Type: protocol.TypeAlert, ID: id, Text: text,
		Origin: protocol.Origin{VM: "other-vm", Region: "syd"},
		SentAt: time.Now().UTC().Format(protocol.SentAtLayout),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testID(i int) string { return fmt.Sprintf("%032x", i+1) }

// smallBuffers shrinks the server's socket send buffers, so a client that
// stops reading backs up into its queue after a few kilobytes instead of
// megabytes.
func smallBuffers(srv *httptest.Server) {
	srv.Listener = smallBufListener{srv.Listener}
}

type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// smallReadDialer dials with a small receive buffer, set before connecting
// so the advertised window is small from the start.
func smallReadDialer() *websocket.Dialer {
	nd := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	return &websocket.Dialer{HandshakeTimeout: waitFor, NetDialContext: nd.DialContext}
}
