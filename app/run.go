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

	"github.com/skywatch-dev/skywatch/app/internal/broker"
	"github.com/skywatch-dev/skywatch/app/internal/broker/gcppubsub"
	"github.com/skywatch-dev/skywatch/app/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/app/internal/feed"
	"github.com/skywatch-dev/skywatch/app/internal/relay"
	"github.com/skywatch-dev/skywatch/app/internal/server"
)

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
		log.Info("FLY_ALLOC_ID not set; using a random VM id", "vm", cfg.AllocID)
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
	srv := server.New(serverConfig(cfg, cfg.AllocID, cfg.Region, cfg.AllowedOrigin, log), b)
	return srv.Serve(ctx, ln)
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

func serverConfig(cfg config, vm, region string, origins []string, log *slog.Logger) server.Config {
	return server.Config{
		Subscription: feed.SubscriptionName(cfg.SubPrefix, vm),
		Relay: relay.Config{
			VM:             vm,
			Region:         region,
			AllowedOrigins: origins,
			RateLimit:      cfg.RateLimit,
			RateBurst:      cfg.RateBurst,
		},
		Logger: log,
	}
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
	var wg sync.WaitGroup
	errs := make([]error, len(lns))
	for i, ln := range lns {
		vm := fmt.Sprintf("dev-%d", i+1)
		region := regions[i%len(regions)]
		srv := server.New(serverConfig(cfg, vm, region, origins, log), b)
		port := ln.Addr().(*net.TCPAddr).Port
		others := make([]string, 0, len(sockets)-1)
		for j, s := range sockets {
			if j != i {
				others = append(others, s)
			}
		}
		log.Info("open in a browser", "vm", vm, "url", fmt.Sprintf("http://localhost:%d/?relays=%s", port, strings.Join(others, ",")))
		wg.Go(func() { errs[i] = srv.Serve(ctx, ln) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func newLogger(w io.Writer, format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
