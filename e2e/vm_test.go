//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// killTimeout is fly.toml's kill_timeout: after it Fly sends SIGKILL, so a
// graceful stop must be over by then.
const killTimeout = 10 * time.Second

// regions are Fly region codes handed out to the VMs in turn.
var regions = []string{"ams", "iad", "sin", "syd", "gru", "nrt"}

// cluster is a set of relay VMs on one topic of one emulator.
type cluster struct {
	t     *testing.T
	emu   emulator
	topic string
	vms   []*vm
}

// newCluster starts n VMs on a topic of this test's own and waits until
// every one is ready (its subscription receiving). Everything stops when the
// test ends; if it failed, the VMs' output is printed.
func newCluster(t *testing.T, emu emulator, n int) *cluster {
	t.Helper()
	c := startCluster(t, emu, n)
	for _, v := range c.vms {
		v.waitReady(t, 90*time.Second)
	}
	t.Logf("cluster on topic %s: %s", c.topic, c)
	return c
}

// startCluster is newCluster without waiting for readiness: every VM serves
// (/healthz answers 200) when it returns.
func startCluster(t *testing.T, emu emulator, n int) *cluster {
	t.Helper()
	bin := relayBinary(t)
	c := &cluster{t: t, emu: emu, topic: topicFor(t)}
	for i := range n {
		port, err := testkit.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		name := "vm" + strconv.Itoa(i+1)
		c.vms = append(c.vms, &vm{
			name:     name,
			alloc:    randomHex(7),
			region:   regions[i%len(regions)],
			Endpoint: testkit.Endpoint("127.0.0.1:" + strconv.Itoa(port)),
			Process:  &testkit.Process{Name: name, Bin: bin, Log: &testkit.SyncBuffer{}},
		})
	}
	// Every page origin may open /ws on every VM, so a page served by one
	// VM can fall back to the others.
	var origins []string
	for _, v := range c.vms {
		origins = append(origins, v.Origin())
	}
	for _, v := range c.vms {
		// And each VM names the others in its hello, the only place a page
		// takes fallback relays from.
		var others []string
		for _, o := range c.vms {
			if o != v {
				others = append(others, o.WS(""))
			}
		}
		v.Env = map[string]string{
			names.EnvFallbackRelays: strings.Join(others, ","),
			names.EnvPort:           v.port(),
			names.EnvAllocID:        v.alloc,
			names.EnvRegion:         v.region,
			names.EnvProject:        projectID,
			names.EnvEmulatorHost:   emu.Host(),
			names.EnvTopic:          c.topic,
			names.EnvAllowedOrigins: strings.Join(origins, ","),
		}
	}
	t.Cleanup(c.cleanup)
	for _, v := range c.vms {
		v.start(t)
	}
	return c
}

func (c *cluster) String() string {
	var parts []string
	for _, v := range c.vms {
		parts = append(parts, v.String())
	}
	return strings.Join(parts, ", ")
}

// cleanup kills every VM still running (only the processes this harness
// started), then saves their output and prints it if the test failed.
func (c *cluster) cleanup() {
	for _, v := range c.vms {
		v.Kill()
	}
	for _, v := range c.vms {
		name := logName(c.t) + "-" + v.name + ".log"
		if f, err := createArtifact(name); err == nil {
			_, _ = f.Write(v.Log.Bytes())
			f.Close()
		}
		if c.t.Failed() {
			c.t.Logf("---- output of %s ----\n%s", v, tail(v.Log.String(), 150))
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return strings.Join(lines, "\n")
	}
	return fmt.Sprintf("[... %d lines cut; full log in e2e/artifacts]\n%s",
		len(lines)-n, strings.Join(lines[len(lines)-n:], "\n"))
}

// vm is one relay process: what Fly would run as one machine. Its output,
// across restarts, is in Log.
type vm struct {
	name   string // vm1, vm2, ... for messages
	alloc  string // FLY_ALLOC_ID
	region string // FLY_REGION
	testkit.Endpoint
	*testkit.Process
}

func (v *vm) String() string {
	return fmt.Sprintf("%s (alloc %s, region %s, %s)", v.name, v.alloc, v.region, v.Endpoint)
}

func (v *vm) port() string { return strings.TrimPrefix(string(v.Endpoint), "127.0.0.1:") }

// subscription is the name the relay must give its subscription.
func (v *vm) subscription() string {
	return names.Subscription(names.DefaultSubscriptionPrefix, v.alloc)
}

// start runs the relay and waits until /healthz answers 200.
func (v *vm) start(t *testing.T) {
	t.Helper()
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	if err := v.WaitStatus("/healthz", http.StatusOK, 60*time.Second, v.Alive); err != nil {
		t.Fatalf("%s: after start, GET /healthz: %v\n%s", v, err, tail(v.Log.String(), 60))
	}
}

// waitReady waits until /readyz answers 200: the VM's subscription receives.
func (v *vm) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := v.WaitStatus("/readyz", http.StatusOK, timeout, v.Alive); err != nil {
		t.Fatalf("%s: want GET /readyz 200 (subscription receiving): %v", v, err)
	}
}

// running fails the test if the VM's process has exited.
func (v *vm) running(t *testing.T) {
	t.Helper()
	if err := v.Alive(); err != nil {
		t.Errorf("%s: want the process running: %v", v, err)
	}
}

// stop sends sig and waits for the process to exit, at most killTimeout
// plus a margin; then, as Fly would, it sends SIGKILL. The caller checks
// the result against the contract.
func (v *vm) stop(t *testing.T, sig syscall.Signal) testkit.Stopped {
	t.Helper()
	res, err := v.Stop(sig, killTimeout+20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// restart starts the VM again with the same alloc id, region and port, and
// waits until it is ready.
func (v *vm) restart(t *testing.T) {
	t.Helper()
	v.start(t)
	v.waitReady(t, 90*time.Second)
}
