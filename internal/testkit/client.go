package testkit

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

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// Client is a real WebSocket client that reads in the background, as a
// browser does, and keeps every frame it reads. Waits look at all frames
// read so far and to come, so the order in which an ack and its alert
// arrive never matters.
type Client struct {
	Name  string
	Hello Frame

	conn    *websocket.Conn
	writeMu sync.Mutex // gorilla allows one writer at a time

	mu       sync.Mutex
	frames   []Frame
	changed  chan struct{} // closed and replaced when frames grows or the connection ends
	done     bool
	closeErr error // what ended the connection
}

// Dial connects to url (ws://host:port/ws...) with header (e.g. an Origin)
// and waits for the hello frame. The caller closes the client.
func Dial(url string, header http.Header, name string) (*Client, error) {
	d := websocket.Dialer{HandshakeTimeout: Wait}
	conn, resp, err := d.Dial(url, header)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %s)", url, err, resp.Status)
		}
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	c := &Client{Name: name, conn: conn, changed: make(chan struct{})}
	go c.readLoop()
	hello, err := c.WaitFrame(Wait, "hello", func(Frame) bool { return true })
	if err == nil && hello.Type != protocol.TypeHello {
		err = fmt.Errorf("%s: first frame: want type hello, got %s", c, hello)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.Hello = hello
	return c, nil
}

