package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Publisher is what the relay needs to send an alert to every VM (the broker
// satisfies it). Publish returns once the alert is accepted, or an error when
// ctx is done or the broker refuses it.
type Publisher interface {
	Publish(ctx context.Context, data []byte) error
}

// Config configures a Relay. Zero values mean the defaults below, filled in by
// New.
type Config struct {
	// VM and Region name this relay in hello frames and in the origin of the
	// alerts its clients send (on Fly.io: FLY_ALLOC_ID and FLY_REGION).
	// Default "local".
	VM, Region string

	// AllowedOrigins lists the browser origins that may connect, as
	// "https://host[:port]" (compared with the Origin header) or a bare
	// "host[:port]" (compared with its host). Empty allows only the same host
	// as the request (Origin's host equals Host, gorilla's default); "*"
	// allows any origin. Requests without an Origin header (not browsers)
	// are always allowed: the check protects browsers' cookies and
	// credentials from other sites, which non-browsers do not carry.
	AllowedOrigins []string

	// ReadLimit is the largest client frame in bytes; a larger one closes
	// the connection with 1009. Default 4096: a 280-character text in which
	// every character is \u-escaped as a surrogate pair (3360 bytes) plus a
	// 64-character ASCII nonce and the keys still fit.
	ReadLimit int64

	// QueueSize is each client's send queue, in frames. A client whose queue
	// is full when an alert arrives is closed as too slow. Default 64.
	QueueSize int

	// RateLimit and RateBurst are each connection's token bucket for alerts
	// (alerts per second, bucket size). Defaults 5 and 10.
	RateLimit rate.Limit
	RateBurst int

	// PublishTimeout bounds one Publish, so a sender hears `unavailable`
	// within seconds when the broker is down. Default 5s.
	PublishTimeout time.Duration

	// WriteWait bounds every write to a client. Default 10s.
	WriteWait time.Duration
	// PongWait is how long a client may stay silent (no frame, no pong)
	// before it is dropped. The server pings every PongWait*9/10, so a live
	// client always answers in time. Default 30s: pings every 27s keep the
	// connection busy well inside Fly's proxy idle timeout (60s).
	PongWait time.Duration

	// DedupSize is how many recent alert ids are remembered to drop the
	// broker's redeliveries. Default 10000 (about 1 MB).
	DedupSize int

	// Logger receives one line per event. Default: discard.
	Logger *slog.Logger

	// Registerer is where the skywatch_* metrics are registered. Nil keeps
	// them in a private registry.
	Registerer prometheus.Registerer
}

// Defaults.
const (
	DefaultVM             = "local"
	DefaultReadLimit      = 4096
	DefaultQueueSize      = 64
	DefaultRateLimit      = rate.Limit(5)
	DefaultRateBurst      = 10
	DefaultPublishTimeout = 5 * time.Second
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
// most are far smaller; 1 KiB read buffers (frames larger than the buffer
// still work) and pooled write buffers (held only while writing) keep an
// idle connection small. Broadcasts are prepared messages and bypass the
// write buffer altogether.
const (
	readBufferSize  = 1024
	writeBufferSize = 1024
)

func (c *Config) setDefaults() {
	if c.VM == "" {
		c.VM = DefaultVM
	}
	if c.Region == "" {
		c.Region = DefaultVM
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = DefaultReadLimit
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
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
}

// Relay is the fan-out hub of one VM. It is an http.Handler for the WebSocket
// endpoint. All methods are safe for concurrent use.
type Relay struct {
	cfg        Config
	pub        Publisher
	log        *slog.Logger
	m          *metrics
	upgrader   websocket.Upgrader
	hello      *websocket.PreparedMessage
	pingPeriod time.Duration
	dedup      *dedup

	// ctx bounds publishes; it is cancelled when Close returns.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.RWMutex
	clients map[*client]struct{}
	closing bool
	// wg counts registered connections and in-flight publishes, so Close
	// can wait for both.
	wg sync.WaitGroup
}

// New returns a Relay that publishes its clients' alerts with pub. It panics
// if pub is nil: a relay that cannot publish is a wiring bug.
func New(cfg Config, pub Publisher) *Relay {
	if pub == nil {
		panic("relay: New with a nil Publisher")
	}
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{
		cfg:    cfg,
		pub:    pub,
		log:    cfg.Logger,
		m:      newMetrics(cfg.Registerer),
		dedup:  newDedup(cfg.DedupSize),
		ctx:    ctx,
		cancel: cancel,
		// Ping a little before the client's deadline runs out, so that a
		// pong has time to come back.
		pingPeriod: cfg.PongWait * 9 / 10,
		clients:    make(map[*client]struct{}),
	}
	r.upgrader = websocket.Upgrader{
		ReadBufferSize:  readBufferSize,
		WriteBufferSize: writeBufferSize,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     r.checkOrigin,
	}
	r.cfg.AllowedOrigins = make([]string, 0, len(cfg.AllowedOrigins))
	for _, o := range cfg.AllowedOrigins {
		r.cfg.AllowedOrigins = append(r.cfg.AllowedOrigins, strings.TrimSuffix(strings.TrimSpace(o), "/"))
	}

	h := Hello{
		Type:     TypeHello,
		VM:       cfg.VM,
		Region:   cfg.Region,
		Protocol: ProtocolVersion,
		Limits: Limits{
			Text:  MaxTextRunes,
			Nonce: MaxNonceRunes,
			Frame: cfg.ReadLimit,
			Burst: cfg.RateBurst,
		},
		PingIntervalMS: r.pingPeriod.Milliseconds(),
	}
	if lim := float64(cfg.RateLimit); !math.IsInf(lim, 1) {
		h.Limits.Rate = &lim
	}
	r.hello = mustPrepare(h)
	return r
}

// mustPrepare encodes v once for any number of connections. The frame types
// here always encode, so an error is a bug.
func mustPrepare(v any) *websocket.PreparedMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("relay: encode %T: %v", v, err))
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, b)
	if err != nil {
		panic(fmt.Sprintf("relay: prepare %T: %v", v, err))
	}
	return pm
}

