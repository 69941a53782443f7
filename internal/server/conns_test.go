package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/feed"
	"github.com/skywatch-dev/skywatch/internal/hub"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

func startServer(t *testing.T, idle time.Duration) (string, *prometheus.Registry) {
	t.Helper()
	b := mempubsub.New(mempubsub.Config{})
	reg := prometheus.NewRegistry()
	h := hub.New(hub.Config{Registerer: reg}, broker.Alerts(b))
	f := feed.New(b, feed.Config{Name: "ID_test"}, func(m broker.Message) { h.Deliver(m.Data) })
	api := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	s := New(Config{Hub: h, Feed: f, Metrics: reg, API: api})
	s.http.IdleTimeout = idle // the test's own, not 30 s
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = s.Shutdown(sctx)
	})
	return ln.Addr().String(), reg
}

func httpConns(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "skywatch_http_connections" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no skywatch_http_connections")
	return 0
}

// TestIdleConnectionsAreCountedAndClosed holds keep-alive connections open
// without a new request: the gauge counts them and the server closes them.
func TestIdleConnectionsAreCountedAndClosed(t *testing.T) {
	addr, reg := startServer(t, 300*time.Millisecond)
	const n = 5
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /healthz: %v %v", resp, err)
		}
		conns[i] = c
	}
	if got := httpConns(t, reg); got != n {
		t.Errorf("skywatch_http_connections = %v with %d idle keep-alive connections, want %d", got, n, n)
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil { // EOF: the server closed it
			t.Errorf("idle connection: %v, want the server to close it", err)
		}
	}
	testkit.Eventually(t, "the gauge to drop to 0", func() bool { return httpConns(t, reg) == 0 })
}

func TestLimits(t *testing.T) {
	addr, _ := startServer(t, time.Minute)
	// Headers over the cap are refused before any handler sees them.
	req, _ := http.NewRequest("GET", "http://"+addr+"/ws", nil)
	req.Header.Set("Origin", "https://"+strings.Repeat("a", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KB Origin: %d, want 431", resp.StatusCode)
	}
	// The API route is wired, for POST only.
	resp, err = http.Post("http://"+addr+"/api/alerts", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("POST /api/alerts: %d, want the API handler's answer", resp.StatusCode)
	}
	resp, err = http.Get("http://" + addr + "/api/alerts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/alerts: %d, want 405", resp.StatusCode)
	}
}
