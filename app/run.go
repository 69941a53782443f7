package main

import (
	"bufio"
	"cmp"
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

	"github.com/skywatch-dev/skywatch/internal/api"
	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/feed"
	"github.com/skywatch-dev/skywatch/internal/flyoidc"
	"github.com/skywatch-dev/skywatch/internal/hub"
	"github.com/skywatch-dev/skywatch/internal/iplimit"
	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/server"
)

// shutdownBudget is the whole time an ordered shutdown may take, set here
// once and passed down as one context. Fly's kill_timeout in fly.toml is
// 10 s, after which it sends SIGKILL; 8 s leaves the process time to exit.
const shutdownBudget = 8 * time.Second

// run is the relay's whole life: read configuration, listen, open the
// broker (in the background), serve until ctx is done, shut down in order.
// It returns nil after a clean shutdown.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	dev := fs.Bool("dev", false, "run three relays on one embedded broker (see -dev-ports); type a VM's number and Enter to stop or restart it")
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
		// The terminal is the dev's remote control: stopping one VM is how
		// failover is tried locally.
		return runDev(ctx, cfg, log, *devPorts, stdin)
	}

	if cfg.allocGenerated {
		log.Info(names.EnvAllocID+" not set; using a random VM id", "vm", cfg.AllocID)
	}
	// Listen first, then open the broker in the background: a relay that
	// cannot reach Pub/Sub yet (IAM grants still propagating after the
	// first `pulumi up`, an outage) serves /healthz and answers
	// `unavailable` instead of crash-looping.
	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	b, closeBroker, err := openBroker(cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer closeBroker()

	srv := newRelay(ctx, cfg, relayID{VM: cfg.AllocID, Region: cfg.Region, Origins: cfg.AllowedOrigins, Relays: cfg.FallbackRelays}, b, log)
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
// Cloud, or the embedded in-memory one. Pub/Sub is opened in the background
// (gcppubsub.Open) and retried until it answers; only what retrying cannot
// fix, such as a key that does not parse, is an error here.
func openBroker(cfg config, log *slog.Logger) (broker.Broker, func(), error) {
	if cfg.brokerKind() == "embedded" {
		log.Info("no GOOGLE_CLOUD_PROJECT or PUBSUB_EMULATOR_HOST: using the embedded in-memory broker; alerts stay inside this process")
		return mempubsub.New(mempubsub.Config{}), func() {}, nil
	}
	pcfg := gcppubsub.Config{
		ProjectID:      cfg.Project,
		TopicID:        cfg.Topic,
		EmulatorHost:   cfg.EmulatorHost,
		PublishTimeout: cfg.PublishTimeout,
		Streams:        cfg.PullStreams,
	}
	auth := "application default credentials"
	switch {
	case cfg.EmulatorHost != "":
		auth = "none (emulator)"
	case cfg.WorkloadAudience != "":
		creds, err := flyoidc.Credentials(flyoidc.Config{
			Audience:            cfg.WorkloadAudience,
			ServiceAccountEmail: cfg.ServiceAccountEmail,
			Scopes:              gcppubsub.Scopes(),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", names.EnvWorkloadIdentityAudience, err)
		}
		pcfg.Credentials, auth = creds, "keyless (Fly OIDC as "+cfg.ServiceAccountEmail+")"
	case len(cfg.Credentials) > 0:
		creds, err := gcppubsub.KeyCredentials(cfg.Credentials)
		if err != nil {
			// The variable is named; its value never is.
			return nil, nil, fmt.Errorf("%s: %w", names.EnvServiceAccountKey, err)
		}
		pcfg.Credentials, auth = creds, "service-account key"
	}
	b, err := gcppubsub.Open(pcfg, log)
	if err != nil {
		return nil, nil, fmt.Errorf("pubsub: %w", err)
	}
	log.Info("using Pub/Sub", "kind", cfg.brokerKind(), "project", cfg.Project, "topic", cfg.Topic, "emulator", cfg.EmulatorHost, "credentials", auth,
		"pull_streams", cmp.Or(cfg.PullStreams, gcppubsub.DefaultStreams))
	return b, func() {
		if err := b.Close(); err != nil {
			log.Warn("close pubsub client", "err", err)
		}
	}, nil
}

// relayID is what sets one relay apart from the others on a broker.
type relayID struct {
	VM, Region string
	Origins    []string // browser origins allowed to connect
	Relays     []string // other relays' sockets, listed in the hello for the page's failover
}

// readinessPoll is how often the hub asks the feed whether it is receiving,
// to tell clients when that changes. The feed itself notices an outage only
// every couple of seconds, so polling faster would buy nothing.
const readinessPoll = 250 * time.Millisecond

// newRelay builds one relay's parts, each once and with its final
// configuration: its metrics registry, hub, feed and server. Until ctx is
// done the hub tells its clients when the feed's readiness changes; it stops
// then, so clients are not told "not ready" by the shutdown that closes them
// with 1012 a moment later.
func newRelay(ctx context.Context, cfg config, id relayID, b broker.Broker, log *slog.Logger) *server.Server {
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
		Relays:         id.Relays,
		RateLimit:      cfg.RateLimit,
		RateBurst:      cfg.RateBurst,
		MaxQueueBytes:  cfg.SlowBytes,
		MaxQueueAge:    cfg.SlowAge,
		WriteDelay:     cfg.WriteDelay,
		PublishTimeout: cfg.PublishTimeout,
		HistorySize:    cfg.HistorySize,
		HistoryAge:     cfg.HistoryAge,
		ResumeMargin:   cfg.ResumeMargin,
		Logger:         log,
		Registerer:     reg,
		Publish: hub.Policy{
			Browsers:   cfg.BrowserPublish,
			SigningKey: cfg.SigningKey,
			PerIP:      iplimit.New(cfg.PerIP),
			RelayRate:  cfg.RelayRate,
			RelayBurst: cfg.RelayBurst,
		},
	}, broker.Alerts(b))
	sub := names.Subscription(cfg.SubPrefix, id.VM)
	fl := newFleet(cfg, id, sub, h, b, log, reg)
	f := feed.New(b, feed.Config{
		Name:        sub,
		Logger:      log,
		OnReceiving: h.CoverageStarts,
	}, fl.Route(h.Deliver))
	// API alerts go through the same broker as the browsers': every relay
	// receives them from its subscription like any other.
	a := api.New(api.Config{
		Tokens:         cfg.PublishTokens,
		VM:             id.VM,
		Region:         id.Region,
		Rate:           cfg.APIRate,
		Burst:          cfg.APIBurst,
		PublishTimeout: cfg.PublishTimeout,
		Logger:         log,
		Registerer:     reg,
	}, broker.Alerts(b))
	if a.Enabled() {
		log.Info("publish API on", "route", "POST /api/alerts", "tokens", cfg.PublishTokens.Len())
	} else {
		log.Info("publish API off: " + names.EnvPublishTokens + " not set; POST /api/alerts answers 404")
	}
	log.Info("browser publishing", "mode", cfg.BrowserPublish)
	srv := server.New(server.Config{Hub: h, Feed: f, Fleet: fl, API: a, Metrics: reg, Logger: log})
	// Clients hear the relay's readiness (its feed receives and its own
	// heartbeats come back); said before the server listens, so even the
	// first client hears it.
	h.SetReady(srv.Ready())
	go h.FollowReadiness(ctx, srv.Ready, readinessPoll)
	return srv
}

