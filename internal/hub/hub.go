package hub

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// Publisher is what the relay needs to send an alert to every VM (the broker
// satisfies it). Publish returns once the alert is accepted, or an error when
// ctx is done or the broker refuses it.
type Publisher interface {
	Publish(ctx context.Context, data []byte) error
}

// Config configures a Hub. Zero values mean the defaults below, filled in by
// New.
type Config struct {
	// VM and Region name this relay in hello frames and in the origin of the
	// alerts its clients send (on Fly.io: FLY_ALLOC_ID and FLY_REGION).
	// Default "local".
	VM, Region string

	// AllowedOrigins lists the browser origins that may connect, as
	// "https://host[:port]" (compared with the protocol.Origin header) or a bare
	// "host[:port]" (compared with its host). Empty allows only the same host
	// as the request (Origin's host equals Host, gorilla's default); "*"
	// allows any origin. Requests without an protocol.Origin header (not browsers)
	// are always allowed: the check protects browsers' cookies and
	// credentials from other sites, which non-browsers do not carry.
	AllowedOrigins []string

	// Relays lists other relays' WebSocket URLs (ws:// or wss://), sent in
	// the hello so a page can fail over to them. Only for several relays on
	// one machine (make dev, the e2e suite); on Fly the page's own origin
	// reaches another VM. Default none.
	Relays []string

	// ReadLimit is the largest client frame in bytes; a larger one closes
	// the connection with 1009. Default 4096: a 280-character text in which
	// every character is \u-escaped as a surrogate pair (3360 bytes) plus a
	// 64-character ASCII nonce and the keys still fit.
	ReadLimit int64

	// MaxQueueBytes and MaxQueueAge decide when a client is too slow: an
	// alert that arrives while the client has more than MaxQueueBytes
	// unread (queued or being written), or while its oldest unread frame
	// has waited longer than MaxQueueAge, closes it with 1008. Never a frame
	// count: a burst of alerts fills a count at once even for a client that
	// reads as fast as it can. Queued frames are shared between clients, so
	// the memory a backlog holds is a slice entry per frame, not its bytes.
	// Defaults 1 MiB and 10s.
	MaxQueueBytes int
	MaxQueueAge   time.Duration

	// WriteDelay is how long a client's writer waits before writing again
	// when it finds frames queued as soon as it has written (alerts are
	// coming fast), so that the frames arriving meanwhile go out with it in
	// one system call; a writer woken after a quiet spell writes at once
	// (client.gather). It adds at most that to an alert's latency, and only
	// under a stream of alerts. Default 3ms: at 800 alerts/s to 2 × 500
	// clients waiting took the relay from 1.3–1.4 to 0.9 µs per delivery
	// and from missing 800/s to sustaining it (docs/performance.md).
	// Negative never waits.
	WriteDelay time.Duration

	// RateLimit and RateBurst are each connection's token bucket for alerts
	// (alerts per second, bucket size). Defaults 5 and 10.
	RateLimit rate.Limit
	RateBurst int

	// PublishTimeout bounds one Publish, so a sender hears `unavailable`
	// within seconds when the broker is down. Default 5s.
	PublishTimeout time.Duration

	// WriteWait bounds every write to a client: each starts with a
	// deadline between WriteWait less a tenth of it (at most 1s less) and
	// WriteWait away. Default 10s.
	WriteWait time.Duration
	// PongWait is how long a client may stay silent (no frame, no pong)
	// before it is dropped. The server pings every PongWait/2, so a live
	// client answers in time even when it is PongWait/2 behind on its
	// reads; a client may stay silent for PongWait/2 + 1.1 × MaxQueueAge
	// instead where that is longer, so that a long MaxQueueAge holds too.
	// Default 30s: pings every 15s keep the connection busy well inside
	// Fly's proxy idle timeout (60s).
	PongWait time.Duration

	// DedupSize is how many recent alert ids are remembered to drop the
	// broker's redeliveries. Default 10000 (about 1 MB).
	DedupSize int

	// HistorySize and HistoryAge bound the history of alerts kept for
	// clients that resume (/ws?since=); alerts that reach the relay more
	// than HistoryAge after they were sent are dropped, not broadcast.
	// ResumeMargin is subtracted from a resuming client's since. Defaults
	// 1000, 10m and 5s (resume.go).
	HistorySize  int
	HistoryAge   time.Duration
	ResumeMargin time.Duration

	// Logger receives one line per event. Default: discard.
	Logger *slog.Logger

	// Registerer is where the skywatch_* metrics are registered. Nil keeps
	// them in a private registry.
	Registerer prometheus.Registerer

	// Publish says who may publish and how much (policy.go).
	Publish Policy
}

