//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/skywatch-dev/skywatch/internal/names"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
	bin := relayBinary(t)
	c := &cluster{t: t, emu: emu, topic: topicFor(t)}
	for i := range n {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		c.vms = append(c.vms, &vm{
			name:   "vm" + strconv.Itoa(i+1),
			alloc:  randomHex(7),
			region: regions[i%len(regions)],
			port:   port,
			bin:    bin,
			log:    &syncBuffer{},
		})
	}
	// Every page origin may open /ws on every VM, so a page served by one
	// VM can fall back to the others.
	var origins []string
	for _, v := range c.vms {
		origins = append(origins, v.origin())
	}
	for _, v := range c.vms {
		// And each VM names the others in its hello, the only place a page
		// takes fallback relays from.
		var others []string
		for _, o := range c.vms {
			if o != v {
				others = append(others, o.wsURL())
			}
		}
		v.env = map[string]string{
			names.EnvFallbackRelays: strings.Join(others, ","),
			names.EnvPort:           strconv.Itoa(v.port),
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
	for _, v := range c.vms {
		v.waitReady(t, 90*time.Second)
	}
	t.Logf("cluster on topic %s: %s", c.topic, c)
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
		v.kill()
	}
	for _, v := range c.vms {
		name := logName(c.t) + "-" + v.name + ".log"
		if f, err := createArtifact(name); err == nil {
			_, _ = f.Write(v.log.Bytes())
			f.Close()
		}
		if c.t.Failed() {
			c.t.Logf("---- output of %s ----\n%s", v, tail(v.log.String(), 150))
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

// vm is one relay process: what Fly would run as one machine.
type vm struct {
	name   string // vm1, vm2, ... for messages
	alloc  string // FLY_ALLOC_ID
	region string // FLY_REGION
	port   int
	bin    string
	env    map[string]string
	log    *syncBuffer // output of every run, one after the other

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current run ended
	exitErr error         // of the last run, valid once exited is closed
	runs    int
}

func (v *vm) String() string {
	return fmt.Sprintf("%s (alloc %s, region %s, port %d)", v.name, v.alloc, v.region, v.port)
}

func (v *vm) origin() string      { return "http://127.0.0.1:" + strconv.Itoa(v.port) }
func (v *vm) url(p string) string { return v.origin() + p }
func (v *vm) wsURL() string       { return "ws://127.0.0.1:" + strconv.Itoa(v.port) + "/ws" }

// subscription is the name the relay must give its subscription.
func (v *vm) subscription() string {
	return names.Subscription(names.DefaultSubscriptionPrefix, v.alloc)
}

// start runs the relay and waits until /healthz answers 200.
func (v *vm) start(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	if v.cmd != nil {
		v.mu.Unlock()
		t.Fatalf("%s: start: already running", v)
	}
	v.runs++
	fmt.Fprintf(v.log, "==== e2e: run %d of %s at %s ====\n", v.runs, v, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(v.bin)
	cmd.Env = os.Environ()
	for k, val := range v.env {
		cmd.Env = append(cmd.Env, k+"="+val)
	}
	cmd.Stdout = v.log
	cmd.Stderr = v.log
	// If the test binary dies without cleaning up, the kernel ends the VM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		v.mu.Unlock()
		t.Fatalf("%s: start: %v", v, err)
	}
	exited := make(chan struct{})
	v.cmd, v.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		v.mu.Lock()
		v.exitErr = err
		v.mu.Unlock()
		fmt.Fprintf(v.log, "==== e2e: %s exited: %v ====\n", v.name, exitText(err))
		close(exited)
	}()
	v.mu.Unlock()

	if err := v.waitStatus("/healthz", http.StatusOK, 60*time.Second); err != nil {
		t.Fatalf("%s: after start, GET /healthz: %v\n%s", v, err, tail(v.log.String(), 60))
	}
}

// waitReady waits until /readyz answers 200: the VM's subscription receives.
func (v *vm) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := v.waitStatus("/readyz", http.StatusOK, timeout); err != nil {
		t.Fatalf("%s: want GET /readyz 200 (subscription receiving): %v", v, err)
	}
}

// waitStatus polls GET path until it answers want, the process exits, or
// timeout passes.
func (v *vm) waitStatus(path string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 3 * time.Second}
	defer client.CloseIdleConnections()
	last := "no answer"
	for {
		resp, err := client.Get(v.url(path))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if v.hasExited() {
			return fmt.Errorf("process exited (%s) while waiting for %d; last answer: %s", exitText(v.lastExitErr()), want, last)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %d within %s; last answer: %s", want, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// status returns the HTTP status of GET path, or an error.
func (v *vm) status(path string) (int, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(v.url(path))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// get returns the body of GET path.
func (v *vm) get(path string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(v.url(path))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), nil
}

func (v *vm) hasExited() bool {
	v.mu.Lock()
	ch := v.exited
	v.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (v *vm) lastExitErr() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.exitErr
}

// running fails the test if the VM's process has exited.
func (v *vm) running(t *testing.T) {
	t.Helper()
	if v.hasExited() {
		t.Errorf("%s: want the process running, it exited: %s", v, exitText(v.lastExitErr()))
	}
}

// stopResult is how a stop went.
type stopResult struct {
	err  error         // from Wait: nil means exit status 0
	took time.Duration // from the signal to the exit
}

// stop sends sig and waits for the process to exit, at most killTimeout
// plus a margin; then, as Fly would, it sends SIGKILL. The caller checks
// the result against the contract.
func (v *vm) stop(t *testing.T, sig syscall.Signal) stopResult {
	t.Helper()
	v.mu.Lock()
	cmd, exited := v.cmd, v.exited
	v.mu.Unlock()
	if cmd == nil {
		t.Fatalf("%s: stop: not running", v)
	}
	fmt.Fprintf(v.log, "==== e2e: sending %s to %s ====\n", sig, v.name)
	start := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: send %s: %v", v, sig, err)
	}
	var res stopResult
	select {
	case <-exited:
		res.took = time.Since(start)
	case <-time.After(killTimeout + 20*time.Second):
		res.took = time.Since(start)
		_ = cmd.Process.Kill()
		<-exited
	}
	res.err = v.lastExitErr()
	v.mu.Lock()
	v.cmd, v.exited = nil, nil
	v.mu.Unlock()
	return res
}

// kill sends SIGKILL (a crash) and waits for the process to be gone. It
// does nothing if the VM is not running.
func (v *vm) kill() {
	v.mu.Lock()
	cmd, exited := v.cmd, v.exited
	v.mu.Unlock()
	if cmd == nil {
		return
	}
	fmt.Fprintf(v.log, "==== e2e: SIGKILL to %s (a crash, or the end of the test) ====\n", v.name)
	_ = cmd.Process.Kill()
	<-exited
	v.mu.Lock()
	v.cmd, v.exited = nil, nil
	v.mu.Unlock()
}

// restart starts the VM again with the same alloc id, region and port, and
// waits until it is ready.
func (v *vm) restart(t *testing.T) {
	t.Helper()
	v.start(t)
	v.waitReady(t, 90*time.Second)
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "ended by signal " + ws.Signal().String()
		}
	}
	return err.Error()
}

// syncBuffer is a bytes.Buffer safe for the process's writers and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
