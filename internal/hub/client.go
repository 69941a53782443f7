package hub

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// client is one WebSocket connection: a reader goroutine (read) while the
// client sends something, and a writer goroutine (writeLoop) while it has
// something to write that a broadcast's pump could not (see pump). An idle
// connection holds no goroutine on Linux (it is parked, park_linux.go) and
// one elsewhere. Only the writer (the pump, or the writer goroutine it hands
// over to) writes to the connection (see writer.go).
type client struct {
	hub    *Hub
	conn   *websocket.Conn
	guard  *guardedConn // conn's connection beneath gorilla; nil in some tests
	remote string

	// queue carries broadcasts, the hello and pongs; replies carries this
	// client's acks and errors (never closed: senders stop when done is
	// closed). Whoever adds work calls kick, which starts the writer unless
	// it runs.
	queue   queue
	replies chan []byte
	// ping is the connection's one timer (see onTimer): it fires at the
	// next ping (nextPing, when it sets pingDue and the writer pings and
	// re-arms it) or at the client's deadline (heard + silentAfter), whichever
	// comes first. A parked connection has no read waiting on a deadline,
	// so the timer keeps it. Times are clock() values.
	ping     *time.Timer
	pingDue  atomic.Bool
	nextPing atomic.Int64
	heard    atomic.Int64 // when the client last sent a frame

	alerts   bucket       // the alert budget (Config.RateLimit); the reader's
	inflight atomic.Int32 // publishes not yet answered
	pol      clientPolicy // who may publish, and the bad-frame budgets (policy.go)

	closeOnce   sync.Once
	done        chan struct{} // closed by shutdown
	closeCode   int           // written before done is closed
	closeReason string

	broken bool // a write failed; written and read by the writer only
	// writeDeadline is the connection's write deadline (clock()), or
	// earlier, or 0 before the first; the writer's only (armWrite).
	writeDeadline int64

	writerDone chan struct{}
	readerDone chan struct{}
}

// replyQueueSize bounds acks and errors waiting to be written; when it is
// full the client's reader waits (see reply). The writer empties it on every
// drain, so a few suffice; each slot costs every idle connection 24 bytes.
const replyQueueSize = 4

