// Package server serves one relay: its HTTP routes (page, WebSocket, health,
// readiness, metrics) over the hub and the feed that the caller built, and
// its ordered shutdown within one budget.
//
// It is a library so that the relay's main can run one relay and `make dev`
// can run three in one process on one embedded broker.
package server
