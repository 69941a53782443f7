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
// Per connection there is one reader goroutine, and a writer goroutine only
// while there is something to write. Deliver encodes an alert once, as a
// ready-made WebSocket frame shared by every client, and appends it to each
// client's queue without blocking; the writer sends everything queued in one
// system call. A client with too much left unread (bytes, or the age of its
// oldest unread frame) is closed as too slow rather than stalling the others.
//
// The wire protocol is documented in docs/protocol.md.
package hub
