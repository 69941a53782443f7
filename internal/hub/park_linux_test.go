//go:build linux

package hub

import (
	"runtime"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestParkedConnections: idle connections hold no goroutine, and a parked
// one still gets everything: broadcasts, answers to what it sends, its
// hang-up noticed.
func TestParkedConnections(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	const n = 50
	before := runtime.NumGoroutine()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i], _ = connect(t, tr.url)
	}
	// The writers end once the hellos are out; the readers park. A few
	// goroutines of net/http and the parking lot's come and go.
	testkit.Eventually(t, "idle connections to hold no goroutine", func() bool {
		return runtime.NumGoroutine() < before+n/5
	})

	// A parked client that sends is read and answered...
	send(t, conns[0], `{"type":"alert","text":"from a parked client","nonce":"p"}`)
	got, alerts := answer(t, conns[0], "p")
	if got.Type != protocol.TypeAck {
		t.Fatalf("answer %+v, want ack", got)
	}
	// ...and every parked client receives the alert.
	for i, conn := range conns {
		if i == 0 && len(alerts) > 0 {
			continue // it came before the ack
		}
		if f := read(t, conn); f.Type != protocol.TypeAlert || f.ID != got.ID {
			t.Fatalf("client %d: %+v, want the alert %s", i, f, got.ID)
		}
	}

	// A parked client that hangs up is gone.
	testkit.Eventually(t, "the readers to park again", func() bool {
		return runtime.NumGoroutine() < before+n/5
	})
	for _, conn := range conns[:n/2] {
		conn.Close()
	}
	testkit.Eventually(t, "the clients that hung up to be gone", func() bool { return tr.Clients() == n-n/2 })
}
