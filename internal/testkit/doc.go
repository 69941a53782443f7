// Package testkit is the one copy of what Skywatch's tests share: a
// WebSocket client that keeps every frame it reads, the loose frame type it
// decodes into, matchers, the table of bad client input with the answers
// docs/protocol.md promises, relay processes, and small helpers for waiting.
// The hub's tests, the relay's integration tests (app/) and the e2e suite
// all use it, so a change to the protocol or to how a relay is driven is
// made here once.
//
// It is an ordinary package (not a _test file) so that those three can
// import it; outside tests only the load tool (load/) does, for ports.
package testkit