func newClient(h *Hub, conn *websocket.Conn, remote string) *client {
	c := &client{
		hub:        h,
		conn:       conn,
		remote:     remote,
		replies:    make(chan []byte, replyQueueSize),
		pol:        h.newClientPolicy(remote),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	// The hello is the first frame; the writer starts once the client is
	// registered (see Hub.ServeHTTP).
	c.queue.preload(h.hello, time.Now())
	if conn != nil {
		c.guard, _ = conn.NetConn().(*guardedConn)
	}
	now := clock()
	c.heard.Store(now)
	c.nextPing.Store(now + int64(h.pingPeriod))
	// A timer, not a ticker, and no goroutine.
	c.ping = time.AfterFunc(h.pingPeriod, c.onTimer)
	return c
}

// onTimer ends a client silent for longer than silentAfter (not even a pong),
// asks the writer to ping when it is time, and otherwise re-arms the timer.
func (c *client) onTimer() {
	if c.isDone() {
		return // never re-armed once closing: it would keep c alive
	}
	h := c.hub
	now := clock()
	if silent := time.Duration(now - c.heard.Load()); silent >= h.silentAfter {
		if c.shutdown(0, "") {
			h.log.Info("client disconnected", "remote", c.remote, "err", "no frame, not even a pong, for "+silent.Round(time.Second).String())
		}
		return
	}
	if now >= c.nextPing.Load() {
		c.pingDue.Store(true)
		c.kick() // the writer pings and calls armTimer
		return
	}
	c.armTimer(now)
}

// armTimer sets the timer to the next ping or the client's deadline,
// whichever comes first.
func (c *client) armTimer(now int64) {
	next := min(c.nextPing.Load(), c.heard.Load()+int64(c.hub.silentAfter))
	c.ping.Reset(time.Duration(max(next-now, 0)))
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
	if first {
		c.kick() // the writer sends the close frame
	}
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

// startReader prepares the connection for reading and starts the reader.
func (c *client) startReader() {
	cfg := &c.hub.cfg
	c.conn.SetReadLimit(cfg.ReadLimit)
	_ = c.heardFrom() // the upgrade: silentAfter from now
	// Pongs go through the writer like every other frame (the default
	// handler writes them from here, which could land inside a batch).
	c.conn.SetPingHandler(func(data string) error {
		// Pongs count as unread bytes too: a client that pings without
		// reading is too slow like any other.
		if !c.push(appendFrame(nil, opPong, []byte(data)), time.Now()) &&
			c.shutdown(protocol.CloseTooSlow, protocol.CloseTooSlowReason) {
			c.hub.m.slowCloses.Inc()
		}
		return nil
	})
	c.conn.SetPongHandler(func(string) error {
		if c.isDone() {
			return nil // closing: the writer's grace period decides now
		}
		return c.heardFrom()
	})
	go c.read()
}

// heardFrom notes that the client sent a frame: it is alive for another
// silentAfter.
func (c *client) heardFrom() error {
	c.heard.Store(clock())
	return c.conn.SetReadDeadline(time.Now().Add(c.hub.silentAfter))
}

// read reads client frames until there is nothing to read, then parks the
// connection (park_linux.go) and returns; the parking lot calls it again
// when the client sends more. Where parking is not possible it waits. Once
// the connection ends, read runs its last rites.
func (c *client) read() {
	for {
		if c.guard != nil && !c.guard.readable() {
			if parking.park(c) {
				return
			}
			c.guard.waitReadable()
		}
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			c.readFailed(err)
			c.readerEnded()
			return
		}
		if c.isDone() {
			// We sent (or are sending) a close frame; discard frames until
			// the client's close answer ends the loop.
			continue
		}
		// Any frame shows the client is alive, not only a pong.
		_ = c.heardFrom()
		if typ != websocket.TextMessage {
			c.shutdown(protocol.CloseBinary, protocol.CloseBinaryReason)
			continue
		}
		c.handle(data)
	}
}

// readerEnded runs once the connection can be read no more: when the
// writer is done too, the client leaves the hub.
func (c *client) readerEnded() {
	close(c.readerDone)
	<-c.writerDone
	c.hub.unregister(c)
	c.pol.release()
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
		nc := rawConn(c.conn)
		_ = nc.SetReadDeadline(time.Now().Add(closeGrace))
		_, _ = io.Copy(io.Discard, nc)
		return
	}
	if errors.Is(err, errFragmented) || errors.Is(err, errFrameFlooding) {
		// The frame guard stopped the reads (frameguard.go).
		c.shutdown(protocol.ClosePolicy, protocol.CloseFramesReason)
		log.Info("client flooding frames", "remote", c.remote, "err", err)
		nc := rawConn(c.conn) // drained as after 1009, so the close frame is not reset away
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
		c.allowAlert() // a bad frame costs a token, as an alert does
		c.reject(rej.Code, rej.Nonce, rej.Message)
		return
	}
	if c.forbidden(nonce) {
		c.allowAlert()
		return
	}
	// In-flight publishes are bounded by the bucket size: with a broker that
	// hangs, a client cannot pile up more than a burst of goroutines.
	if int(c.inflight.Load()) >= c.hub.cfg.RateBurst {
		c.reject(protocol.CodeRateLimited, nonce, "too many alerts waiting for the broker; slow down")
		return
	}
	if !c.allowAlert() {
		c.reject(protocol.CodeRateLimited, nonce, "too many alerts; slow down")
		return
	}
	if c.overShared(nonce) {
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

// allowAlert takes a token of the connection's alert budget.
func (c *client) allowAlert() bool {
	return c.alerts.allow(c.hub.cfg.RateLimit, c.hub.cfg.RateBurst)
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
		c.kick()
	case <-c.done:
	}
}

// push queues f for this client, or closes the client as too slow (see
// Config.MaxQueueBytes). It never blocks. It reports whether f was queued.
func (c *client) push(f []byte, now time.Time) bool {
	start, ok := c.enqueue(f, now)
	if start {
		go c.writeLoop(true)
	}
	return ok
}

// enqueue is push without starting the writer: it reports whether the
// caller must start it (the broadcast's pump does, see pump).
func (c *client) enqueue(f []byte, now time.Time) (start, ok bool) {
	return c.queue.push(f, now, c.hub.cfg.MaxQueueBytes, c.hub.cfg.MaxQueueAge)
}

// kick starts the writer unless it is running (or has finished).
func (c *client) kick() {
	if c.queue.claim() {
		go c.writeLoop(true)
	}
}

// writeLoop writes until nothing is left to write, then ends; once the
// client is shut down it closes the connection politely instead. It runs
// when a pump could not finish (a full socket, a stream of alerts, a ping)
// and for what the client's own frames start (replies, pongs); idle
// connections hold none. woken says it starts after a quiet spell (gather).
//
// It calls writeBatch itself, and does everything else in calls that
// return first, so the write system call is made on a shallow stack: a new
// goroutine starts with 2 KiB, and a deeper writer grew it to 4 KiB on
// every burst (a profile at 50 alerts/s put 16 % of the relay's CPU in
// runtime.newstack; docs/performance.md).
func (c *client) writeLoop(woken bool) {
	nc := writeConn(c.conn.NetConn())
	var scratch []byte // for connections without writev
	// Shutting down wins over queued frames: a client closed as too slow
	// gets its close frame next, not after its backlog.
	for ; !c.isDone(); woken = false {
		err := c.pingIfDue()
		if err == nil {
			c.gather(woken)
			batch, size := c.collect()
			if len(batch) > 0 {
				if err = c.armWrite(nc); err == nil {
					err = writeBatch(nc, batch, &scratch)
				}
			}
			c.queue.done(batch, size)
		}
		if err != nil {
			c.writeFailed(err)
			continue
		}
		// Checked under the queue's lock, which push and kick take: work
		// added after this check starts a new writer.
		if c.queue.release(c.writerIdle) {
			return
		}
	}
	c.endWriter()
}

// gather lets frames on their way join the ones the writer is about to
// write, so that they share its system call. A writer just woken writes at
// once, after letting the goroutines already runnable go first: the
// broker's client library runs a goroutine per message, so the rest of a
// batch that arrived together queues its frames meanwhile. A writer that
// found more frames queued as soon as it had written is behind a stream of
// alerts: it waits WriteDelay, and those arriving meanwhile go out with it.
// Measured against waiting every time (docs/performance.md): at 50 alerts/s
// on the emulator, p50 about 5 ms lower and p99 10–15 ms lower for no more
// CPU; at 400–800/s the same CPU within noise.
func (c *client) gather(woken bool) {
	if d := c.hub.cfg.WriteDelay; d > 0 && !woken {
		time.Sleep(d)
		return
	}
	runtime.Gosched()
}

// armWrite makes sure the write about to start has a deadline between
// WriteWait less a tenth of it (at most a second) and WriteWait away.
// Setting a deadline updates a runtime timer, 5 % of a relay's CPU at 50
// alerts/s when done before every write; a client written to every 50 ms
// now has it set once a second.
func (c *client) armWrite(nc net.Conn) error {
	wait := c.hub.cfg.WriteWait
	now := clock()
	if c.writeDeadline != 0 && c.writeDeadline-now >= int64(wait-min(wait/10, time.Second)) {
		return nil
	}
	c.writeDeadline = now + int64(wait)
	return nc.SetWriteDeadline(time.Now().Add(wait))
}

// pingIfDue writes a ping if the connection's timer asked for one.
func (c *client) pingIfDue() error {
	if !c.pingDue.Swap(false) {
		return nil
	}
	err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.hub.cfg.WriteWait))
	now := clock()
	c.nextPing.Store(now + int64(c.hub.pingPeriod))
	c.armTimer(now)
	return err
}