// Defaults.
const (
	DefaultVM             = "local"
	DefaultRegion         = "local"
	DefaultReadLimit      = 4096
	DefaultMaxQueueBytes  = 1 << 20
	DefaultMaxQueueAge    = 10 * time.Second
	DefaultWriteDelay     = 3 * time.Millisecond
	DefaultRateLimit      = rate.Limit(5)
	DefaultRateBurst      = 10
	DefaultPublishTimeout = broker.DefaultPublishTimeout
	DefaultWriteWait      = 10 * time.Second
	DefaultPongWait       = 30 * time.Second
	DefaultDedupSize      = 10000
)

// closeGrace is how long the server waits for a client to answer its close
// frame before dropping the TCP connection. Closing while the client's frames
// are still unread makes the kernel send a reset, which can destroy the close
// frame before the client reads it; a short wait lets the handshake finish.
const closeGrace = time.Second

// Buffer sizes for gorilla. Client frames are at most ReadLimit bytes and
// most are far smaller; a 512-byte read buffer (an ASCII alert fits; larger
// frames take more reads), which the frame guard makes and gorilla adopts
// (guardWriter.Hijack), and pooled write buffers (held only while writing)
// keep an idle connection small: the read buffer is held for the
// connection's life, and 1 KiB cost 0.5 KB more per idle connection
// (BenchmarkIdleConnMemory). The writer bypasses gorilla's write buffer
// altogether (writer.go).
const (
	readBufferSize  = 512
	writeBufferSize = 1024
)

