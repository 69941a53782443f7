package server

import (
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits of plain HTTP connections. Without an idle timeout, 3,000 idle
// keep-alive connections once stayed open 70 s at about 20 KB each, counted
// nowhere. WebSockets are not affected: once hijacked, a connection is the
// hub's, which sets its own deadlines (pings every 15 s).
const (
	// idleTimeout closes a keep-alive connection that sends no new request;
	// browsers and Fly's proxy simply open another.
	idleTimeout = 30 * time.Second
	// readHeaderTimeout bounds a request's headers (slowloris).
	readHeaderTimeout = 10 * time.Second
	// readTimeout bounds a whole request, body included (the API's is at
	// most a few KB). Hijacking a connection clears it, so WebSockets keep only
	// the hub's own deadlines.
	readTimeout = 20 * time.Second
	// maxHeaderBytes is the most header bytes a request may send (Go's
	// default is 1 MB): far more than any browser sends, far less than the
	// 900 KB Origin headers an attacker sent to fill the log.
	maxHeaderBytes = 32 << 10
)

// countConns returns a ConnState hook that keeps skywatch_http_connections:
// open HTTP connections, idle ones included, until they close or become
// WebSockets (counted by the hub as skywatch_connections).
func countConns(reg prometheus.Registerer) func(net.Conn, http.ConnState) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "skywatch_http_connections",
		Help: "Open HTTP connections, idle keep-alive ones included; upgraded WebSockets are counted by skywatch_connections instead.",
	})
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(g)
	return func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			g.Inc()
		case http.StateHijacked, http.StateClosed:
			g.Dec()
		}
	}
}