// collect takes every queued frame and every reply waiting, for one write.
func (c *client) collect() (batch [][]byte, size int) {
	batch, size = c.queue.take()
	for {
		select {
		case b := <-c.replies:
			batch = append(batch, textFrame(b))
		default:
			return batch, size
		}
	}
}

// writerIdle reports whether the writer has nothing left to do; called
// under the queue's lock.
func (c *client) writerIdle() bool {
	return len(c.replies) == 0 && !c.pingDue.Load() && !c.isDone()
}

// writeFailed ends a connection whose write failed: it is broken or stuck
// past WriteWait, maybe in the middle of a frame, so nothing more may be
// written, not even a close frame.
func (c *client) writeFailed(err error) {
	c.broken = true
	c.closeConn()
	if c.shutdown(0, "") {
		c.hub.log.Info("client disconnected", "remote", c.remote, "err", err)
	}
}

// endWriter is the writer's last act once the client is shut down.
func (c *client) endWriter() {
	c.ping.Stop()
	c.queue.close()
	c.finish()
	close(c.writerDone) // the queue stays claimed: no writer again
}

// finish sends the close frame chosen by shutdown (if any), waits briefly for
// the client's answer, and closes the TCP connection.
func (c *client) finish() {
	if c.closeCode != 0 && !c.broken {
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
	if err := c.closeConn(); err != nil && !errors.Is(err, net.ErrClosed) {
		c.hub.log.Debug("close connection", "remote", c.remote, "err", err)
	}
}

// closeConn closes the TCP connection. Every close after the reader has
// started goes through here: a parked connection is taken out of the
// parking lot first, so its reader runs, sees the close and ends.
func (c *client) closeConn() error {
	parking.unpark(c)
	return c.conn.Close()
}

// pumpChunk is how many clients one pump writes to in turn: a broadcast to
// many clients gets a pump per chunk, so every core can take part.
const pumpChunk = 128

// pump makes the first write of clients whose writer was not running, for
// one broadcast (fanOut hands it up to pumpChunk of them). Instead of a
// goroutine per client (created, scheduled twice, ended), it writes to each
// in turn without waiting (tryWriter); only a client whose socket does not
// take the whole batch, or that needs more (a ping, its close), gets a
// writer goroutine, which finishes the job as before. Measured against a
// goroutine per client (docs/performance.md): 10 % less relay CPU per
// delivery at 50 alerts/s under `make load` in one run and 22 % in another,
// 10–30 % less in BenchmarkFanOut and BenchmarkFanOutBurst; the write
// system call is now two thirds of it.
//
// It first lets the goroutines already runnable go, as a woken writer does
// (gather): the rest of a batch of messages that arrived together queues
// its frames meanwhile.
func pump(cs []*client) {
	runtime.Gosched()
	w := newTryWriter()
	for _, c := range cs {
		c.writeFirst(w)
	}
}

// writeFirst is the first drain of a writer woken from idle, made by a pump
// without waiting on the client. The pump owns the client's writing (the
// queue is claimed) until it releases it or hands it to a writer goroutine.
func (c *client) writeFirst(w *tryWriter) {
	g, _ := c.conn.NetConn().(*guardedConn)
	if !canPump || g == nil || g.raw == nil || c.pingDue.Load() || c.isDone() {
		go c.writeLoop(true)
		return
	}
	if !g.partial.TryLock() { // gorilla is writing (a close): not now
		go c.writeLoop(true)
		return
	}
	batch, size := c.collect()
	total := 0
	for _, f := range batch {
		total += len(f)
	}
	var n int
	err := c.armWrite(g.Conn)
	if err == nil && total > 0 {
		n, err = w.try(g.raw, batch)
	}
	switch {
	case err != nil:
		g.partial.Unlock()
		c.queue.done(batch, size)
		c.writeFailed(err)
		go c.writeLoop(true) // sees the client done and ends it
	case n < total:
		// The socket is full: wait on it apart, keeping the lock until
		// the frame it is inside is whole.
		go c.writeRest(g, batch, size, n)
	default:
		g.partial.Unlock()
		c.queue.done(batch, size)
		if !c.queue.release(c.writerIdle) {
			// More came while it wrote: a stream of alerts, or a ping.
			go c.writeLoop(false)
		}
	}
}

// writeRest writes what a pump could not, written bytes into batch, then
// goes on as the client's writer. It holds g.partial, taken by the pump.
func (c *client) writeRest(g *guardedConn, batch [][]byte, size, written int) {
	rest := batch
	for written >= len(rest[0]) {
		written -= len(rest[0])
		rest = rest[1:]
	}
	rest[0] = rest[0][written:]
	var scratch []byte
	err := writeBatch(g.Conn, rest, &scratch)
	g.partial.Unlock()
	c.queue.done(batch, size)
	if err != nil {
		c.writeFailed(err)
	}
	c.writeLoop(false)
}