func (c *Config) setDefaults() {
	if c.VM == "" {
		c.VM = DefaultVM
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = DefaultReadLimit
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if c.WriteDelay == 0 {
		c.WriteDelay = DefaultWriteDelay
	}
	if c.MaxQueueAge <= 0 {
		c.MaxQueueAge = DefaultMaxQueueAge
	}
	if c.RateLimit <= 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateBurst <= 0 {
		c.RateBurst = DefaultRateBurst
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.WriteWait <= 0 {
		c.WriteWait = DefaultWriteWait
	}
	if c.PongWait <= 0 {
		c.PongWait = DefaultPongWait
	}
	if c.DedupSize <= 0 {
		c.DedupSize = DefaultDedupSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.setResumeDefaults()
}

// Hub is the fan-out of one VM. It is an http.Handler for the WebSocket
// endpoint. All methods are safe for concurrent use.
type Hub struct {
	cfg        Config
	pub        Publisher
	log        *slog.Logger
	m          *metrics
	upgrader   websocket.Upgrader
	hello      []byte // the hello frame, shared by every client
	pingPeriod time.Duration
	// silentAfter is how long a client may go unheard: PongWait, or more
	// where MaxQueueAge needs it (New).
	silentAfter time.Duration
	dedup       *dedup
	pol         *policy
	rs          resumeState // the history for resuming clients (resume.go)

	// ctx bounds publishes; it is cancelled when Close returns.
	ctx    context.Context
	cancel context.CancelFunc

	fleet atomic.Pointer[[]byte] // the latest fleet frame (fleet.go)

	mu      sync.RWMutex
	clients map[*client]struct{}
	closing bool
	status  status // readiness sent to clients; see status.go
	// wg counts registered connections and in-flight publishes, so Close
	// can wait for both.
	wg sync.WaitGroup
}

// New returns a Hub that publishes its clients' alerts with pub. It panics
// if pub is nil: a relay that cannot publish is a wiring bug.
func New(cfg Config, pub Publisher) *Hub {
	if pub == nil {
		panic("hub: New with a nil Publisher")
	}
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		cfg:    cfg,
		pub:    pub,
		log:    cfg.Logger,
		m:      newMetrics(cfg.Registerer),
		dedup:  newDedup(cfg.DedupSize),
		ctx:    ctx,
		cancel: cancel,
		// Ping halfway to the client's deadline. A pong comes back only
		// once the client has read everything written before the ping, so
		// the half left is how far behind a live client may be: 15 s by
		// default, more than MaxQueueAge's 10 s, so that a client behind
		// because the relay is (a flood, a busy machine) is never taken
		// for a silent one. With 9/10, 3 s of backlog dropped clients in
		// a load test at 800 alerts/s on a busy machine.
		pingPeriod: cfg.PongWait / 2,
		// Where MaxQueueAge lets a client fall further behind than that
		// half, it may stay unheard for longer: a ping period, then its age
		// of backlog and a tenth of that to spare. Pings keep their period,
		// which Fly's proxy needs.
		silentAfter: max(cfg.PongWait, cfg.PongWait/2+cfg.MaxQueueAge*11/10),
		clients:     make(map[*client]struct{}),
	}
	h.pol = newPolicy(cfg, h.m)
	h.upgrader = websocket.Upgrader{
		// 0: gorilla adopts the frame guard's reader of readBufferSize
		// (guardWriter.Hijack).
		ReadBufferSize:  0,
		WriteBufferSize: writeBufferSize,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     h.checkOrigin,
	}
	h.cfg.AllowedOrigins = make([]string, 0, len(cfg.AllowedOrigins))
	for _, o := range cfg.AllowedOrigins {
		h.cfg.AllowedOrigins = append(h.cfg.AllowedOrigins, strings.TrimSuffix(strings.TrimSpace(o), "/"))
	}

	hello := protocol.Hello{
		Type:     protocol.TypeHello,
		VM:       cfg.VM,
		Region:   cfg.Region,
		Protocol: protocol.Version,
		Limits: protocol.Limits{
			Text:  protocol.MaxTextRunes,
			Nonce: protocol.MaxNonceRunes,
			Frame: cfg.ReadLimit,
			Burst: cfg.RateBurst,
		},
		PingIntervalMS: h.pingPeriod.Milliseconds(),
		Relays:         cfg.Relays,
	}
	if lim := float64(cfg.RateLimit); !math.IsInf(lim, 1) {
		hello.Limits.Rate = &lim
	}
	h.hello = textFrame(protocol.Encode(hello))
	h.initResume()
	return h
}

// checkOrigin implements Config.AllowedOrigins.
func (h *Hub) checkOrigin(req *http.Request) bool {
	origin := req.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if len(h.cfg.AllowedOrigins) == 0 {
		return strings.EqualFold(u.Host, req.Host)
	}
	for _, allowed := range h.cfg.AllowedOrigins {
		switch {
		case allowed == "*",
			strings.EqualFold(allowed, origin),
			!strings.Contains(allowed, "://") && strings.EqualFold(allowed, u.Host):
			return true
		}
	}
	return false
}

// ServeHTTP upgrades the request to a WebSocket and serves the client until
// it goes away. While the relay is closing it answers 503.
func (h *Hub) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if h.isClosing() {
		h.m.rejected.Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "relay is shutting down", http.StatusServiceUnavailable)
		return
	}
	pol, ok := h.admit(w, req)
	if !ok {
		return
	}
	conn, err := h.upgrader.Upgrade(guardWriter{w}, req, nil)
	if err != nil {
		pol.release()
		// The upgrader has answered with an HTTP error (403 for a foreign
		// origin, 400 for a bad handshake). The request's values are the
		// client's to choose: clipped, and the lines limited.
		if !h.checkOrigin(req) {
			h.logRefusedOrigin(req)
			return
		}
		h.pol.reqLog.Info("upgrade refused", "remote", req.RemoteAddr, "err", err)
		return
	}
	// The hello is queued in newClient, before the client is visible to
	// Deliver, so it is always the first frame.
	c := newClient(h, conn, req.RemoteAddr)
	c.pol = pol
	// Hello (and, for a resume, the replay and the resumed frame) is
	// queued before the client is visible to Deliver, and written before
	// anything else (resume.go).
	if !h.registerFrom(c, req) {
		// Close began between the check above and now.
		c.ping.Stop()
		h.m.rejected.Inc()
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(protocol.CloseRestart, protocol.CloseRestartReason), time.Now().Add(h.cfg.WriteWait))
		_ = conn.Close()
		pol.release()
		return
	}
	h.log.Debug("client connected", "remote", c.remote)
	// The reader gets its own goroutine (and the writer one when it has
	// work) and ServeHTTP returns: while the handler runs, net/http keeps
	// the connection's request buffers (about 11 KiB) alive, which an idle
	// WebSocket does not need.
	c.kick() // writes the hello
	c.startReader()
}