// MustDial is Dial that fails the test, and closes the client when the
// test ends.
func MustDial(t testing.TB, url string, header http.Header, name string) *Client {
	t.Helper()
	c, err := Dial(url, header, name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(c.Close)
	return c
}

func (c *Client) String() string { return c.Name }

// Conn is the underlying connection, for tests that write raw frames; use
// SendRaw to write while the client may be writing too.
func (c *Client) Conn() *websocket.Conn { return c.conn }

func (c *Client) readLoop() {
	for {
		typ, data, err := c.conn.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.done, c.closeErr = true, err
		} else {
			c.frames = append(c.frames, Decode(typ, data))
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Close closes the connection politely, then for good.
func (c *Client) Close() {
	c.writeMu.Lock()
	_ = c.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	c.writeMu.Unlock()
	_ = c.conn.Close()
}

// Send writes v as a JSON text frame.
func (c *Client) Send(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.SendRaw(websocket.TextMessage, data)
}

// SendRaw writes one frame of the given type as is.
func (c *Client) SendRaw(typ int, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(Wait))
	if err := c.conn.WriteMessage(typ, data); err != nil {
		return fmt.Errorf("%s: write: %w", c, err)
	}
	return nil
}

// SendAlert sends an alert frame, failing the test if it cannot be written.
func (c *Client) SendAlert(t testing.TB, text, nonce string) {
	t.Helper()
	if err := c.Send(NewAlertRequest(text, nonce)); err != nil {
		t.Fatal(err)
	}
}

// Snapshot returns the frames read so far, whether the connection ended,
// and a channel closed when either changes.
func (c *Client) Snapshot() ([]Frame, bool, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames, c.done, c.changed
}

// Frames returns the frames read so far.
func (c *Client) Frames() []Frame {
	frames, _, _ := c.Snapshot()
	return frames
}

// Mark returns how many frames were read so far, for WaitFrameFrom.
func (c *Client) Mark() int { return len(c.Frames()) }

// WaitFrame returns the first frame, among all read so far and to come,
// that matches. It gives up after timeout or when the connection ends, with
// an error naming the client and what it waited for.
func (c *Client) WaitFrame(timeout time.Duration, what string, match Match) (Frame, error) {
	return c.WaitFrameFrom(0, timeout, what, match)
}

// WaitFrameFrom is WaitFrame that ignores the first from frames.
func (c *Client) WaitFrameFrom(from int, timeout time.Duration, what string, match Match) (Frame, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := from
	for {
		frames, done, changed := c.Snapshot()
		for _, f := range frames[min(seen, len(frames)):] {
			if match(f) {
				return f, nil
			}
		}
		seen = max(seen, len(frames))
		if done {
			return Frame{}, fmt.Errorf("%s: waiting for %s: connection ended (%v) after %d frames%s",
				c, what, c.CloseError(), len(frames), lastFrames(frames))
		}
		select {
		case <-changed:
		case <-deadline.C:
			return Frame{}, fmt.Errorf("%s: no %s within %s; got %d frames%s", c, what, timeout, len(frames), lastFrames(frames))
		}
	}
}

// MustFrame is WaitFrame that fails the test.
func (c *Client) MustFrame(t testing.TB, timeout time.Duration, what string, match Match) Frame {
	t.Helper()
	f, err := c.WaitFrame(timeout, what, match)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// MustAnswer sends an alert and returns its ack or error.
func (c *Client) MustAnswer(t testing.TB, text, nonce string) Frame {
	t.Helper()
	c.SendAlert(t, text, nonce)
	return c.MustFrame(t, Wait, "the answer to "+nonce, AnswerTo(nonce))
}

// lastFrames formats the last few frames for a failure message.
func lastFrames(frames []Frame) string {
	const n = 5
	if len(frames) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("; the last ones:")
	for _, f := range frames[max(0, len(frames)-n):] {
		b.WriteString("\n\t" + f.Raw)
	}
	return b.String()
}

// CloseError is what ended the connection, or nil while it is open.
func (c *Client) CloseError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// AlertCounts counts the alerts read so far by id.
func (c *Client) AlertCounts() map[string]int {
	counts := make(map[string]int)
	for _, f := range c.Frames() {
		if f.Type == protocol.TypeAlert {
			counts[f.ID]++
		}
	}
	return counts
}

// AlertsWithText returns the alerts read so far with this text.
func (c *Client) AlertsWithText(text string) []Frame {
	var out []Frame
	for _, f := range c.Frames() {
		if f.Type == protocol.TypeAlert && f.Text == text {
			out = append(out, f)
		}
	}
	return out
}

// ExpectAlerts waits (up to timeout for each) until c has every alert in
// ids, and fails the test if
// any of them came more than once, or an alert came that is not in ids and
// not allowed by also (which may be nil).
func (c *Client) ExpectAlerts(t testing.TB, timeout time.Duration, ids []string, also Match) map[string]Frame {
	t.Helper()
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	for _, id := range ids {
		c.MustFrame(t, timeout, "alert "+id, IsAlertID(id))
	}
	got := make(map[string]Frame, len(ids))
	for _, f := range c.Frames() {
		if f.Type != protocol.TypeAlert {
			continue
		}
		if _, dup := got[f.ID]; dup {
			t.Errorf("%s: alert %s delivered twice", c, f.ID)
		}
		if !want[f.ID] && (also == nil || !also(f)) {
			t.Errorf("%s: alert nobody sent: %s", c, f)
		}
		got[f.ID] = f
	}
	return got
}

// WaitClosed waits until the server ends the connection and returns the
// close code it sent, or -1 if it ended without a close frame.
func (c *Client) WaitClosed(timeout time.Duration) (int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		_, done, changed := c.Snapshot()
		if done {
			if ce, ok := errors.AsType[*websocket.CloseError](c.CloseError()); ok {
				return ce.Code, nil
			}
			return -1, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return 0, fmt.Errorf("%s: connection still open after %s", c, timeout)
		}
	}
}

// ExpectClose fails the test unless the server closes the connection with
// code within timeout.
func (c *Client) ExpectClose(t testing.TB, timeout time.Duration, code int, why string) {
	t.Helper()
	got, err := c.WaitClosed(timeout)
	if err != nil {
		t.Errorf("%s: want close %d (%s): %v", c, code, why, err)
		return
	}
	if got != code {
		t.Errorf("%s: want close %d (%s), got %d (%v)", c, code, why, got, c.CloseError())
	}
}
