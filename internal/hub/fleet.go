package hub

import (
	"time"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// BroadcastFleet offers a fleet frame to every client and keeps it for the
// clients that connect later, which get it right after hello. A fleet frame
// is only a view: a client that cannot take it skips it (the next one
// replaces it) and is not closed for it, and it is not counted as an alert.
func (h *Hub) BroadcastFleet(f protocol.Fleet) {
	f.Type = protocol.TypeFleet
	frame := textFrame(protocol.Encode(f))
	h.fleet.Store(&frame)
	now := time.Now()
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.clients {
		c.push(frame, now)
	}
}

// sendFleet gives a new client the latest fleet frame, if there is one,
// right after its hello and before its writer starts.
func (h *Hub) sendFleet(c *client) {
	if f := h.fleet.Load(); f != nil {
		c.queue.preload(*f, time.Now())
	}
}
