package hub

import (
	"context"
	"errors"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// client is one WebSocket connection: a reader (readPump, on the HTTP
// handler's goroutine) and a writer (writePump). Only the writer writes data
// frames; control frames (close, pong) may come from either, which gorilla
// allows.
type client struct {
	hub    *Hub
	conn   *websocket.Conn
	remote string

	// send carries broadcasts; replies carries this
	// client's acks and errors. Neither is ever closed: senders stop when
	// done is closed.
	send    chan *websocket.PreparedMessage
	replies chan []byte
	// preface is written before anything else: hello, and a resume's
	// replay and resumed frame. Set before the client is registered.
	preface []*websocket.PreparedMessage

	limiter  *rate.Limiter
	inflight atomic.Int32 // publishes not yet answered

	closeOnce   sync.Once
	done        chan struct{} // closed by shutdown
	closeCode   int           // written before done is closed
	closeReason string

	writerDone chan struct{}
	readerDone chan struct{}
}

// replyQueueSize bounds acks and errors waiting to be written; when it is
// full the client's reader waits (see reply).
const replyQueueSize = 16

func newClient(h *Hub, conn *websocket.Conn, remote string) *client {
	return &client{
		hub:        h,
		conn:       conn,
		remote:     remote,
		send:       make(chan *websocket.PreparedMessage, h.cfg.QueueSize),
		replies:    make(chan []byte, replyQueueSize),
		limiter:    rate.NewLimiter(h.cfg.RateLimit, h.cfg.RateBurst),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
		readerDone: make(chan struct{}),
	}
}

// shutdown asks the writer to close the connection, with a close frame if
// code is not 0. Only the first call counts; it reports whether it was the
// first. It never blocks, so Deliver can call it.
func (c *client) shutdown(code int, reason string) bool {
	first := false
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.done)
		first = true
	})
	return first
}

func (c *client) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// readPump reads client frames until the connection ends.
func (c *client) readPump() {
	defer close(c.readerDone)
	cfg := &c.hub.cfg
	c.conn.SetReadLimit(cfg.ReadLimit)
	_ = c.conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	c.conn.SetPongHandler(func(string) error {
		if c.isDone() {
			return nil // closing: the writer's grace period decides now
		}
		return c.conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
	})
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			c.readFailed(err)
			return
		}
		if c.isDone() {
			// We sent (or are sending) a close frame; discard frames until
			// the client's close answer ends the loop.
			continue
		}
		// Any frame shows the client is alive, not only a pong.
		_ = c.conn.SetReadDeadline(time.Now().Add(cfg.PongWait))
		if typ != websocket.TextMessage {
			c.shutdown(protocol.CloseBinary, protocol.CloseBinaryReason)
			continue
		}
		c.handle(data)
	}
}

// readFailed ends the connection after a read error and logs why, once.
func (c *client) readFailed(err error) {
	log := c.hub.log
	if errors.Is(err, websocket.ErrReadLimit) {
		// Gorilla has already sent close 1009. Its reader is now unusable,
		// so drain the raw connection until the client hangs up (or the
		// grace period ends): closing with its oversized frame unread would
		// reset the connection and could destroy the 1009 before the client
		// reads it.
		c.shutdown(websocket.CloseMessageTooBig, "")
		log.Info("client closed", "remote", c.remote, "code", websocket.CloseMessageTooBig, "reason", "frame over read limit")
		nc := c.conn.NetConn()
		_ = nc.SetReadDeadline(time.Now().Add(closeGrace))
		_, _ = io.Copy(io.Discard, nc)
		return
	}
	serverClosed := !c.shutdown(0, "") // the server had already decided to close
	switch {
	case serverClosed:
		// The server closed; the writer logs the reason.
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived):
		log.Debug("client disconnected", "remote", c.remote, "err", err)
	default:
		// Not an error of ours: browsers vanish, networks drop, and a
		// client that stops answering pings ends here too.
		log.Info("client disconnected", "remote", c.remote, "err", err)
	}
}

