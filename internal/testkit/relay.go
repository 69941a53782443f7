package testkit

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Endpoint is a relay's address, host:port, and what tests ask of it over
// HTTP.
type Endpoint string

// Origin is the page's origin as a browser would send it.
func (e Endpoint) Origin() string { return "http://" + string(e) }

// URL is the http URL of path.
func (e Endpoint) URL(path string) string { return e.Origin() + path }

// WS is the relay's WebSocket URL; query, if not empty, is appended.
func (e Endpoint) WS(query string) string {
	u := "ws://" + string(e) + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// Status returns the HTTP status of GET path.
func (e Endpoint) Status(path string) (int, error) {
	code, _, err := e.get(path)
	return code, err
}

// Get returns the body of GET path, and an error unless it answered 200.
func (e Endpoint) Get(path string) (string, error) {
	code, body, err := e.get(path)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET %s: %d", path, code)
	}
	return body, err
}

func (e Endpoint) get(path string) (int, string, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get(e.URL(path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// WaitStatus polls GET path until it answers want, alive returns an error
// (the relay is gone: no point waiting), or timeout passes.
func (e Endpoint) WaitStatus(path string, want int, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		code, err := e.Status(path)
		if err == nil && code == want {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprint(code)
		}
		if alive != nil {
			if err := alive(); err != nil {
				return fmt.Errorf("%w while waiting for %d; last answer: %s", err, want, last)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %d within %s; last answer: %s", want, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Process runs a relay binary as Fly runs a machine: started with an
// environment, stopped by a signal, or killed. Its output, across every
// run, goes to Log.
type Process struct {
	Name string
	Bin  string
	Env  map[string]string
	Log  *SyncBuffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current run ended
	exitErr error         // of the last run, valid once exited is closed
	runs    int
}

// Start starts a run. It does not wait for anything.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s: already running", p.Name)
	}
	if p.Log == nil {
		p.Log = &SyncBuffer{}
	}
	p.runs++
	fmt.Fprintf(p.Log, "==== testkit: run %d of %s at %s ====\n", p.runs, p.Name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.Bin)
	cmd.Env = os.Environ()
	for k, v := range p.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = p.Log, p.Log
	cmd.SysProcAttr = DiesWithParent(nil)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start: %w", p.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		fmt.Fprintf(p.Log, "==== testkit: %s exited: %v ====\n", p.Name, ExitText(err))
		close(exited)
	}()
	return nil
}

// Pid is the running process's id, or 0.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Alive returns nil while the current run goes on, and how it ended once
// it has.
func (p *Process) Alive() error {
	p.mu.Lock()
	ch, err := p.exited, p.exitErr
	p.mu.Unlock()
	if ch == nil {
		return errors.New("process not started")
	}
	select {
	case <-ch:
		return fmt.Errorf("process exited (%s)", ExitText(err))
	default:
		return nil
	}
}

// Stopped is how a stop went.
type Stopped struct {
	Err  error         // from Wait: nil means exit status 0
	Took time.Duration // from the signal to the exit
}

// Stop sends sig and waits for the process to exit, at most within; then,
// as Fly does after kill_timeout, it sends SIGKILL. The caller checks the
// result against the contract.
func (p *Process) Stop(sig syscall.Signal, within time.Duration) (Stopped, error) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return Stopped{}, fmt.Errorf("%s: stop: not running", p.Name)
	}
	fmt.Fprintf(p.Log, "==== testkit: sending %s to %s ====\n", sig, p.Name)
	start := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		return Stopped{}, fmt.Errorf("%s: send %s: %w", p.Name, sig, err)
	}
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		_ = cmd.Process.Kill()
		<-exited
	}
	res := Stopped{Took: time.Since(start)}
	p.mu.Lock()
	res.Err = p.exitErr
	p.cmd, p.exited = nil, nil
	p.mu.Unlock()
	return res, nil
}

// Kill sends SIGKILL (a crash) and waits for the process to be gone. It
// does nothing if the process is not running.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	fmt.Fprintf(p.Log, "==== testkit: SIGKILL to %s ====\n", p.Name)
	_ = cmd.Process.Kill()
	<-exited
	p.mu.Lock()
	p.cmd, p.exited = nil, nil
	p.mu.Unlock()
}

// ExitText says how a process ended, for messages.
func ExitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "ended by signal " + ws.Signal().String()
		}
	}
	return err.Error()
}
