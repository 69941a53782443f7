// Package hub is the fan-out of one relay: it accepts browser WebSocket
// connections, publishes the alerts they send through a Publisher (the
// broker, which reaches every relay), and broadcasts each alert that comes
// back from the broker to every client connected to this relay.
//
// The hub knows nothing about Pub/Sub. The wiring hands it a Publisher and
// calls Deliver from the feed's receive handler, so the same alert reaches
// the sender's own relay the same way it reaches every other relay: one
// path, delivered exactly once per client (duplicates from the broker's
// at-least-once delivery are dropped by id).
//
// Per connection there is a reader goroutine only while the client sends
// something (on Linux an idle connection is parked in one epoll set and
// holds none, park_linux.go) and a writer goroutine only while it has more
// to write than its socket took at once, or frames of its own (answers,
// pongs). Deliver encodes an alert once, as a ready-made WebSocket frame
// shared by every client, and appends it to each client's queue without
// blocking; a pump per chunk of clients then sends each client everything
// queued in one system call that never waits, and hands only what a socket
// did not take to a writer goroutine. A client with too much left unread
// (bytes, or the age of its oldest unread frame) is closed as too slow
// rather than stalling the others.
//
// Every alert broadcast is also kept in a bounded history (internal/history),
// so a client that reconnects with /ws?since= gets what it missed before the
// live stream, on whichever VM it lands (resume.go).
//
// Who may publish and how much (BROWSER_PUBLISH, per-address and per-relay
// limits, budgets for bad frames) is in policy.go; frameguard.go bounds the
// frames a client may send beneath gorilla's reader.
//
// The wire protocol is in internal/protocol and docs/protocol.md.
package hub
