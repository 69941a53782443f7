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
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skywatch-dev/skywatch/app/internal/broker"
	"github.com/skywatch-dev/skywatch/app/internal/feed"
	"github.com/skywatch-dev/skywatch/app/internal/relay"
	"github.com/skywatch-dev/skywatch/app/internal/web"
)

// Config describes one relay VM. Zero values mean the defaults.
type Config struct {
	// Subscription is this VM's subscription name. Required.
	Subscription string
	// Relay configures the WebSocket hub; its VM and Region name this VM.
	Relay relay.Config
	// Feed tunes the subscription supervisor; its Name is set from
	// Subscription.
	Feed feed.Config
	// ShutdownTimeout is the whole budget for an ordered shutdown. Default
	// 8s: Fly's kill_timeout in fly.toml is 10s, and the process must be
	// gone before the SIGTERM/SIGKILL that follows it.
	ShutdownTimeout time.Duration
	// CloseClientsTimeout caps the part of the budget spent sending 1012
	// to clients, so deleting the subscription always gets its turn.
	// Default 3s.
	CloseClientsTimeout time.Duration
	Logger              *slog.Logger
}

// Server is one relay VM.
type Server struct {
	cfg      Config
	log      *slog.Logger
	relay    *relay.Relay
	feed     *feed.Feed
	registry *prometheus.Registry
	stopping atomic.Bool
}

// New wires a relay VM to b. Nothing runs until Serve.
func New(cfg Config, b broker.Broker) *Server {
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 8 * time.Second
	}
	if cfg.CloseClientsTimeout <= 0 {
		cfg.CloseClientsTimeout = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("vm", cfg.Relay.VM, "region", cfg.Relay.Region)

	// A registry per VM, not the global one: `make dev` runs three VMs in
	// one process and each must report its own figures.
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	rcfg := cfg.Relay
	rcfg.Logger = log
	rcfg.Registerer = reg
	r := relay.New(rcfg, b)

	fcfg := cfg.Feed
	fcfg.Name = cfg.Subscription
	fcfg.Logger = log
	f := feed.New(b, fcfg, r.Deliver)

	return &Server{cfg: cfg, log: log, relay: r, feed: f, registry: reg}
}

// Handler lists every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	page := web.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /static/", page)
	mux.Handle("GET /ws", s.relay)
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return mux
}

// Ready reports whether the VM is receiving from its subscription and not
// shutting down: the only state in which it can deliver alerts.
func (s *Server) Ready() bool { return !s.stopping.Load() && s.feed.Ready() }

// Serve serves on ln until ctx is done, then shuts down in order: readiness
// off, stop accepting, close clients with 1012, stop receiving, delete the
// subscription. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}

	feedCtx, stopFeed := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFeed()
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		_ = s.feed.Run(feedCtx)
	}()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String(), "subscription", s.cfg.Subscription)

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("serve: %w", err)
	}
	return errors.Join(err, s.shutdown(srv, stopFeed, feedDone))
}

func (s *Server) shutdown(srv *http.Server, stopFeed context.CancelFunc, feedDone <-chan struct{}) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.log.Info("shutting down", "budget", s.cfg.ShutdownTimeout)

	// 1. Not ready: a load balancer polling /readyz stops sending new users.
	s.stopping.Store(true)

	var errs []error
	// 2. Stop accepting. Shutdown does not touch hijacked WebSocket
	// connections; the relay closes those next.
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop http: %w", err))
	}

	// 3. Close every client with 1012 so browsers reconnect elsewhere.
	cctx, ccancel := context.WithTimeout(ctx, s.cfg.CloseClientsTimeout)
	if err := s.relay.Close(cctx); err != nil {
		errs = append(errs, fmt.Errorf("close clients: %w", err))
	}
	ccancel()

	// 4. Stop receiving, so nothing recreates the subscription.
	stopFeed()
	select {
	case <-feedDone:
	case <-ctx.Done():
		errs = append(errs, errors.New("stop receiving: budget spent"))
	}

	// 5. Delete the subscription; with the budget spent, its one-day
	// expiration policy is the fallback.
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
