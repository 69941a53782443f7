package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skywatch-dev/skywatch/internal/feed"
	"github.com/skywatch-dev/skywatch/internal/fleet"
	"github.com/skywatch-dev/skywatch/internal/hub"
	"github.com/skywatch-dev/skywatch/internal/web"
)

// Config is one relay's parts, built by the caller with their final
// configuration. Hub and Feed are required.
type Config struct {
	Hub  *hub.Hub
	Feed *feed.Feed
	// Fleet, if set, serves GET /fleet, runs beside the feed and must see
	// the relay's own heartbeats come back for the relay to be ready.
	Fleet *fleet.Fleet
	// Metrics is served at /metrics and receives the server's own series
	// (skywatch_http_connections). Nil: a private registry.
	Metrics *prometheus.Registry
	// Logger receives the server's lifecycle lines. Default: discard.
	Logger *slog.Logger
	// API serves POST /api/alerts. Nil: no such route.
	API http.Handler
}

// Server is one relay's HTTP side and lifecycle: Serve, then Shutdown.
type Server struct {
	hub      *hub.Hub
	feed     *feed.Feed
	api      http.Handler
	fleet    *fleet.Fleet
	metrics  prometheus.Gatherer
	log      *slog.Logger
	stopping atomic.Bool

	http      *http.Server
	stopFeed  context.CancelFunc
	feedDone  chan struct{}
	stopFleet context.CancelFunc
	fleetDone chan struct{}
}

// New returns a Server over cfg's parts. Nothing runs until Serve.
func New(cfg Config) *Server {
	if cfg.Hub == nil || cfg.Feed == nil {
		panic("server: New without a Hub or a Feed")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{hub: cfg.Hub, feed: cfg.Feed, api: cfg.API, fleet: cfg.Fleet, metrics: cfg.Metrics, log: cfg.Logger, feedDone: make(chan struct{}), fleetDone: make(chan struct{})}
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         countConns(cfg.Metrics),
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler lists every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	page := web.Handler(s.hub.Relays()...)
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /static/", page)
	mux.Handle("GET /ws", s.hub)
	if s.api != nil {
		mux.Handle("POST /api/alerts", s.api)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.Ready() {
			writeStatus(w, http.StatusOK, "ready")
			return
		}
		writeStatus(w, http.StatusServiceUnavailable, "not ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	if s.fleet != nil {
		mux.Handle("GET /fleet", s.fleet)
	}
	return mux
}

// Ready reports whether the relay is receiving from its subscription (and,
// with a Fleet, hears its own heartbeats come back through it) and not
// shutting down: the only state in which it can deliver alerts.
func (s *Server) Ready() bool {
	return !s.stopping.Load() && s.feed.Ready() && (s.fleet == nil || s.fleet.Delivering())
}

// Serve starts the feed and serves HTTP on ln until ctx is done or serving
// fails, and returns; the routes stay up until Shutdown, which the caller
// must call in either case. ctx ending is not an error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// The feed outlives ctx: Shutdown stops it after the clients are gone,
	// so that alerts keep flowing to them until then.
	feedCtx, stopFeed := context.WithCancel(context.WithoutCancel(ctx))
	s.stopFeed = stopFeed
	go func() {
		defer close(s.feedDone)
		_ = s.feed.Run(feedCtx)
	}()

	// Heartbeats stop when Shutdown begins, which then says this relay
	// leaves.
	fleetCtx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	s.stopFleet = stopFleet
	go func() {
		defer close(s.fleetDone)
		if s.fleet != nil {
			_ = s.fleet.Run(fleetCtx, s.feed)
		}
	}()

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.http.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String(), "subscription", s.feed.Name())

	select {
	case <-ctx.Done():
		return nil
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}
}

// deleteShare is the part of the shutdown budget kept for deleting the
// subscription, the one step whose omission outlives the process: a
// leftover subscription collects every alert for a day. Closing clients and
// stopping the receiver share the rest and are cut short if they overrun.
const deleteShare = 4 // a quarter: 2 s of Fly's 8 s budget

// Shutdown stops the relay in order within ctx's deadline: readiness off,
// stop accepting, close clients with 1012, stop receiving, delete the
// subscription. The delete always gets the last quarter of the budget, even
// when an earlier step hangs. Call it once, after Serve returned.
func (s *Server) Shutdown(ctx context.Context) error {
	start := time.Now()
	stepsCtx, cancel := context.WithCancel(ctx)
	if deadline, ok := ctx.Deadline(); ok {
		stepsCtx, cancel = context.WithDeadline(ctx, deadline.Add(-time.Until(deadline)/deleteShare))
		s.log.Info("shutting down", "budget", time.Until(deadline).Round(time.Millisecond))
	} else {
		s.log.Info("shutting down")
	}
	defer cancel()

	// 1. Not ready: a load balancer polling /readyz stops sending new users;
	// and the other relays hear this one leave.
	s.stopping.Store(true)
	if s.stopFleet != nil {
		s.stopFleet()
		select {
		case <-s.fleetDone:
			if s.fleet != nil {
				s.fleet.Leave(stepsCtx)
			}
		case <-stepsCtx.Done():
		}
	}

	var errs []error
	// 2. Stop accepting. Shutdown does not touch hijacked WebSocket
	// connections; the hub closes those next.
	if err := s.http.Shutdown(stepsCtx); err != nil {
		errs = append(errs, fmt.Errorf("stop http: %w", err))
	}

	// 3. Close every client with 1012 so browsers reconnect elsewhere.
	if err := s.hub.Close(stepsCtx); err != nil {
		errs = append(errs, fmt.Errorf("close clients: %w", err))
	}

	// 4. Stop receiving, so nothing recreates the subscription. A receiver
	// that does not stop in time is left behind: the delete ends it.
	if s.stopFeed != nil {
		s.stopFeed()
		select {
		case <-s.feedDone:
		case <-stepsCtx.Done():
			errs = append(errs, errors.New("stop receiving: budget spent"))
		}
	}

	// 5. Delete the subscription, on the whole budget's context: its share
	// is still there whatever the steps above took.
	if err := s.feed.Delete(ctx); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err != nil {
		s.log.Error("shutdown incomplete", "err", err, "took", time.Since(start))
		return err
	}
	s.log.Info("shutdown complete", "took", time.Since(start))
	return nil
}

func writeStatus(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, body)
}
