package hub

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestPumpNeverWaits: a pump writes to a client that reads nothing only
// what its socket takes, hands the rest to a writer goroutine and goes on
// to the next client at once; once the first client reads, it gets every
// frame intact and in order (the rest starts inside a frame), and a control
// frame written meanwhile comes after that frame, not inside it.
func TestPumpNeverWaits(t *testing.T) {
	tr := startHub(t, Config{MaxQueueBytes: 64 << 20, WriteWait: time.Minute}, &loopback{}, smallBuffers)
	stuck, _, err := dial(t, tr.url, nil, smallReadDialer())
	if err != nil {
		t.Fatal(err)
	}
	if hello := read(t, stuck); hello.Type != protocol.TypeHello {
		t.Fatalf("first frame %q, want hello", hello.Type)
	}
	prompt, _ := connect(t, tr.url)
	sc, pc := idleClient(t, tr.Hub, stuck), idleClient(t, tr.Hub, prompt)

	// 64 alerts of 4 kB: far more than the stuck client's socket buffers.
	const n = 64
	text := strings.Repeat("x", 4000)
	now := time.Now()
	for i := range n {
		f := textFrame(alertJSON(t, testID(i), text))
		for _, c := range []*client{sc, pc} {
			if start, ok := c.enqueue(f, now); !ok || start != (i == 0) {
				t.Fatalf("enqueue %d: start %v, ok %v; want a writer to start on the first only", i, start, ok)
			}
		}
	}
	done := make(chan struct{})
	go func() {
		pump([]*client{sc, pc})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("the pump waited on a client that reads nothing")
	}
	// The stuck client's socket holds part of a frame, its writer the rest.
	// A close written by gorilla now (as for an oversized client frame)
	// waits for the rest instead of landing inside that frame.
	g := sc.conn.NetConn().(*guardedConn)
	if g.partial.TryLock() {
		t.Fatal("nothing holds the guard's lock while a frame is half written")
	}
	closed := make(chan error, 1)
	go func() {
		_, err := g.Write(appendFrame(nil, websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseMessageTooBig, "")))
		closed <- err
	}()
	for _, conn := range []*websocket.Conn{prompt, stuck} {
		for i := range n {
			f := read(t, conn)
			if f.Type != protocol.TypeAlert || f.ID != testID(i) || f.Text != text {
				t.Fatalf("alert %d: got %s %s (%d bytes of text)", i, f.Type, f.ID, len(f.Text))
			}
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	_, err = tryRead(stuck)
	if ce, ok := errors.AsType[*websocket.CloseError](err); !ok || ce.Code != websocket.CloseMessageTooBig {
		t.Errorf("after the alerts: %v, want the close 1009", err)
	}
}

// idleClient returns the hub's client of conn once its writer has finished
// with the hello.
func idleClient(t *testing.T, h *Hub, conn *websocket.Conn) *client {
	t.Helper()
	var found *client
	testkit.Eventually(t, "the client's writer to go idle", func() bool {
		h.mu.RLock()
		defer h.mu.RUnlock()
		for c := range h.clients {
			if c.conn.RemoteAddr().String() == conn.LocalAddr().String() {
				c.queue.mu.Lock()
				defer c.queue.mu.Unlock()
				if !c.queue.running {
					found = c
					return true
				}
			}
		}
		return false
	})
	return found
}
