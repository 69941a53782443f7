// Package server is one relay VM: the HTTP routes (page, WebSocket, health,
// readiness, metrics), the relay hub, and the feed that keeps the VM's
// subscription, wired to one broker and shut down in order.
//
// It is a library so that the relay's main can run one of them and `make
// dev` can run three in one process on one embedded broker.
package server
