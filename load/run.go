package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Bounds: the tool is for a laptop or one test VM, not a botnet.
const (
	maxClients = 20000
	maxRate    = 5000
	maxHold    = time.Minute
)

type options struct {
	relays  int
	clients int
	rates   []int
	hold    time.Duration
	drain   time.Duration
	systems []system // what to load, one after the other
	remote  bool
	jsonOut string
	probe   bool // measure the emulator on its own beside the relays (probe.go)
	// attackSenders connections send attackBurst alerts at once, every
	// second of each rate (the burst attack of issue 9).
	attackSenders, attackBurst int
}

// system is one thing under load: relays this tool starts from a binary,
// Centrifugo nodes it starts, or URLs of a deployed app.
type system struct {
	Name string   `json:"name"`
	Kind string   `json:"kind"` // skywatch, centrifugo, url
	Path string   `json:"path,omitempty"`
	URLs []string `json:"urls,omitempty"`
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := options{}
	var rates, relayBins, urls, centrifugo string
	fs.IntVar(&o.relays, "relays", 2, "relays (or Centrifugo nodes) to start")
	fs.IntVar(&o.clients, "clients", 500, "WebSocket clients per relay")
	fs.StringVar(&rates, "rates", "50,100,200,400,800", "alert rates to sweep, alerts per second, comma-separated")
	fs.DurationVar(&o.hold, "hold", 5*time.Second, "how long each rate is held")
	fs.DurationVar(&o.drain, "drain", 3*time.Second, "how long to wait for late deliveries after each rate")
	fs.StringVar(&relayBins, "relay", "", "name=path of a relay binary to start on the emulator; repeat with commas to compare builds (default: build ./app)")
	fs.StringVar(&centrifugo, "centrifugo", "", "path of a centrifugo binary to compare against (needs redis-server on PATH)")
	fs.StringVar(&urls, "url", "", "ws:// or wss:// URLs of running relays' /ws, comma-separated, instead of starting any")
	fs.BoolVar(&o.remote, "remote", false, "allow -url targets that are not on loopback")
	fs.StringVar(&o.jsonOut, "json", "", "also write the JSON summary to this file")
	fs.BoolVar(&o.probe, "probe", true, fmt.Sprintf("also publish %d alerts/s to a topic of the emulator's own and report its latency (\"broker alone\"); the probe is load on the emulator too", probeRate))
	fs.IntVar(&o.attackSenders, "attack", 0, "every second, this many random clients send -attack-burst alerts at once, on top of the rate")
	fs.IntVar(&o.attackBurst, "attack-burst", 10, "alerts per attacking client (the relay's default burst is 10)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, r := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 || n > maxRate {
			return o, fmt.Errorf("-rates %q: want integers in 1..%d", rates, maxRate)
		}
		o.rates = append(o.rates, n)
	}
	if o.relays < 1 || o.clients < 1 || o.relays*o.clients > maxClients {
		return o, fmt.Errorf("-relays × -clients must be in 1..%d", maxClients)
	}
	if o.attackSenders < 0 || o.attackBurst < 1 || o.attackSenders*o.attackBurst > maxRate {
		return o, fmt.Errorf("-attack × -attack-burst must be at most %d", maxRate)
	}
	if o.hold <= 0 || o.hold > maxHold || o.drain < 0 || o.drain > maxHold {
		return o, fmt.Errorf("-hold and -drain must be at most %v", maxHold)
	}
	if urls != "" {
		var us []string
		for _, u := range strings.Split(urls, ",") {
			u = strings.TrimSpace(u)
			p, err := url.Parse(u)
			if err != nil || (p.Scheme != "ws" && p.Scheme != "wss") {
				return o, fmt.Errorf("-url %q: want ws:// or wss://", u)
			}
			if !o.remote && !isLoopback(p.Hostname()) {
				return o, fmt.Errorf("-url %q is not on loopback; add -remote to load it", u)
			}
			us = append(us, u)
		}
		o.relays = len(us)
		o.systems = append(o.systems, system{Name: "url", Kind: "url", URLs: us})
	}
	if relayBins != "" {
		for _, nb := range strings.Split(relayBins, ",") {
			name, path, ok := strings.Cut(nb, "=")
			if !ok {
				name, path = filepath.Base(nb), nb
			}
			o.systems = append(o.systems, system{Name: name, Kind: "skywatch", Path: path})
		}
	}
	if centrifugo != "" {
		o.systems = append(o.systems, system{Name: "centrifugo", Kind: "centrifugo", Path: centrifugo})
	}
	if len(o.systems) == 0 {
		o.systems = []system{{Name: "skywatch", Kind: "skywatch"}} // built below
	}
	return o, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// summary is the JSON the tool prints at the end.