func (h *Hub) isClosing() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.closing
}

func (h *Hub) register(c *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	h.clients[c] = struct{}{}
	// After hello (and a resume's replay), before the writer starts.
	h.greetStatus(c)
	h.sendFleet(c)
	h.wg.Add(1)
	h.m.connections.Inc()
	return true
}

func (h *Hub) unregister(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	h.m.connections.Dec()
	h.wg.Done()
}

// Clients returns the number of connected clients (including any that are
// in the middle of closing).
func (h *Hub) Clients() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.clients)
}

// Deliver broadcasts an alert that came from the broker to every client of
// this relay. It is called by the broker's receive handler, possibly from
// several goroutines at once, and never blocks on a client: the alert is
// encoded once and offered to each client's queue; a client too far behind
// (Config.MaxQueueBytes, MaxQueueAge) is closed as too slow. Malformed messages and alerts whose id was seen
// recently (the broker delivers at least once) are dropped.
//
// Alerts delivered concurrently may reach different clients in different
// orders.
func (h *Hub) Deliver(data []byte) {
	h.m.received.Inc()
	a, key, sentAt, err := protocol.DecodeAlert(data)
	if err != nil {
		h.m.malformed.Inc()
		h.log.Warn("alert dropped", "reason", "malformed", "err", err)
		return
	}
	if h.late(a, sentAt) {
		return
	}
	if !h.dedup.add(key) {
		h.m.duplicates.Inc()
		h.log.Debug("alert dropped", "reason", "duplicate", "id", a.ID)
		return
	}
	// Re-encoded from the validated struct so every client gets exactly the
	// v1 frame, whatever else the message carried. Kept in the history for
	// resuming clients.
	h.record(sentAt, textFrame(protocol.Encode(a)))
}

// broadcast offers the frame f to every client's queue without blocking.
func (h *Hub) broadcast(f []byte) {
	delivered := h.fanOut(f)
	// Counted once per broadcast, not per client: with 10k clients that is
	// 10k fewer atomic adds on shared cache lines.
	h.m.delivered.Add(float64(delivered))
}

// fanOut queues f for every client without blocking and closes, as too
// slow, the clients that cannot take it. It returns how many took it.
func (h *Hub) fanOut(f []byte) (delivered int) {
	var dropped, slow int
	var idle []*client // clients whose writer a pump starts, up to pumpChunk
	now := time.Now()
	h.mu.RLock()
	for c := range h.clients {
		if start, ok := c.enqueue(f, now); ok {
			delivered++
			if start {
				if idle == nil {
					idle = make([]*client, 0, pumpChunk)
				}
				if idle = append(idle, c); len(idle) == pumpChunk {
					go pump(idle)
					idle = nil
				}
			}
			continue
		}
		if c.isDone() {
			continue // already closing; its queue no longer matters
		}
		dropped++
		if c.shutdown(protocol.CloseTooSlow, protocol.CloseTooSlowReason) {
			slow++
		}
	}
	h.mu.RUnlock()
	if idle != nil {
		go pump(idle)
	}
	if dropped > 0 {
		h.m.dropped.Add(float64(dropped))
		h.m.slowCloses.Add(float64(slow))
	}
	return delivered
}

// Close shuts the hub down: new upgrades get 503, every client gets close
// 1012 "service restart" (browsers should reconnect, reaching another VM),
// and Close waits for the connections' goroutines and in-flight publishes
// until ctx is done. Then it drops whatever is left and returns ctx's error.
//
// http.Server.Shutdown does not touch hijacked connections, so call Close
// as well.
func (h *Hub) Close(ctx context.Context) error {
	h.mu.Lock()
	first := !h.closing
	h.closing = true
	clients := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		clients = append(clients, c)
	}
	h.mu.Unlock()
	if first {
		h.log.Info("closing clients", "clients", len(clients))
	}
	for _, c := range clients {
		c.shutdown(protocol.CloseRestart, protocol.CloseRestartReason)
	}

	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		h.cancel()
		return nil
	case <-ctx.Done():
		// Clients that never answered: cut their TCP connections so their
		// goroutines end, and give up on publishes still waiting.
		h.cancel()
		for _, c := range clients {
			_ = c.closeConn()
		}
		return fmt.Errorf("close hub: %w", ctx.Err())
	}
}
