package hub

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/reqlog"
)

// status is the readiness the hub has told its clients. A hub starts ready:
// one that nobody tells otherwise (tests, or a broker without a feed) sends
// no status frames at all, so v1 clients see exactly the frames they did.
type status struct {
	// mu orders SetReady calls, so the frames reach clients in the order the
	// changes happened. down itself is guarded by Hub.mu, because register
	// reads it while adding a client.
	mu   sync.Mutex
	down bool
}

var (
	readyFrame    = textFrame(protocol.Encode(protocol.Status{Type: protocol.TypeStatus, Ready: true}))
	notReadyFrame = textFrame(protocol.Encode(protocol.Status{Type: protocol.TypeStatus, Ready: false}))
)

// SetReady tells every client whether this relay can deliver alerts right
// now, with a status frame, when that changes. A page uses it to say
// "connected, but alerts cannot get through" before anyone presses the
// button. Clients that connect while the relay is not ready get the frame
// right after their hello. Like Deliver it never blocks on a client.
func (h *Hub) SetReady(ready bool) {
	h.status.mu.Lock()
	defer h.status.mu.Unlock()
	h.mu.Lock()
	changed := h.status.down == ready
	h.status.down = !ready
	h.mu.Unlock()
	if !changed {
		return
	}
	h.log.Info("readiness sent to clients", "ready", ready)
	f := readyFrame
	if !ready {
		f = notReadyFrame
	}
	// A client that registers between the change above and this loop gets
	// the frame twice (once from greetStatus); the same frame twice is
	// harmless, a missed one would not be.
	// Not an alert: not counted as one delivered.
	h.fanOut(f)
}

// Ready reports the readiness last given to SetReady (true if never).
func (h *Hub) Ready() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return !h.status.down
}

// FollowReadiness calls SetReady with ready() now and then every interval
// until ctx is done. The feed knows its readiness but announces no changes,
// so the wiring polls it; a cheap atomic load, and the feed itself only
// notices an outage every few seconds.
func (h *Hub) FollowReadiness(ctx context.Context, ready func() bool, interval time.Duration) {
	h.SetReady(ready())
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.SetReady(ready())
		}
	}
}

// greetStatus queues the not-ready frame for a client being registered
// while the relay is not ready: with h.mu held, after its hello and before
// its writer starts.
func (h *Hub) greetStatus(c *client) {
	if h.status.down {
		c.queue.preload(notReadyFrame, time.Now())
	}
}

// logRefusedOrigin says which origin was refused and what to set to allow
// it: without this line, a page served by one relay that opens another's
// socket only sees "connection lost (1006)".
func (h *Hub) logRefusedOrigin(req *http.Request) {
	// The Origin is the client's to choose: clipped, and the lines limited.
	origin := strings.ToValidUTF8(reqlog.Clip(req.Header.Get("Origin")), "?")
	allowed := "only the relay's own host"
	if len(h.cfg.AllowedOrigins) > 0 {
		allowed = strings.Join(h.cfg.AllowedOrigins, ",")
	}
	h.pol.reqLog.Warn("websocket origin refused (403); to allow it, add it to "+names.EnvAllowedOrigins+" (comma-separated)",
		"origin", origin, "allowed", allowed, "remote", req.RemoteAddr)
}

// Relays returns the fallback relays listed in the hello (Config.Relays),
// so the page's content security policy can allow exactly those.
func (h *Hub) Relays() []string { return append([]string(nil), h.cfg.Relays...) }
