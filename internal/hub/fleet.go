package hub

import (
	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// BroadcastFleet offers a fleet frame to every client and keeps it for the
// clients that connect later, which get it right after hello. A fleet frame
// is only a view: a client whose queue is full skips it (the next one
// replaces it) and is not closed for it, and it is not counted as an alert.
func (h *Hub) BroadcastFleet(f protocol.Fleet) {
	f.Type = protocol.TypeFleet
	pm := prepare(f)
	h.fleet.Store(pm)
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.clients {
		offer(c, pm)
	}
}

// sendFleet gives a new client the latest fleet frame, if there is one.
func (h *Hub) sendFleet(c *client) {
	if pm := h.fleet.Load(); pm != nil {
		offer(c, pm)
	}
}

func offer(c *client, pm *websocket.PreparedMessage) {
	select {
	case c.send <- pm:
	default:
	}
}