type summary struct {
	Machine machine         `json:"machine"`
	Options map[string]any  `json:"options"`
	Systems []systemSummary `json:"systems"`
}

type machine struct {
	CPUs      int    `json:"cpus"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	Go        string `json:"go"`
	Load1     string `json:"load1,omitempty"`
	StartedAt string `json:"started_at"`
}

type systemSummary struct {
	system
	Clients int `json:"clients"`
	// RSSPerConnKiB is the relays' resident memory with every client
	// connected and idle, minus before, per connection.
	RSSPerConnKiB float64      `json:"rss_per_conn_kib,omitempty"`
	Steps         []stepResult `json:"steps"`
	// Sustained is the highest rate with no loss, no duplicate, no refused
	// alert and p99 ≤ 250 ms.
	Sustained int    `json:"sustained_rate"`
	Error     string `json:"error,omitempty"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "skywatch-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	sum := summary{
		Machine: machine{
			CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Go: runtime.Version(),
			StartedAt: time.Now().UTC().Format(time.RFC3339),
		},
		Options: map[string]any{
			"relays": o.relays, "clients_per_relay": o.clients, "rates": o.rates,
			"hold": o.hold.String(), "drain": o.drain.String(),
			"attack": o.attackSenders, "attack_burst": o.attackBurst, "probe": o.probe,
		},
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		sum.Machine.Load1, _, _ = strings.Cut(string(b), " ")
	}

	var emu *emulator // started once, shared by every Skywatch system
	defer func() {
		if emu != nil {
			emu.stop()
		}
	}()
	for i, sys := range o.systems {
		if ctx.Err() != nil {
			break
		}
		ss := systemSummary{system: sys}
		var tgt *target
		switch sys.Kind {
		case "url":
			tgt = &target{urls: sys.URLs, proto: skywatchProto{}}
		case "skywatch":
			if sys.Path == "" {
				sys.Path = filepath.Join(tmp, "relay")
				fmt.Fprintln(stderr, "building ./app …")
				if err := buildRelay(ctx, sys.Path); err != nil {
					return err
				}
				ss.Path = "(built from ./app)"
			}
			if emu == nil {
				fmt.Fprintln(stderr, "starting the Pub/Sub emulator …")
				if emu, err = startEmulator(ctx, tmp, o.probe); err != nil {
					return err
				}
			}
			// A new alloc id per system: see the emulator quirk in
			// docs/performance.md.
			tgt, err = startRelays(ctx, sys.Path, o.relays, emu, fmt.Sprintf("load%d", i), tmp)
		case "centrifugo":
			tgt, err = startCentrifugo(ctx, sys.Path, o.relays, tmp)
		}
		if err != nil {
			ss.Error = err.Error()
			sum.Systems = append(sum.Systems, ss)
			fmt.Fprintf(stderr, "%s: %v\n", sys.Name, err)
			continue
		}
		fmt.Fprintf(stderr, "== %s: %d × %d clients\n", sys.Name, len(tgt.urls), o.clients)
		err = sweep(ctx, tgt, o, &ss, stderr)
		tgt.stop()
		if err != nil {
			ss.Error = err.Error()
			fmt.Fprintf(stderr, "%s: %v\n", sys.Name, err)
		}
		sum.Systems = append(sum.Systems, ss)
	}

	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if o.jsonOut != "" {
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	_, err = stdout.Write(b)
	if err == nil {
		err = ctx.Err()
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted")
	}
	return err
}