// checkOrigin implements Config.AllowedOrigins.
func (r *Relay) checkOrigin(req *http.Request) bool {
	origin := req.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if len(r.cfg.AllowedOrigins) == 0 {
		return strings.EqualFold(u.Host, req.Host)
	}
	for _, allowed := range r.cfg.AllowedOrigins {
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
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.isClosing() {
		r.m.rejected.Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "relay is shutting down", http.StatusServiceUnavailable)
		return
	}
	conn, err := r.upgrader.Upgrade(w, req, nil)
	if err != nil {
		// The upgrader has answered with an HTTP error (403 for a foreign
		// origin, 400 for a bad handshake).
		r.log.Info("upgrade refused", "remote", req.RemoteAddr, "origin", req.Header.Get("Origin"), "err", err)
		return
	}
	c := newClient(r, conn, req.RemoteAddr)
	// Queued before the client is visible to Deliver, so hello is always
	// the first frame; the queue is empty, so this never blocks.
	c.send <- r.hello
	if !r.register(c) {
		// Close began between the check above and now.
		r.m.rejected.Inc()
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(closeRestart, closeRestartReason), time.Now().Add(r.cfg.WriteWait))
		_ = conn.Close()
		return
	}
	r.log.Debug("client connected", "remote", c.remote)
	// Both pumps get their own goroutines and ServeHTTP returns: while the
	// handler runs, net/http keeps the connection's request buffers (about
	// 11 KiB) alive, which an idle WebSocket does not need.
	go c.writePump()
	go func() {
		c.readPump()
		<-c.writerDone
		r.unregister(c)
	}()
}

func (r *Relay) isClosing() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.closing
}

func (r *Relay) register(c *client) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.clients[c] = struct{}{}
	r.wg.Add(1)
	r.m.connections.Inc()
	return true
}

func (r *Relay) unregister(c *client) {
	r.mu.Lock()
	delete(r.clients, c)
	r.mu.Unlock()
	r.m.connections.Dec()
	r.wg.Done()
}

// Clients returns the number of connected clients (including any that are
// in the middle of closing).
func (r *Relay) Clients() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.clients)
}

// Deliver broadcasts an alert that came from the broker to every client of
// this relay. It is called by the broker's receive handler, possibly from
// several goroutines at once, and never blocks on a client: the alert is
// encoded once and offered to each client's queue; a client whose queue is
// full is closed as too slow. Malformed messages and alerts whose id was seen
// recently (the broker delivers at least once) are dropped.
//
// Alerts delivered concurrently may reach different clients in different
// orders.
func (r *Relay) Deliver(data []byte) {
	r.m.received.Inc()
	a, key, err := decodeAlert(data)
	if err != nil {
		r.m.malformed.Inc()
		r.log.Warn("alert dropped", "reason", "malformed", "err", err)
		return
	}
	if !r.dedup.add(key) {
		r.m.duplicates.Inc()
		r.log.Debug("alert dropped", "reason", "duplicate", "id", a.ID)
		return
	}
	// Re-encoded from the validated struct so every client gets exactly the
	// v1 frame, whatever else the message carried.
	r.broadcast(mustPrepare(a))
}

// broadcast offers pm to every client's queue without blocking.
func (r *Relay) broadcast(pm *websocket.PreparedMessage) {
	var delivered, dropped, slow int
	r.mu.RLock()
	for c := range r.clients {
		select {
		case c.send <- pm:
			delivered++
			continue
		default:
		}
		if c.isDone() {
			continue // already closing; its queue no longer matters
		}
		dropped++
		if c.shutdown(closeTooSlow, closeTooSlowReason) {
			slow++
		}
	}
	r.mu.RUnlock()
	// Counted once per broadcast, not per client: with 10k clients that is
	// 10k fewer atomic adds on shared cache lines.
	r.m.delivered.Add(float64(delivered))
	if dropped > 0 {
		r.m.dropped.Add(float64(dropped))
		r.m.slowCloses.Add(float64(slow))
	}
}

// Close shuts the relay down: new upgrades get 503, every client gets close
// 1012 "service restart" (browsers should reconnect, reaching another VM),
// and Close waits for the connections' goroutines and in-flight publishes
// until ctx is done. Then it drops whatever is left and returns ctx's error.
//
// http.Server.Shutdown does not touch hijacked connections, so call Close
// as well.
func (r *Relay) Close(ctx context.Context) error {
	r.mu.Lock()
	first := !r.closing
	r.closing = true
	clients := make([]*client, 0, len(r.clients))
	for c := range r.clients {
		clients = append(clients, c)
	}
	r.mu.Unlock()
	if first {
		r.log.Info("relay closing", "clients", len(clients))
	}
	for _, c := range clients {
		c.shutdown(closeRestart, closeRestartReason)
	}

	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		r.cancel()
		return nil
	case <-ctx.Done():
		// Clients that never answered: cut their TCP connections so their
		// goroutines end, and give up on publishes still waiting.
		r.cancel()
		for _, c := range clients {
			_ = c.conn.Close()
		}
		return fmt.Errorf("close relay: %w", ctx.Err())
	}
}