// handle answers one client text frame.
func (c *client) handle(data []byte) {
	text, nonce, rej := protocol.ParseRequest(data)
	if rej != nil {
		c.replyError(rej.Code, rej.Nonce, rej.Message)
		return
	}
	// In-flight publishes are bounded by the bucket size: with a broker that
	// hangs, a client cannot pile up more than a burst of goroutines.
	if int(c.inflight.Load()) >= c.hub.cfg.RateBurst {
		c.replyError(protocol.CodeRateLimited, nonce, "too many alerts waiting for the broker; slow down")
		return
	}
	if !c.limiter.Allow() {
		c.replyError(protocol.CodeRateLimited, nonce, "too many alerts; slow down")
		return
	}
	a := protocol.NewAlert(text, protocol.Origin{VM: c.hub.cfg.VM, Region: c.hub.cfg.Region}, time.Now())
	payload := protocol.Encode(a)
	c.inflight.Add(1)
	c.hub.wg.Add(1) // the connection is counted, so wg is not at zero here
	// Published off the reader so a slow broker never stops this client's
	// reads (and its pongs).
	go c.publish(a.ID, nonce, payload)
}

// publish sends one alert to the broker and answers the sender.
func (c *client) publish(id, nonce string, payload []byte) {
	defer c.hub.wg.Done()
	defer c.inflight.Add(-1)
	h := c.hub
	// h.ctx is cancelled when Close gives up, abandoning publishes too.
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.PublishTimeout)
	start := time.Now()
	err := h.pub.Publish(ctx, payload)
	cancel()
	h.m.publishSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		h.log.Warn("publish failed", "remote", c.remote, "id", id, "err", err)
		c.replyError(protocol.CodeUnavailable, nonce, "the alert was not sent; try again later")
		return
	}
	h.m.published.Inc()
	c.reply(protocol.Ack{Type: protocol.TypeAck, Nonce: nonce, ID: id})
}

func (c *client) replyError(code, nonce, message string) {
	c.hub.m.errors.WithLabelValues(code).Inc()
	c.reply(protocol.Error{Type: protocol.TypeError, Code: code, Nonce: nonce, Message: message})
}

// reply queues a frame for this client only. Unlike broadcasts it waits for
// room in the queue: a client that sends faster than it reads its answers is
// slowed down (its reader stops reading, TCP pushes back) rather than closed.
// It gives up when the client is shut down, which a stuck writer causes
// within WriteWait, so it never waits forever.
func (c *client) reply(v any) {
	b := protocol.Encode(v)
	select {
	case c.replies <- b:
	case <-c.done:
	}
}

// writePump writes queued frames and pings until the client is shut down,
// then closes the connection politely.
func (c *client) writePump() {
	defer close(c.writerDone)
	cfg := &c.hub.cfg
	ping := time.NewTicker(c.hub.pingPeriod)
	defer ping.Stop()
	c.writePreface()
	for {
		// Shutting down wins over queued frames: a client closed as too
		// slow gets its close frame next, not after its backlog.
		if c.isDone() {
			c.finish()
			return
		}
		var err error
		select {
		case <-c.done:
			continue
		case pm := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(cfg.WriteWait))
			err = c.conn.WritePreparedMessage(pm)
		case b := <-c.replies:
			_ = c.conn.SetWriteDeadline(time.Now().Add(cfg.WriteWait))
			err = c.conn.WriteMessage(websocket.TextMessage, b)
		case <-ping.C:
			err = c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteWait))
		}
		if err != nil {
			// The connection is broken or stuck past WriteWait; no close
			// frame can get through.
			if c.shutdown(0, "") {
				c.hub.log.Info("client disconnected", "remote", c.remote, "err", err)
			}
		}
	}
}

// finish sends the close frame chosen by shutdown (if any), waits briefly for
// the client's answer, and closes the TCP connection.
func (c *client) finish() {
	if c.closeCode != 0 {
		err := c.conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(c.closeCode, c.closeReason), time.Now().Add(c.hub.cfg.WriteWait))
		switch c.closeCode {
		case websocket.CloseMessageTooBig: // logged by the reader
		case protocol.CloseRestart: // every client at shutdown; Close logs once
			c.hub.log.Debug("client closed", "remote", c.remote, "code", c.closeCode, "reason", c.closeReason)
		default:
			c.hub.log.Info("client closed", "remote", c.remote, "code", c.closeCode, "reason", c.closeReason)
		}
		if err == nil || errors.Is(err, websocket.ErrCloseSent) {
			t := time.NewTimer(closeGrace)
			select {
			case <-c.readerDone:
			case <-t.C:
			}
			t.Stop()
		}
	}
	if err := c.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		c.hub.log.Debug("close connection", "remote", c.remote, "err", err)
	}
}
