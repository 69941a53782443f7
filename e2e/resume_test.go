//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// Resuming (docs/protocol.md): clients that reconnect with ?since= get what
// they missed, from any VM.

// resumeMargin is the relays' default RESUME_MARGIN.
const resumeMargin = 5 * time.Second

// restartPause is how long a rolling restart waits between stopping a VM
// and starting it again with the same alloc id. The official emulator
// (build 0.8.20) cannot close a cancelled streaming pull: if ID_<alloc> is
// made again within about a second of the previous process stopping, the
// dead stream keeps taking about half of the new subscription's messages,
// which then never reach the new process. Production Pub/Sub has no such
// bug, and Fly takes longer than this to replace a machine anyway.
const restartPause = 2500 * time.Millisecond

// coverageSettle is how long a VM runs after it is ready before the next
// one is stopped, so that its history's coverage starts well before any
// since its new clients bring (a since is the newest alert a client holds,
// and the relay vouches from since minus the margin).
const coverageSettle = resumeMargin + 5*time.Second

// dialSince connects to v's /ws with ?since= (none if since is empty) and
// waits for the hello, as tryDial does.
func dialSince(v *vm, name, since string) (*testkit.Client, error) {
	query := ""
	if since != "" {
		query = "since=" + url.QueryEscape(since)
	}
	return tryDial(v, name, query)
}

// resumedInfo is a resumed frame.
type resumedInfo struct {
	Recovered bool   `json:"recovered"`
	Replayed  int    `json:"replayed"`
	From      string `json:"from"`
	vm        string
	since     string
}

// resumer behaves like the page: it keeps the alerts it holds by id and
// the newest sent_at, and when its connection ends it reconnects to the
// next VM of its list with since (after 1012 with the short random delay
// docs/protocol.md asks for; with backoff once all VMs have failed). Repeats across connections are dropped by id, as the page does; a
// repeat within one connection breaks the contract and is recorded.
type resumer struct {
	name string
	vms  []*vm

	mu      sync.Mutex
	held    map[string]int // id -> connections that carried it
	newest  string
	resumes []resumedInfo
	faults  []string // contract violations
	conns   int
	changed chan struct{}

	stop chan struct{}
	done chan struct{}
}