// runDev runs three relays ("VMs") on one embedded broker in one process,
// so a newcomer can open two ports in two tabs and watch an alert cross.
// Every VM allows the others' pages and lists the others in its hello, so a
// page fails over when its VM stops. Typing a VM's number and Enter on in
// stops that VM (with the same ordered shutdown as SIGTERM: its pages get
// 1012) or starts it again.
func runDev(ctx context.Context, cfg config, log *slog.Logger, ports string, in io.Reader) error {
	regions := []string{"ams", "iad", "syd", "gru", "nrt"}
	var vms []*devVM
	closeAll := func() {
		for _, v := range vms {
			v.ln.Close()
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
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		vms = append(vms, &devVM{ln: ln, port: port})
		origins = append(origins, "http://localhost:"+port, "http://127.0.0.1:"+port)
		sockets = append(sockets, "ws://localhost:"+port+"/ws")
	}

	b := mempubsub.New(mempubsub.Config{})
	log.Info("dev mode: relays on one embedded broker; type a VM's number and Enter to stop or restart it", "relays", len(vms))
	for i, v := range vms {
		others := make([]string, 0, len(sockets)-1)
		for j, s := range sockets {
			if j != i {
				others = append(others, s)
			}
		}
		v.id = relayID{VM: fmt.Sprintf("dev-%d", i+1), Region: regions[i%len(regions)], Origins: origins, Relays: others}
		log.Info("open in a browser", "vm", v.id.VM, "key", i+1, "url", "http://localhost:"+v.port+"/")
		v.start(ctx, cfg, b, log)
	}

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			var errs []error
			for _, v := range vms {
				errs = append(errs, v.wait())
			}
			return errors.Join(errs...)
		case line := <-lines:
			n, err := strconv.Atoi(line)
			if err != nil || n < 1 || n > len(vms) {
				log.Info("dev mode: type a VM's number (1 to " + strconv.Itoa(len(vms)) + ") and Enter to stop or restart it")
				continue
			}
			v := vms[n-1]
			if v.running() {
				log.Info("dev mode: stopping", "vm", v.id.VM)
				v.stop()
				if err := v.wait(); err != nil {
					log.Warn("dev mode: stop", "vm", v.id.VM, "err", err)
				}
				log.Info("dev mode: stopped; type its number again to restart it", "vm", v.id.VM, "key", n)
				continue
			}
			ln, err := net.Listen("tcp", ":"+v.port)
			if err != nil {
				log.Warn("dev mode: restart", "vm", v.id.VM, "err", err)
				continue
			}
			v.ln = ln
			v.start(ctx, cfg, b, log)
			log.Info("dev mode: started again", "vm", v.id.VM)
		}
	}
}

// devVM is one relay of dev mode, which the terminal can stop and restart
// on the same port.
type devVM struct {
	id   relayID
	port string
	ln   net.Listener

	stop context.CancelFunc // nil while stopped
	done chan error
}

// start serves the VM on v.ln until ctx is done or stop is called, then
// shuts it down within the usual budget.
func (v *devVM) start(ctx context.Context, cfg config, b broker.Broker, log *slog.Logger) {
	vctx, cancel := context.WithCancel(ctx)
	srv := newRelay(vctx, cfg, v.id, b, log)
	v.stop, v.done = cancel, make(chan error, 1)
	go func() { v.done <- serve(vctx, []*server.Server{srv}, []net.Listener{v.ln}) }()
}

func (v *devVM) running() bool { return v.stop != nil }

// wait waits until a started VM has shut down, and returns how it went.
func (v *devVM) wait() error {
	if v.stop == nil {
		return nil
	}
	err := <-v.done
	v.stop()
	v.stop = nil
	return err
}

func newLogger(w io.Writer, format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
