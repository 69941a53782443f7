//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// frame is any server frame of protocol v1; fields a type does not use stay
// empty. raw keeps the frame as sent, for messages.
type frame struct {
	Type     string  `json:"type"`
	VM       string  `json:"vm,omitempty"`
	Region   string  `json:"region,omitempty"`
	Protocol int     `json:"protocol,omitempty"`
	ID       string  `json:"id,omitempty"`
	Text     string  `json:"text,omitempty"`
	Nonce    string  `json:"nonce,omitempty"`
	Code     string  `json:"code,omitempty"`
	Message  string  `json:"message,omitempty"`
	Origin   *origin `json:"origin,omitempty"`
	SentAt   string  `json:"sent_at,omitempty"`

	raw string
	at  time.Time // when the client read it
}

type origin struct {
	VM     string `json:"vm"`
	Region string `json:"region"`
}

func (f frame) String() string { return f.raw }

// wsClient is a WebSocket client of one VM that keeps every frame it reads.
type wsClient struct {
	name string
	vm   *vm
	conn *websocket.Conn

	hello frame

	writeMu sync.Mutex // gorilla allows one writer at a time

	mu       sync.Mutex
	frames   []frame
	changed  chan struct{} // closed and replaced when frames grows or the connection ends
	done     bool
	closeErr error // what ended the connection
}

// dial connects to v's /ws, as a page of v's own origin would, and waits for
// the hello frame, which must name v. The connection closes when the test
// ends.
func dial(t *testing.T, v *vm, name string) *wsClient {
	t.Helper()
	c, err := tryDial(v, name)
	if err != nil {
		t.Fatalf("%s on %s: %v", name, v, err)
	}
	t.Cleanup(c.close)
	return c
}

// tryDial is dial without a test: it returns the error.
func tryDial(v *vm, name string) (*wsClient, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	hdr := http.Header{"Origin": {v.origin()}}
	conn, resp, err := d.Dial(v.wsURL(), hdr)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %s)", v.wsURL(), err, resp.Status)
		}
		return nil, fmt.Errorf("dial %s: %w", v.wsURL(), err)
	}
	c := &wsClient{name: name, vm: v, conn: conn, changed: make(chan struct{})}
	go c.readLoop()
	hello, err := c.waitFrame(15*time.Second, "hello", func(f frame) bool { return true })
	if err != nil {
		c.close()
		return nil, err
	}
	if hello.Type != "hello" {
		c.close()
		return nil, fmt.Errorf("first frame: want type hello, got %s", hello)
	}
	if hello.VM != v.alloc || hello.Region != v.region || hello.Protocol != 1 {
		c.close()
		return nil, fmt.Errorf("hello: want vm %q region %q protocol 1, got %s", v.alloc, v.region, hello)
	}
	c.hello = hello
	return c, nil
}

func (c *wsClient) String() string { return c.name + " on " + c.vm.name }

func (c *wsClient) readLoop() {
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.done, c.closeErr = true, err
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			return
		}
		f := frame{raw: string(data), at: time.Now()}
		if typ != websocket.TextMessage {
			f.Type = "!binary"
		} else if err := json.Unmarshal(data, &f); err != nil {
			f.Type = "!invalid-json"
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// close closes the connection politely, then for good.
func (c *wsClient) close() {
	c.writeMu.Lock()
	_ = c.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	c.writeMu.Unlock()
	_ = c.conn.Close()
}

// send writes v as a JSON text frame.
func (c *wsClient) send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.sendRaw(websocket.TextMessage, data)
}

// sendRaw writes one frame of the given type as is.
func (c *wsClient) sendRaw(typ int, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.conn.WriteMessage(typ, data); err != nil {
		return fmt.Errorf("%s: write: %w", c, err)
	}
	return nil
}

type alertMsg struct {
	Type  string `json:"type"`
	Text  string `json:"text,omitempty"`
	Nonce string `json:"nonce,omitempty"`
}

// sendAlert sends an alert frame and fails the test if it cannot be written.
func (c *wsClient) sendAlert(t *testing.T, text, nonce string) {
	t.Helper()
	if err := c.send(alertMsg{Type: "alert", Text: text, Nonce: nonce}); err != nil {
		t.Fatal(err)
	}
}

// snapshot returns the frames read so far, whether the connection ended,
// and a channel closed when that changes.
func (c *wsClient) snapshot() ([]frame, bool, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames, c.done, c.changed
}