func startResumer(t *testing.T, name string, vms ...*vm) *resumer {
	r := &resumer{name: name, vms: vms, held: map[string]int{}, changed: make(chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	t.Cleanup(r.halt)
	return r
}

func (r *resumer) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

func (r *resumer) loop() {
	defer close(r.done)
	idx, failures := 0, 0
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		v := r.vms[idx]
		r.mu.Lock()
		since := r.newest
		r.mu.Unlock()
		c, err := dialSince(v, r.name, since)
		if err != nil {
			idx = (idx + 1) % len(r.vms)
			failures++
			wait := time.Duration(0)
			if failures >= len(r.vms) {
				wait = min(5*time.Second, 250*time.Millisecond<<min(failures-len(r.vms), 5))
			}
			select {
			case <-r.stop:
				return
			case <-time.After(wait):
			}
			continue
		}
		failures = 0
		r.mu.Lock()
		r.conns++
		r.mu.Unlock()
		if !r.follow(v, c, since) {
			c.Close()
			return
		}
		c.Close()
		idx = (idx + 1) % len(r.vms)
		// After 1012 docs/protocol.md asks for a short random delay
		// (0.5-2 s) so that a VM's clients do not all land at once; the
		// alerts sent meanwhile are what the resume must bring back.
		if code, _ := c.WaitClosed(0); code == websocket.CloseServiceRestart {
			select {
			case <-r.stop:
				return
			case <-time.After(500*time.Millisecond + time.Duration(rand.Int64N(int64(time.Second)))):
			}
		}
	}
}

// follow reads one connection until it ends (true) or the resumer stops.
func (r *resumer) follow(v *vm, c *testkit.Client, since string) bool {
	onConn := map[string]bool{}
	seen, resumed := 1, since == "" // frame 0 is the hello
	for {
		frames, ended, changed := c.Snapshot()
		r.mu.Lock()
		for _, f := range frames[seen:] {
			switch f.Type {
			case "alert":
				if onConn[f.ID] {
					r.faults = append(r.faults, fmt.Sprintf("alert %s twice on one connection (%s)", f.ID, c))
				}
				onConn[f.ID] = true
				r.held[f.ID]++
				if f.SentAt > r.newest { // fixed-width UTC: text order is time order
					r.newest = f.SentAt
				}
			case "resumed":
				var ri resumedInfo
				if err := json.Unmarshal([]byte(f.Raw), &ri); err != nil {
					r.faults = append(r.faults, "resumed frame: "+err.Error())
				}
				ri.vm, ri.since = v.name, since
				if resumed {
					r.faults = append(r.faults, "a second resumed frame, or one without since: "+f.Raw)
				}
				resumed = true
				r.resumes = append(r.resumes, ri)
			case "error":
				r.faults = append(r.faults, "error frame: "+f.Raw)
			}
		}
		seen = len(frames)
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		if ended {
			return true
		}
		select {
		case <-changed:
		case <-r.stop:
			return false
		}
	}
}

// missing returns how many of ids the resumer does not hold, and a channel
// closed when that may have changed.
func (r *resumer) missing(ids []string) (int, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, id := range ids {
		if r.held[id] == 0 {
			n++
		}
	}
	return n, r.changed
}

// publisher sends alerts at a steady pace through the VMs of its list,
// failing over like a client, and keeps the ids of those acknowledged.
type publisher struct {
	name     string
	vms      []*vm
	interval time.Duration

	mu      sync.Mutex
	acked   []string
	answers map[string]int // ack, or an error code
	lost    int            // connection ended before the answer

	stop chan struct{}
	done chan struct{}
}

func startPublisher(t *testing.T, name string, interval time.Duration, vms ...*vm) *publisher {
	p := &publisher{name: name, vms: vms, interval: interval, answers: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	t.Cleanup(p.halt)
	return p
}

func (p *publisher) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *publisher) loop() {
	defer close(p.done)
	idx, n := 0, 0
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		v := p.vms[idx]
		idx = (idx + 1) % len(p.vms)
		c, err := tryDial(v, p.name, "")
		if err != nil {
			select {
			case <-p.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		for {
			select {
			case <-p.stop:
				c.Close()
				return
			case <-tick.C:
			}
			n++
			nonce := fmt.Sprintf("%s-%d", p.name, n)
			from := c.Mark()
			if err := c.Send(testkit.NewAlertRequest("load "+nonce, nonce)); err != nil {
				p.note("", "lost")
				break
			}
			f, err := c.WaitFrameFrom(from, 30*time.Second, "the answer to "+nonce, testkit.AnswerTo(nonce))
			if err != nil {
				p.note("", "lost") // may or may not have been published
				break
			}
			if f.Type == "ack" {
				p.note(f.ID, "ack")
			} else {
				p.note("", f.Code)
			}
		}
		c.Close()
	}
}

func (p *publisher) note(id, answer string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if answer == "lost" {
		p.lost++
		return
	}
	p.answers[answer]++
	if id != "" {
		p.acked = append(p.acked, id)
	}
}

// TestRollingRestartUnderLoad is a Fly rolling deploy under load: three VMs,
// ten clients on each that reconnect with since the way the page does, a
// publisher at about 20 alerts/s for the whole run, and every VM restarted
// in turn with SIGINT and the same alloc id. At the end every client holds
// every acknowledged alert (exactly once after dropping repeats by id; never
// twice on one connection) and every resume said recovered:true.
func TestRollingRestartUnderLoad(t *testing.T) {
	c := newCluster(t, sharedEmulator(t), 3)
	vms := c.vms

	var resumers []*resumer
	for i, v := range vms {
		// Like the page: its own VM first, then the others in order.
		order := append(append([]*vm{}, vms[i:]...), vms[:i]...)
		for j := range 10 {
			resumers = append(resumers, startResumer(t, fmt.Sprintf("client %d of %s", j+1, v.name), order...))
		}
	}
	// About 20 alerts/s from six connections (two starting on each VM),
	// each under the relays' default rate of 5 alerts/s.
	var pubs []*publisher
	for i := range 6 {
		order := append(append([]*vm{}, vms[i%3:]...), vms[:i%3]...)
		pubs = append(pubs, startPublisher(t, fmt.Sprintf("pub%d", i+1), 300*time.Millisecond, order...))
	}
	waitResumers(t, resumers, "a first connection", func(r *resumer) bool { return r.conns >= 1 })

	time.Sleep(coverageSettle)
	for _, v := range vms {
		t.Logf("rolling restart: stopping %s", v)
		res := v.stop(t, syscall.SIGINT)
		if res.Err != nil {
			t.Errorf("%s: after SIGINT want exit status 0, got %s", v, testkit.ExitText(res.Err))
		}
		time.Sleep(restartPause)
		v.restart(t)
		t.Logf("rolling restart: %s is back", v.name)
		time.Sleep(coverageSettle)
	}
	for _, p := range pubs {
		p.halt()
	}

	var acked []string
	answers := map[string]int{}
	lost := 0
	for _, p := range pubs {
		p.mu.Lock()
		acked = append(acked, p.acked...)
		for k, n := range p.answers {
			answers[k] += n
		}
		lost += p.lost
		p.mu.Unlock()
	}
	if len(acked) < 200 {
		t.Fatalf("only %d alerts acknowledged (answers %v, %d lost with their connection): the load did not run", len(acked), answers, lost)
	}

	deadline := time.Now().Add(arrival)
	for _, r := range resumers {
		for {
			n, changed := r.missing(acked)
			if n == 0 {
				break
			}
			select {
			case <-changed:
				continue
			case <-time.After(time.Until(deadline)):
			}
			t.Errorf("%s: %d of %d acknowledged alerts never arrived", r.name, n, len(acked))
			break
		}
	}

	resumes, replayed, repeats := 0, 0, 0
	for _, r := range resumers {
		r.halt()
		for _, f := range r.faults {
			t.Errorf("%s: %s", r.name, f)
		}
		for _, ri := range r.resumes {
			resumes++
			replayed += ri.Replayed
			if !ri.Recovered {
				t.Errorf("%s: resume on %s since %s: recovered false (from %s), want true", r.name, ri.vm, ri.since, ri.From)
			}
		}
		if len(r.resumes) < 1 {
			t.Errorf("%s: never resumed; every client's VM restarted once", r.name)
		}
		for _, n := range r.held {
			repeats += n - 1
		}
	}
	t.Logf("%d alerts acknowledged (answers %v; %d lost with their connection); %d clients resumed %d times, all recovered; %d alerts replayed, %d repeats dropped by id",
		len(acked), answers, lost, len(resumers), resumes, replayed, repeats)
}

// waitResumers waits until cond holds for every resumer.
func waitResumers(t *testing.T, rs []*resumer, what string, cond func(*resumer) bool) {
	t.Helper()
	deadline := time.Now().Add(arrival)
	for _, r := range rs {
		for {
			r.mu.Lock()
			ok := cond(r)
			r.mu.Unlock()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %s", r.name, what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestResumeBeforeCoverage: a fresh relay cannot vouch for anything before
// its subscription started receiving. A since from before that gets
// recovered:false with "from" at its coverage start; a since after it
// (beyond the margin) gets recovered:true; a since that is not a timestamp
// gets an invalid error and live alerts.
func TestResumeBeforeCoverage(t *testing.T) {
	c := newCluster(t, sharedEmulator(t), 1)
	v := c.vms[0]
	ready := time.Now()
	before := ready.Add(-time.Minute).UTC().Format(time.RFC3339)

	cl, err := dialSince(v, "old since", before)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	f := cl.MustFrame(t, arrival, "the resumed frame", func(f testkit.Frame) bool { return f.Type == "resumed" })
	var ri resumedInfo
	if err := json.Unmarshal([]byte(f.Raw), &ri); err != nil {
		t.Fatal(err)
	}
	from, err := time.Parse(time.RFC3339, ri.From)
	if ri.Recovered || err != nil || from.Before(ready.Add(-90*time.Second)) || from.After(ready.Add(time.Second)) {
		t.Errorf("since %s, a minute before the relay was ready: %s; want recovered false, from its coverage start (before %s)", before, f, ready.UTC().Format(time.RFC3339Nano))
	}
	t.Logf("since a minute before boot: %s", f)

	// Once the relay has run longer than the margin, a since of now is
	// covered.
	time.Sleep(time.Until(from.Add(resumeMargin + time.Second)))
	now := time.Now().UTC().Format(time.RFC3339Nano)
	ok, err := dialSince(v, "recent since", now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ok.Close)
	f = ok.MustFrame(t, arrival, "the resumed frame", func(f testkit.Frame) bool { return f.Type == "resumed" })
	if !strings.Contains(f.Raw, `"recovered":true`) {
		t.Errorf("since %s, after coverage start plus the margin: %s, want recovered true", now, f)
	}

	bad, err := dialSince(v, "bad since", "last tuesday")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bad.Close)
	if f := bad.MustFrame(t, arrival, "an answer after hello", func(f testkit.Frame) bool { return f.Type != "hello" }); f.Type != "error" || f.Code != "invalid" {
		t.Errorf("since \"last tuesday\": %s, want an invalid error", f)
	}
	text := "live after a bad since " + randomHex(3)
	broadcast(t, ok, []*testkit.Client{ok, bad, cl}, text)
}

// sortedBySentAt reports whether sent_at values are in descending order.
func sortedBySentAt(s []string) bool {
	return sort.SliceIsSorted(s, func(i, j int) bool { return s[i] > s[j] })
}
