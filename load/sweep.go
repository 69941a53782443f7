package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// proto is what differs between the systems under load: how a client joins
// after the WebSocket handshake, how it publishes, and how it reads frames.
type proto interface {
	// join runs after the handshake, before any alert is published.
	join(c *websocket.Conn) error
	// publish returns the frame that publishes text with the given nonce.
	publish(text string, nonce int) []byte
	// parse splits a received message into events.
	parse(data []byte, each func(ev event))
}

type event struct {
	kind  int    // evAlert, evAck, evError, evPing
	text  []byte // evAlert: the alert's text
	nonce int    // evAck, evError
	code  string // evError
}

const (
	evAlert = iota + 1
	evAck
	evError
	evPing // the server wants an application-level pong (Centrifugo)
)

// An alert's text carries its sequence number and send time, so any client
// can measure latency without a table shared with the sender: "L<seq>.<ns>".
func alertText(seq int, sent time.Time) string {
	return "L" + strconv.Itoa(seq) + "." + strconv.FormatInt(sent.UnixNano(), 10)
}

func parseText(t []byte) (seq int, sent int64, ok bool) {
	if len(t) < 4 || t[0] != 'L' {
		return 0, 0, false
	}
	dot := bytes.IndexByte(t, '.')
	if dot < 0 {
		return 0, 0, false
	}
	s, err1 := strconv.Atoi(string(t[1:dot]))
	ns, err2 := strconv.ParseInt(string(t[dot+1:]), 10, 64)
	return s, ns, err1 == nil && err2 == nil
}

// skywatchProto speaks Skywatch protocol v1 (docs/protocol.md).
type skywatchProto struct{}

func (skywatchProto) join(c *websocket.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, data, err := c.ReadMessage() // the hello
	if err != nil {
		return err
	}
	if !bytes.Contains(data, []byte(`"hello"`)) {
		return fmt.Errorf("first frame %.80s, want hello", data)
	}
	return c.SetReadDeadline(time.Time{})
}

func (skywatchProto) publish(text string, nonce int) []byte {
	return []byte(`{"type":"alert","text":"` + text + `","nonce":"` + strconv.Itoa(nonce) + `"}`)
}

var textKey = []byte(`"text":"`)

func (skywatchProto) parse(data []byte, each func(event)) {
	if i := bytes.Index(data, []byte(`"type":"alert"`)); i >= 0 {
		if j := bytes.Index(data, textKey); j >= 0 {
			rest := data[j+len(textKey):]
			if k := bytes.IndexByte(rest, '"'); k >= 0 {
				each(event{kind: evAlert, text: rest[:k]})
			}
		}
		return
	}
	var f struct{ Type, Nonce, Code string }
	if json.Unmarshal(data, &f) != nil {
		return
	}
	n, _ := strconv.Atoi(f.Nonce)
	switch f.Type {
	case "ack":
		each(event{kind: evAck, nonce: n})
	case "error":
		each(event{kind: evError, nonce: n, code: f.Code})
	}
}

// client is one WebSocket connection of the load.
type client struct {
	conn  *websocket.Conn
	proto proto
	relay int        // index of its URL
	wmu   sync.Mutex // writes: the publisher and pongs
	// arrived, when the connection is stamped (stamp_linux.go), is when
	// the data of its last read reached the socket, ns since the epoch.
	arrived func() int64

	mu      sync.Mutex
	seen    []uint64   // bitset of sequence numbers received
	got     []delivery // this step's deliveries
	dups    int
	stamped bool // the kernel has stamped a read: sock is the socket's time
}

// delivery is one alert received by one client.
type delivery struct {
	seq  int
	lat  int32 // µs from the publisher's send to this client's read
	sock int32 // µs from the send to its arrival at the client's socket (its read, unstamped)
}

// run is the client's reader; it ends when the connection does.
func (c *client) run(r *recorder) {
	var buf bytes.Buffer // reused: the reader allocates nothing per message
	for {
		_, msg, err := c.conn.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(msg)
		}
		now := time.Now().UnixNano()
		if err != nil {
			r.closed(err)
			return
		}
		at, stamped := now, false // unstamped: timed when read
		if c.arrived != nil {
			// Some kernels take SO_TIMESTAMPNS and never stamp (gVisor).
			if a := c.arrived(); a > 0 && a <= now {
				at, stamped = a, true
			}
		}
		data := buf.Bytes()
		c.proto.parse(data, func(ev event) {
			switch ev.kind {
			case evAlert:
				seq, sent, ok := parseText(ev.text)
				if !ok || seq >= r.maxSeq {
					return // not ours (a deployed app has other users)
				}
				c.mu.Lock()
				w, b := seq/64, uint64(1)<<(seq%64)
				if c.seen[w]&b != 0 {
					c.dups++
				} else {
					c.seen[w] |= b
					c.got = append(c.got, delivery{seq, int32((now - sent) / 1000), int32((at - sent) / 1000)})
					c.stamped = c.stamped || stamped
				}
				c.mu.Unlock()
			case evAck:
				r.acked(ev.nonce)
			case evError:
				r.refused(ev.nonce, ev.code)
			case evPing:
				c.write([]byte("{}"))
			}
		})
	}
}

func (c *client) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.conn.WriteMessage(websocket.TextMessage, b)
}

// recorder holds what the publisher and every client report.
type recorder struct {
	maxSeq int

	mu     sync.Mutex
	state  []int8 // per seq: 0 unsent, 1 sent, 2 acked, 3 refused
	closes map[string]int
	errs   map[string]int
	alive  atomic.Int64
}

func (r *recorder) acked(seq int) {
	r.mu.Lock()
	if seq >= 0 && seq < r.maxSeq {
		r.state[seq] = 2
	}
	r.mu.Unlock()
}

func (r *recorder) refused(seq int, code string) {
	r.mu.Lock()
	if seq >= 0 && seq < r.maxSeq {
		r.state[seq] = 3
	}
	r.errs[code]++
	r.mu.Unlock()
}

func (r *recorder) closed(err error) {
	r.alive.Add(-1)
	key := "error"
	if ce, ok := errors.AsType[*websocket.CloseError](err); ok {
		key = strconv.Itoa(ce.Code)
	} else if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		key = "eof"
	}
	r.mu.Lock()
	r.closes[key]++
	r.mu.Unlock()
}

// stepResult is one rate of the sweep.
type stepResult struct {
	Rate       int            `json:"rate"`
	Sent       int            `json:"sent"`
	Acked      int            `json:"acked"`
	Refused    map[string]int `json:"refused,omitempty"`
	Clients    int            `json:"clients_at_start"`
	Expected   int64          `json:"expected"`
	Delivered  int64          `json:"delivered"`
	Duplicates int            `json:"duplicates"`
	P50ms      float64        `json:"p50_ms"`
	P90ms      float64        `json:"p90_ms"`
	P99ms      float64        `json:"p99_ms"`
	MaxMs      float64        `json:"max_ms"`
	// SocketP50ms and SocketP99ms time the same deliveries when they
	// reached the client's socket (the kernel's receive timestamp; Linux
	// only) instead of when this tool read them: the clients share the
	// machine with what they measure, and wait for it on a busy one.
	SocketP50ms float64 `json:"socket_p50_ms,omitempty"`
	SocketP99ms float64 `json:"socket_p99_ms,omitempty"`
	// FirstP50ms and FirstP99ms are over each alert's first delivery by
	// each relay (the broker's path); SpreadP50ms and SpreadP99ms over each
	// alert's last delivery by a relay minus its first (the fan-out); both
	// are timed at the socket where the kernel stamps arrivals.
	FirstP50ms  float64 `json:"first_p50_ms"`
	FirstP99ms  float64 `json:"first_p99_ms"`
	SpreadP50ms float64 `json:"spread_p50_ms"`
	SpreadP99ms float64 `json:"spread_p99_ms"`
	// BrokerAloneP50ms and BrokerAloneP99ms are the broker's own latency
	// in the same seconds, measured apart from the relays (probe.go).
	BrokerAloneP50ms float64        `json:"broker_alone_p50_ms,omitempty"`
	BrokerAloneP99ms float64        `json:"broker_alone_p99_ms,omitempty"`
	Closes           map[string]int `json:"closes,omitempty"`
	// RelayCPUSeconds is the CPU the relays used during the step (hold and
	// drain); CPUPerDeliveryUS divides it by the deliveries.
	RelayCPUSeconds  float64 `json:"relay_cpu_seconds,omitempty"`
	CPUPerDeliveryUS float64 `json:"relay_cpu_us_per_delivery,omitempty"`
	// LoadCPUSeconds is this tool's own CPU during the step: its clients
	// share the machine with what they measure.
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
	// BrokerCPUSeconds is the emulator's (or Redis's) CPU, when started
	// here; Seconds is the step's wall time (hold and drain).
	BrokerCPUSeconds float64 `json:"broker_cpu_seconds,omitempty"`
	Seconds          float64 `json:"seconds"`
	Sustained        bool    `json:"sustained"`
	// AttackAlerts were sent in bursts (-attack), on top of the rate.
	AttackAlerts int `json:"attack_alerts,omitempty"`
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sweep connects the clients, runs every rate, and disconnects.
func sweep(ctx context.Context, tgt *target, o options, ss *systemSummary, stderr io.Writer) error {
	maxSeq := 0
	for _, r := range o.rates {
		maxSeq += int(float64(r)*o.hold.Seconds()) + r
		maxSeq += o.attackSenders * o.attackBurst * (int(o.hold.Seconds()) + 2)
	}
	rec := &recorder{maxSeq: maxSeq, state: make([]int8, maxSeq), closes: map[string]int{}, errs: map[string]int{}}

	_, rssBefore := usageOf(tgt.procs)
	clients, err := connect(ctx, tgt, o.clients, maxSeq, rec)
	defer func() {
		for _, c := range clients {
			_ = c.conn.Close()
		}
	}()
	if err != nil {
		return err
	}
	ss.Clients = len(clients)
	if len(tgt.procs) > 0 {
		time.Sleep(2 * time.Second) // let the handshakes' garbage go
		_, rssAfter := usageOf(tgt.procs)
		ss.RSSPerConnKiB = round1(float64(rssAfter-rssBefore) / float64(len(clients)))
		fmt.Fprintf(stderr, "%s: %d clients connected, relay RSS %+.1f KiB per connection\n", ss.Name, len(clients), ss.RSSPerConnKiB)
	}

	seq := 0
	for _, rate := range o.rates {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st := runStep(ctx, tgt, clients, rec, rate, &seq, o, stderr)
		ss.Steps = append(ss.Steps, st)
		if st.Sustained {
			ss.Sustained = rate
		}
		alone := "" // only where the broker is the emulator (probe.go)
		if tgt.probe != nil {
			alone = fmt.Sprintf(", broker alone %.1f/%.1f", st.BrokerAloneP50ms, st.BrokerAloneP99ms)
		}
		socket := "" // only where the kernel stamps (stamp_linux.go)
		if st.SocketP99ms > 0 {
			socket = fmt.Sprintf("at the socket %.1f/%.1f, ", st.SocketP50ms, st.SocketP99ms)
		}
		fmt.Fprintf(stderr, "%s %4d/s (+%d in bursts): delivered %d/%d dup %d  p50 %.1f p90 %.1f p99 %.1f max %.1f ms (%sfirst %.1f/%.1f, spread %.1f/%.1f%s)  refused %v closes %v  relay cpu %.2f µs/delivery (%.1f s), broker %.1f s, load tool %.1f s, in %.0f s  sustained=%v\n",
			ss.Name, rate, st.AttackAlerts, st.Delivered, st.Expected, st.Duplicates, st.P50ms, st.P90ms, st.P99ms, st.MaxMs, socket, st.FirstP50ms, st.FirstP99ms, st.SpreadP50ms, st.SpreadP99ms, alone, st.Refused, st.Closes, st.CPUPerDeliveryUS, st.RelayCPUSeconds, st.BrokerCPUSeconds, st.LoadCPUSeconds, st.Seconds, st.Sustained)
	}
	return nil
}

func connect(ctx context.Context, tgt *target, perURL, maxSeq int, rec *recorder) ([]*client, error) {
	// A read buffer that holds a relay's coalesced write whole: one read
	// system call per batch keeps the clients' CPU (which shares the
	// machine with the relays) low.
	d := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 16 << 10, WriteBufferSize: 512,
		NetDialContext: dialStamped}
	total := perURL * len(tgt.urls)
	clients := make([]*client, total)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	for range 32 { // parallel dials, within a listen backlog
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < total && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				conn, _, err := d.DialContext(ctx, tgt.urls[i%len(tgt.urls)], nil)
				if err == nil {
					err = tgt.proto.join(conn)
				}
				if err != nil {
					select {
					case errc <- fmt.Errorf("client %d: %w", i, err):
					default:
					}
					if conn != nil {
						conn.Close()
					}
					continue
				}
				c := &client{conn: conn, proto: tgt.proto, relay: i % len(tgt.urls), seen: make([]uint64, maxSeq/64+1)}
				if sc, ok := conn.NetConn().(interface{ arrived() int64 }); ok {
					c.arrived = sc.arrived
				}
				clients[i] = c
				rec.alive.Add(1)
				go c.run(rec)
			}
		})
	}
	wg.Wait()
	var ok []*client
	for _, c := range clients {
		if c != nil {
			ok = append(ok, c)
		}
	}
	select {
	case err := <-errc:
		return ok, err
	default:
	}
	return ok, ctx.Err()
}

// runStep publishes rate alerts per second for o.hold from random clients,
// waits o.drain for late ones, and tallies.
func runStep(ctx context.Context, tgt *target, clients []*client, rec *recorder, rate int, seq *int, o options, stderr io.Writer) stepResult {
	st := stepResult{Rate: rate, Clients: int(rec.alive.Load())}
	first := *seq
	rec.mu.Lock()
	closesBefore := copyMap(rec.closes)
	errsBefore := copyMap(rec.errs)
	rec.mu.Unlock()
	for _, c := range clients {
		c.mu.Lock()
		c.got = c.got[:0]
		c.dups = 0
		c.mu.Unlock()
	}
	if tgt.probe != nil {
		tgt.probe.take() // the probe's figures of this step only
	}
	cpuBefore, _ := usageOf(tgt.procs)
	brokerBefore, _ := usageOf(tgt.broker)
	selfBefore := selfCPU()

	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	progress := time.NewTicker(time.Second)
	n := int(float64(rate) * o.hold.Seconds())
	for sent := 0; sent < n && ctx.Err() == nil; {
		select {
		case <-tick.C:
		case <-progress.C:
			fmt.Fprintf(stderr, "  %4d/s  t=%2.0fs  sent %d  alive %d\n", rate, time.Since(start).Seconds(), sent, rec.alive.Load())
			// The burst attack of issue 9: a few connections send their
			// whole burst at once, every second.
			for range o.attackSenders {
				c := clients[rand.IntN(len(clients))]
				seqs := make([]int, o.attackBurst)
				for i := range seqs {
					seqs[i] = *seq
					*seq++
				}
				rec.mu.Lock()
				for _, s := range seqs {
					rec.state[s] = 1
				}
				rec.mu.Unlock()
				st.AttackAlerts += len(seqs)
				go func() {
					for _, s := range seqs {
						_ = c.write(tgt.proto.publish(alertText(s, time.Now()), s))
					}
				}()
			}
			continue
		case <-ctx.Done():
			continue
		}
		due := min(n, int(time.Since(start).Seconds()*float64(rate)))
		for ; sent < due; sent++ {
			c := clients[rand.IntN(len(clients))]
			s := *seq
			*seq++
			rec.mu.Lock()
			rec.state[s] = 1
			rec.mu.Unlock()
			// Sent from another goroutine: a client whose socket is full
			// must not hold up the schedule.
			go func() { _ = c.write(tgt.proto.publish(alertText(s, time.Now()), s)) }()
		}
	}
	tick.Stop()
	progress.Stop()
	st.Sent = *seq - first
	// Wait for late deliveries, up to o.drain: until every client has every
	// alert of the step that was not refused.
	drainEnd := time.Now().Add(o.drain)
	for time.Now().Before(drainEnd) && ctx.Err() == nil && !allDelivered(clients, rec, first, *seq) {
		time.Sleep(100 * time.Millisecond)
	}
	cpuAfter, _ := usageOf(tgt.procs)
	st.LoadCPUSeconds = math.Round((selfCPU()-selfBefore).Seconds()*100) / 100
	brokerAfter, _ := usageOf(tgt.broker)
	st.BrokerCPUSeconds = math.Round((brokerAfter-brokerBefore).Seconds()*100) / 100
	st.Seconds = math.Round(time.Since(start).Seconds()*10) / 10

	rec.mu.Lock()
	acked, refused := 0, 0
	for s := first; s < *seq; s++ {
		switch rec.state[s] {
		case 2:
			acked++
		case 3:
			refused++
		}
	}
	st.Acked = acked
	st.Refused = diffMap(rec.errs, errsBefore)
	st.Closes = diffMap(rec.closes, closesBefore)
	rec.mu.Unlock()

	var lat, sock []int64
	paths := newPaths(first, *seq, len(tgt.urls))
	for _, c := range clients {
		c.mu.Lock()
		for _, d := range c.got {
			lat = append(lat, int64(d.lat))
			if c.stamped {
				sock = append(sock, int64(d.sock))
			}
			paths.add(c.relay, d)
		}
		st.Duplicates += c.dups
		for s := first; s < *seq; s++ {
			if c.seen[s/64]&(1<<(s%64)) != 0 {
				st.Delivered++
			}
		}
		c.mu.Unlock()
	}
	// Every client connected at the start should get every alert that was
	// not refused (an ack may still be on its way when a step ends).
	st.Expected = int64(st.Sent-refused) * int64(st.Clients)
	slices.Sort(lat)
	st.P50ms, st.P90ms, st.P99ms = pct(lat, 50), pct(lat, 90), pct(lat, 99)
	slices.Sort(sock)
	st.SocketP50ms, st.SocketP99ms = pct(sock, 50), pct(sock, 99) // 0 unstamped
	if tgt.probe != nil {
		alone := tgt.probe.take()
		st.BrokerAloneP50ms, st.BrokerAloneP99ms = pct(alone, 50), pct(alone, 99)
	}
	firsts, spreads := paths.split()
	st.FirstP50ms, st.FirstP99ms = pct(firsts, 50), pct(firsts, 99)
	st.SpreadP50ms, st.SpreadP99ms = pct(spreads, 50), pct(spreads, 99)
	if len(lat) > 0 {
		st.MaxMs = round1(float64(lat[len(lat)-1]) / 1000)
	}
	if len(tgt.procs) > 0 {
		cpu := cpuAfter - cpuBefore
		st.RelayCPUSeconds = math.Round(cpu.Seconds()*100) / 100
		if st.Delivered > 0 {
			st.CPUPerDeliveryUS = math.Round(float64(cpu.Nanoseconds())/float64(st.Delivered)/10) / 100
		}
	}
	st.Sustained = st.Sent > 0 && st.Acked == st.Sent && st.Delivered == st.Expected &&
		st.Duplicates == 0 && st.P99ms <= 250 && len(st.Closes) == 0
	return st
}

// paths splits each delivery's latency in two, per alert and relay: the
// alert's first delivery by that relay is the broker's path (the publish,
// the broker, the relay's receive and one write); its last delivery minus
// its first is the relay's fan-out (and the clients' reading, where the
// kernel does not stamp arrivals: stamp_linux.go). The two tell a slow
// broker from a slow relay, or from a slow load tool.
type paths struct {
	first, relays    int
	earliest, latest []int64 // per alert and relay, µs
}

func newPaths(first, end, relays int) *paths {
	p := &paths{first: first, relays: relays,
		earliest: make([]int64, (end-first)*relays), latest: make([]int64, (end-first)*relays)}
	for i := range p.earliest {
		p.earliest[i] = math.MaxInt64
	}
	return p
}

func (p *paths) add(relay int, d delivery) {
	i := (d.seq-p.first)*p.relays + relay
	if d.seq < p.first || i >= len(p.earliest) {
		return // an earlier step's alert, delivered late
	}
	p.earliest[i] = min(p.earliest[i], int64(d.sock))
	p.latest[i] = max(p.latest[i], int64(d.sock))
}

// split returns the first deliveries and the fan-out spreads, each sorted,
// of every alert and relay that delivered it.
func (p *paths) split() (firsts, spreads []int64) {
	for i, e := range p.earliest {
		if e != math.MaxInt64 {
			firsts = append(firsts, e)
			spreads = append(spreads, p.latest[i]-e)
		}
	}
	slices.Sort(firsts)
	slices.Sort(spreads)
	return firsts, spreads
}

func pct(sorted []int64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	i = min(max(i-1, 0), len(sorted)-1)
	return round1(float64(sorted[i]) / 1000)
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

func copyMap(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func diffMap(now, before map[string]int) map[string]int {
	d := map[string]int{}
	for k, v := range now {
		if v-before[k] > 0 {
			d[k] = v - before[k]
		}
	}
	if len(d) == 0 {
		return nil
	}
	return d
}

// allDelivered reports whether every live client has every alert in
// [first, end) that was not refused.
func allDelivered(clients []*client, rec *recorder, first, end int) bool {
	rec.mu.Lock()
	var want []int
	for s := first; s < end; s++ {
		if rec.state[s] != 3 {
			want = append(want, s)
		}
	}
	rec.mu.Unlock()
	for _, c := range clients {
		c.mu.Lock()
		for _, s := range want {
			if c.seen[s/64]&(1<<(s%64)) == 0 {
				c.mu.Unlock()
				return false
			}
		}
		c.mu.Unlock()
	}
	return true
}