// waitFrame returns the first frame, among all read so far and to come,
// for which match is true. It gives up after timeout or when the connection
// ends, with an error naming the client and what it waited for.
func (c *wsClient) waitFrame(timeout time.Duration, what string, match func(frame) bool) (frame, error) {
	return c.waitFrameFrom(0, timeout, what, match)
}

// mark returns how many frames were read so far, for waitFrameFrom.
func (c *wsClient) mark() int {
	frames, _, _ := c.snapshot()
	return len(frames)
}

// waitFrameFrom is waitFrame that ignores the first from frames.
func (c *wsClient) waitFrameFrom(from int, timeout time.Duration, what string, match func(frame) bool) (frame, error) {
	deadline := time.After(timeout)
	seen := from
	for {
		frames, done, changed := c.snapshot()
		for _, f := range frames[seen:] {
			if match(f) {
				return f, nil
			}
		}
		seen = len(frames)
		if done {
			return frame{}, fmt.Errorf("%s: waiting for %s: connection ended (%v) after %d frames%s",
				c, what, c.closeError(), len(frames), lastFrames(frames))
		}
		select {
		case <-changed:
		case <-deadline:
			return frame{}, fmt.Errorf("%s: no %s within %s; got %d frames%s", c, what, timeout, len(frames), lastFrames(frames))
		}
	}
}

// lastFrames formats the last few frames for a failure message.
func lastFrames(frames []frame) string {
	const n = 5
	if len(frames) == 0 {
		return ""
	}
	start := max(0, len(frames)-n)
	var b strings.Builder
	b.WriteString("; the last ones:")
	for _, f := range frames[start:] {
		b.WriteString("\n\t" + f.raw)
	}
	return b.String()
}

func (c *wsClient) closeError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// mustFrame is waitFrame that fails the test.
func (c *wsClient) mustFrame(t *testing.T, timeout time.Duration, what string, match func(frame) bool) frame {
	t.Helper()
	f, err := c.waitFrame(timeout, what, match)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func isAlertText(text string) func(frame) bool {
	return func(f frame) bool { return f.Type == "alert" && f.Text == text }
}

// ackOrError matches the answer to the alert with this nonce.
func ackOrError(nonce string) func(frame) bool {
	return func(f frame) bool { return (f.Type == "ack" || f.Type == "error") && f.Nonce == nonce }
}

// alertCounts counts the alerts read so far by id.
func (c *wsClient) alertCounts() map[string]int {
	frames, _, _ := c.snapshot()
	counts := make(map[string]int)
	for _, f := range frames {
		if f.Type == "alert" {
			counts[f.ID]++
		}
	}
	return counts
}

// alertsWithText returns the alerts read so far with this text.
func (c *wsClient) alertsWithText(text string) []frame {
	frames, _, _ := c.snapshot()
	var out []frame
	for _, f := range frames {
		if f.Type == "alert" && f.Text == text {
			out = append(out, f)
		}
	}
	return out
}

// waitClosed waits until the server ends the connection and returns the
// close code it sent, or -1 if it ended without a close frame.
func (c *wsClient) waitClosed(timeout time.Duration) (int, error) {
	deadline := time.After(timeout)
	for {
		_, done, changed := c.snapshot()
		if done {
			var ce *websocket.CloseError
			if errors.As(c.closeError(), &ce) {
				return ce.Code, nil
			}
			return -1, nil
		}
		select {
		case <-changed:
		case <-deadline:
			return 0, fmt.Errorf("%s: connection still open after %s", c, timeout)
		}
	}
}

// expectClose fails the test unless the server closes the connection with
// code within timeout.
func (c *wsClient) expectClose(t *testing.T, timeout time.Duration, code int, why string) {
	t.Helper()
	got, err := c.waitClosed(timeout)
	if err != nil {
		t.Errorf("%s: want close %d (%s): %v", c, code, why, err)
		return
	}
	if got != code {
		t.Errorf("%s: want close %d (%s), got %d (%v)", c, code, why, got, c.closeError())
	}
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
	frame
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
		c, err := tryDial(v, f.name)
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
			frames, ended, changed := c.snapshot()
			for _, fr := range frames[seen:] {
				f.note(&followed{frame: fr, from: v}, "")
			}
			seen = len(frames)
			if ended {
				code, _ := c.waitClosed(0)
				f.note(nil, fmt.Sprintf("%s closed %d (%v)", v.name, code, c.closeError()))
				break
			}
			select {
			case <-changed:
			case <-f.stop:
				c.close()
				return
			}
		}
		c.close()
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
		frames, changed, closes := f.frames, f.changed, slicesClone(f.closes)
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
	return slicesClone(f.closes)
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }
