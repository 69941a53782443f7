// Package relay is Skywatch's fan-out core: it accepts browser WebSocket
// connections on one VM, publishes the alerts they send through a Publisher
// (the broker, which reaches every VM), and broadcasts each alert that comes
// back from the broker to every client connected to this VM.
//
// The relay knows nothing about Pub/Sub. The wiring hands it a Publisher and
// calls Deliver from the subscription's receive handler, so the same alert
// reaches the sender's own VM the same way it reaches every other VM: one
// path, delivered exactly once per client (duplicates from the broker's
// at-least-once delivery are dropped by id).
//
// Per connection there is one reader goroutine (the HTTP handler's, after the
// upgrade) and one writer goroutine. Deliver encodes an alert once, as a
// websocket.PreparedMessage, and offers it to each client's bounded queue
// without blocking; a client whose queue is full is closed as too slow
// rather than stalling the others.
//
// Every alert broadcast is also kept in a bounded history (internal/history),
// so a client that reconnects with /ws?since= gets what it missed before the
// live stream, on whichever VM it lands (resume.go).
//
// The wire protocol is documented in docs/protocol.md.
package hub
