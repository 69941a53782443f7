package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/feed"
	"github.com/skywatch-dev/skywatch/internal/hub"
	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/server"
)

// shutdownBudget is the whole time an ordered shutdown may take, set here
// once and passed down as one context. Fly's kill_timeout in fly.toml is
// 10 s, after which it sends SIGKILL; 8 s leaves the process time to exit.
const shutdownBudget = 8 * time.Second

// run is the relay's whole life: read configuration, open the broker,
// listen, serve until ctx is done, shut down in order. It returns nil after
// a clean shutdown.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	dev := fs.Bool("dev", false, "run three relays on one embedded broker (see -dev-ports)")
	devPorts := fs.String("dev-ports", "8081,8082,8083", "comma-separated ports for -dev")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}

	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := newLogger(stdout, cfg.LogFormat)

	if *dev {
		return runDev(ctx, cfg, log, *devPorts)
	}

	if cfg.allocGenerated {
		log.Info(names.EnvAllocID+" not set; using a random VM id", "vm", cfg.AllocID)
	}
	b, closeBroker, err := openBroker(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeBroker()

	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := newRelay(cfg, relayID{VM: cfg.AllocID, Region: cfg.Region, Origins: cfg.AllowedOrigins}, b, log)
	return serve(ctx, []*server.Server{srv}, []net.Listener{ln})
}

// serve runs every server until ctx is done, then shuts them all down
// within one budget.
func serve(ctx context.Context, srvs []*server.Server, lns []net.Listener) error {
	errs := make([]error, len(srvs))
	var wg sync.WaitGroup
	for i, srv := range srvs {
		wg.Go(func() { errs[i] = srv.Serve(ctx, lns[i]) })
	}
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownBudget)
	defer cancel()
	for i, srv := range srvs {
		wg.Go(func() { errs[i] = errors.Join(errs[i], srv.Shutdown(sctx)) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// openBroker picks the broker the configuration asks for: an emulator, Google
// Cloud, or the embedded in-memory one.
func openBroker(ctx context.Context, cfg config, log *slog.Logger) (broker.Broker, func(), error) {
	switch cfg.brokerKind() {
	case "embedded":
		log.Info("no GOOGLE_CLOUD_PROJECT or PUBSUB_EMULATOR_HOST: using the embedded in-memory broker; alerts stay inside this process")
		return mempubsub.New(mempubsub.Config{}), func() {}, nil
	default:
		b, err := gcppubsub.New(ctx, gcppubsub.Config{
			ProjectID:       cfg.Project,
			TopicID:         cfg.Topic,
			EmulatorHost:    cfg.EmulatorHost,
			CredentialsJSON: cfg.Credentials,
			PublishTimeout:  cfg.PublishTimeout,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("pubsub: %w", err)
		}
		log.Info("using Pub/Sub", "kind", cfg.brokerKind(), "project", cfg.Project, "topic", cfg.Topic, "emulator", cfg.EmulatorHost)
		return b, func() {
			if err := b.Close(); err != nil {
				log.Warn("close pubsub client", "err", err)
			}
		}, nil
	}
}

// relayID is what sets one relay apart from the others on a broker.
type relayID struct {
	VM, Region string
	Origins    []string // browser origins allowed to connect
}

// newRelay builds one relay's parts, each once and with its final
// configuration: its metrics registry, hub, feed and server.
func newRelay(cfg config, id relayID, b broker.Broker, log *slog.Logger) *server.Server {
	log = log.With("vm", id.VM, "region", id.Region)
	// A registry per relay, not the global one: `make dev` runs three relays
	// in one process and each must report its own figures.
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	h := hub.New(hub.Config{
		VM:             id.VM,
		Region:         id.Region,
		AllowedOrigins: id.Origins,
		RateLimit:      cfg.RateLimit,
		RateBurst:      cfg.RateBurst,
		PublishTimeout: cfg.PublishTimeout,
		HistorySize:    cfg.HistorySize,
		HistoryAge:     cfg.HistoryAge,
		ResumeMargin:   cfg.ResumeMargin,
		Logger:         log,
		Registerer:     reg,
	}, b)
	f := feed.New(b, feed.Config{
		Name:        names.Subscription(cfg.SubPrefix, id.VM),
		Logger:      log,
		OnReceiving: h.CoverageStarts,
	}, h.Deliver)
	return server.New(server.Config{Hub: h, Feed: f, Metrics: reg, Logger: log})
}

// runDev runs three relays ("VMs") on one embedded broker in one process,
// so a newcomer can open two ports in two tabs and watch an alert cross.
func runDev(ctx context.Context, cfg config, log *slog.Logger, ports string) error {
	regions := []string{"ams", "iad", "syd", "gru", "nrt"}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	var origins, sockets []string
	for _, p := range strings.Split(ports, ",") {
		p = strings.TrimSpace(p)
		if _, err := strconv.Atoi(p); err != nil {
			closeAll()
			return fmt.Errorf("dev port %q: want a number", p)
		}
		ln, err := net.Listen("tcp", ":"+p)
		if err != nil {
			closeAll()
			return fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, ln)
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		origins = append(origins, "http://localhost:"+port, "http://127.0.0.1:"+port)
		sockets = append(sockets, "ws://localhost:"+port+"/ws")
	}

	b := mempubsub.New(mempubsub.Config{})
	log.Info("dev mode: relays on one embedded broker", "relays", len(lns))
	srvs := make([]*server.Server, len(lns))
	for i, ln := range lns {
		id := relayID{VM: fmt.Sprintf("dev-%d", i+1), Region: regions[i%len(regions)], Origins: origins}
		srvs[i] = newRelay(cfg, id, b, log)
		port := ln.Addr().(*net.TCPAddr).Port
		others := make([]string, 0, len(sockets)-1)
		for j, s := range sockets {
			if j != i {
				others = append(others, s)
			}
		}
		log.Info("open in a browser", "vm", id.VM, "url", fmt.Sprintf("http://localhost:%d/?relays=%s", port, strings.Join(others, ",")))
	}
	return serve(ctx, srvs, lns)
}

func newLogger(w io.Writer, format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
