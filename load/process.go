package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/pubsubemu"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// target is what the clients connect to: URLs, the protocol spoken there,
// and the processes behind them when this tool started them.
type target struct {
	urls  []string
	proto proto
	procs []*process // one per URL when started here; nil for -url
	// broker is what carries alerts between the relays (the emulator,
	// Redis), when started here: its CPU is reported apart. It is stopped
	// with the target unless shared (the emulator).
	broker []*process
	shared bool
	probe  *probe // the broker measured on its own, when it is the emulator
}

func (t *target) stop() {
	for _, p := range t.procs {
		p.stop()
	}
	if !t.shared {
		for _, p := range t.broker {
			p.stop()
		}
	}
}

// process is a child this tool started, in a process group of its own, so
// that stopping it ends it and anything it started, and nothing else.
type process struct {
	name string
	*testkit.Group
}

func startProcess(name string, logDir string, cmd *exec.Cmd) (*process, error) {
	logf, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	g, err := testkit.StartGroup(cmd, func() { logf.Close() })
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &process{name: name, Group: g}, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after 10 s.
func (p *process) stop() { p.Stop(10 * time.Second) }

// usage reads the CPU time (user + system) and resident memory of the
// process from /proc.
func (p *process) usage() (cpu time.Duration, rssKiB int64, err error) {
	pid := p.Pid()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15.
	rest := stat[bytes.LastIndexByte(stat, ')')+2:]
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	cpu = time.Duration(ut+st) * time.Second / clkTck
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKiB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return cpu, rssKiB, nil
}

// usageOf sums usage over processes.
func usageOf(ps []*process) (cpu time.Duration, rssKiB int64) {
	for _, p := range ps {
		c, r, err := p.usage()
		if err == nil {
			cpu += c
			rssKiB += r
		}
	}
	return cpu, rssKiB
}

// waitHTTP polls url until it answers 200, p exits, or a minute passes.
func waitHTTP(ctx context.Context, url string, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited before %s answered (see its log)", p.name, url)
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", url, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func buildRelay(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./app")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build relay (run from the repository root): %w", err)
	}
	return nil
}

// emulator is Google's Pub/Sub emulator, started from its launcher script.
type emulator struct {
	host      string
	p         *process
	probe     *probe // the emulator measured on its own (probe.go)
	stopProbe func()
}

// startEmulator starts the emulator and, with probe, the probe beside it.
func startEmulator(ctx context.Context, logDir string, probe bool) (*emulator, error) {
	launcher, err := pubsubemu.Find()
	if err != nil {
		return nil, err
	}
	port, err := testkit.FreePort()
	if err != nil {
		return nil, err
	}
	// The launcher, not "gcloud beta emulators pubsub start", which leaves
	// its java child behind when stopped.
	p, err := startProcess("emulator", logDir, exec.Command(launcher, "--host=127.0.0.1", "--port="+strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	e := &emulator{host: "127.0.0.1:" + strconv.Itoa(port), p: p}
	if err := waitHTTP(ctx, "http://"+e.host+"/", p); err != nil {
		p.stop()
		return nil, err
	}
	e.stopProbe = func() {}
	if !probe {
		return e, nil
	}
	if e.probe, e.stopProbe, err = probeEmulator(ctx, e.host); err != nil {
		p.stop()
		return nil, err
	}
	return e, nil
}

// stop stops the probe, then the emulator.
func (e *emulator) stop() {
	e.stopProbe()
	e.p.stop()
}

// startRelays starts n relays from bin on the emulator, each with its own
// alloc id (prefix-i), and waits until each is ready.
func startRelays(ctx context.Context, bin string, n int, emu *emulator, prefix, logDir string) (*target, error) {
	t := &target{proto: skywatchProto{}, broker: []*process{emu.p}, shared: true, probe: emu.probe}
	emuHost := emu.host
	for i := range n {
		port, err := testkit.FreePort()
		if err != nil {
			t.stop()
			return nil, err
		}
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			names.EnvPort+"="+strconv.Itoa(port),
			names.EnvAllocID+"="+fmt.Sprintf("%s-%d", prefix, i),
			names.EnvRegion+"=load",
			names.EnvEmulatorHost+"="+emuHost,
			names.EnvLogFormat+"=json",
			// Every client of the tool comes from one address and the
			// alerts from a few hundred connections: lift the per-address
			// and per-relay limits that protect a public relay, so the
			// sweep measures the fan-out. Against a deployed relay they
			// apply, and refused alerts are reported.
			names.EnvIPConnections+"=1000000",
			names.EnvIPAlertRate+"=1000000",
			names.EnvIPAlertBurst+"=1000000",
			names.EnvRelayAlertRate+"=1000000",
			names.EnvRelayAlertBurst+"=1000000",
		)
		if err := t.add(ctx, fmt.Sprintf("%s-relay-%d", prefix, i), logDir, cmd, port, "/readyz", "/ws"); err != nil {
			t.stop()
			return nil, err
		}
	}
	return t, nil
}

// add starts one server of the target, listening on port, waits until its
// ready path answers 200, and records its WebSocket URL.
func (t *target) add(ctx context.Context, name, logDir string, cmd *exec.Cmd, port int, ready, ws string) error {
	p, err := startProcess(name, logDir, cmd)
	if err != nil {
		return err
	}
	t.procs = append(t.procs, p)
	base := "127.0.0.1:" + strconv.Itoa(port)
	if err := waitHTTP(ctx, "http://"+base+ready, p); err != nil {
		return err
	}
	t.urls = append(t.urls, "ws://"+base+ws)
	return nil
}
