//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// dial connects to v's /ws, as a page of v's own origin would, and waits for
// the hello frame, which must name v. The connection closes when the test
// ends.
func dial(t *testing.T, v *vm, name string) *testkit.Client {
	t.Helper()
	c, err := tryDial(v, name, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// tryDial is dial without a test, with a query for /ws (e.g. since=…): it
// returns the error.
func tryDial(v *vm, name, query string) (*testkit.Client, error) {
	c, err := testkit.Dial(v.WS(query), http.Header{"Origin": {v.Origin()}}, name+" on "+v.name)
	if err != nil {
		return nil, err
	}
	if h := c.Hello; h.VM != v.alloc || h.Region != v.region || h.Protocol != protocol.Version {
		c.Close()
		return nil, fmt.Errorf("%s: hello: want vm %q region %q protocol %d, got %s", c, v.alloc, v.region, protocol.Version, h)
	}
	return c, nil
}

// follower is a Go client that behaves like the page: connected to one VM,
// it reconnects when that VM goes away, trying each VM of its list in turn,
// and keeps every frame it reads from any of them.
type follower struct {
	name string
	vms  []*vm

	mu      sync.Mutex
	frames  []followed
	closes  []string // how each connection ended, for messages
	changed chan struct{}

	stop chan struct{}
	done chan struct{}
}

// followed is a frame and the VM it came from.
type followed struct {
	testkit.Frame
	from *vm
}

// follow starts a follower on vms[0], falling back to the others in order.
// It stops when the test ends.
func follow(t *testing.T, name string, vms ...*vm) *follower {
	t.Helper()
	f := &follower{name: name, vms: vms, changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go f.loop()
	t.Cleanup(func() {
		close(f.stop)
		<-f.done
	})
	return f
}

func (f *follower) loop() {
	defer close(f.done)
	idx, failures := 0, 0
	for {
		select {
		case <-f.stop:
			return
		default:
		}
		v := f.vms[idx]
		c, err := tryDial(v, f.name, "")
		if err != nil {
			f.note(nil, fmt.Sprintf("dial %s: %v", v.name, err))
			idx = (idx + 1) % len(f.vms)
			failures++
			// Like the page: next candidate at once, back off once all failed.
			wait := time.Duration(0)
			if failures >= len(f.vms) {
				wait = min(5*time.Second, 250*time.Millisecond<<min(failures-len(f.vms), 5))
			}
			select {
			case <-f.stop:
				return
			case <-time.After(wait):
			}
			continue
		}
		failures = 0
		seen := 0
		for {
			frames, ended, changed := c.Snapshot()
			for _, fr := range frames[seen:] {
				f.note(&followed{Frame: fr, from: v}, "")
			}
			seen = len(frames)
			if ended {
				code, _ := c.WaitClosed(0)
				f.note(nil, fmt.Sprintf("%s closed %d (%v)", v.name, code, c.CloseError()))
				break
			}
			select {
			case <-changed:
			case <-f.stop:
				c.Close()
				return
			}
		}
		c.Close()
		idx = (idx + 1) % len(f.vms)
	}
}

// note records a frame or how a connection ended, and wakes waiters.
func (f *follower) note(fr *followed, closed string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fr != nil {
		f.frames = append(f.frames, *fr)
	}
	if closed != "" {
		f.closes = append(f.closes, closed)
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// wait returns the first frame so far or to come that matches, or fails
// the test after timeout.
func (f *follower) wait(t *testing.T, timeout time.Duration, what string, match func(followed) bool) followed {
	t.Helper()
	deadline := time.After(timeout)
	seen := 0
	for {
		f.mu.Lock()
		frames, changed, closes := f.frames, f.changed, slices.Clone(f.closes)
		f.mu.Unlock()
		for _, fr := range frames[seen:] {
			if match(fr) {
				return fr
			}
		}
		seen = len(frames)
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("follower %s: no %s within %s; connections so far ended: %v", f.name, what, timeout, closes)
		}
	}
}

// ended returns how each of its connections ended so far.
func (f *follower) ended() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.closes)
}
