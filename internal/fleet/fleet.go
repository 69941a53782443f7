package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// Defaults for the zero values of Config.
const (
	// DefaultInterval: with 30 VMs the topic carries 3 heartbeats a second,
	// each copied to 30 subscriptions (docs/fleet.md has the cost), and a
	// stopped VM leaves the page within half a minute.
	DefaultInterval = 10 * time.Second
	// DefaultOrphanAfter is 60 heartbeats: no live relay is silent that long
	// short of a pause that already cost it its clients.
	DefaultOrphanAfter = 10 * time.Minute
	// DefaultMissed own heartbeats in a row may fail to come back before the
	// relay says it is not ready: one lost message is not a broken stream.
	DefaultMissed = 3
	// DefaultFrameInterval is the shortest time between two fleet frames to
	// the page.
	DefaultFrameInterval = 2 * time.Second
)

// staleBeats is how many intervals a VM may stay silent before it leaves
// the view: one lost heartbeat does not make it blink.
const staleBeats = 3

// Config configures a Fleet. VM, Region and Clients are required; zero
// values of the others mean the defaults above.
type Config struct {
	// VM and Region name this relay (FLY_ALLOC_ID, FLY_REGION).
	VM, Region string
	// Version is the relay's build, carried in heartbeats.
	Version string
	// Instance is this process's id. Default: random. Two processes with
	// one VM id share one subscription; the instance tells them apart.
	Instance string
	// Interval is the time between two heartbeats (HEARTBEAT_INTERVAL).
	Interval time.Duration
	// OrphanAfter is how long a VM must be silent, and this relay's own
	// subscription receiving without a break, before the janitor deletes
	// the VM's subscription (ORPHAN_AFTER).
	OrphanAfter time.Duration
	// Missed is how many of its own heartbeats in a row may fail to come
	// back before the relay is not ready and recreates its subscription.
	Missed int
	// FrameInterval is the shortest time between two fleet frames.
	FrameInterval time.Duration

	// Prefix and Subscription are the subscription prefix and this relay's
	// own subscription (names.Subscription). The janitor only judges names
	// with Prefix and never Subscription. An empty Prefix turns it off.
	Prefix, Subscription string

	// Clients counts this relay's clients (hub.Hub.Clients).
	Clients func() int
	// Broadcast sends a fleet frame to this relay's clients
	// (hub.Hub.BroadcastFleet). Nil sends none.
	Broadcast func(protocol.Fleet)

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Feed is the part of the feed the fleet drives (feed.Feed).
type Feed interface {
	// Ready reports whether the subscription is receiving.
	Ready() bool
	// Recreate makes the feed recreate its subscription.
	Recreate(reason string)
}

// admin is what the janitor needs of the broker: broker.Lister is
// optional, so the janitor runs only where the broker offers it.
type admin interface {
	broker.Lister
	DeleteSubscription(ctx context.Context, name string) error
}

// Fleet is one relay's view of the fleet. Create it with New, feed it the
// broker's messages through Route, and start Run once.
type Fleet struct {
	cfg     Config
	pub     broker.Publisher
	admin   admin // nil: no janitor
	log     *slog.Logger
	started time.Time
	m       *metrics

	// delivering is false once Missed own heartbeats in a row have not come
	// back; it starts true, so a booting relay is not held back.
	delivering atomic.Bool

	mu    sync.Mutex
	peers map[string]*peer // by VM id, other relays only
	// heard is when each subscription's VM was last heard, by subscription
	// name; listed is when the janitor first saw each one listed.
	heard, listed map[string]time.Time
	selfDup       time.Time // until when this relay's VM id is known to be shared
	seq           uint64    // last heartbeat's sequence number
	echoed        uint64    // highest own sequence number heard back
	unanswered    []uint64  // own heartbeats published while receiving, not heard back yet
	recreatedAt   int       // len(unanswered) when the feed was last asked to recreate
	// coverage is when this relay's own subscription last started receiving
	// without a break, as its own heartbeats prove; zero while it is not.
	coverage  time.Time
	lastFrame []byte
}

type peer struct {
	region    string
	clients   int
	seenAt    time.Time
	instance  string
	instances map[string]time.Time // instance id -> last heard
	dupUntil  time.Time
	leaving   bool
}

// New returns a Fleet that publishes its heartbeats on b. If b is also a
// broker.Lister, the janitor runs.
func New(cfg Config, b broker.Broker) *Fleet {
	if cfg.VM == "" || cfg.Clients == nil {
		panic("fleet: New without a VM or Clients")
	}
	if cfg.Instance == "" {
		var id [6]byte
		_, _ = rand.Read(id[:])
		cfg.Instance = hex.EncodeToString(id[:])
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.OrphanAfter <= 0 {
		cfg.OrphanAfter = DefaultOrphanAfter
	}
	if cfg.Missed <= 0 {
		cfg.Missed = DefaultMissed
	}
	if cfg.FrameInterval <= 0 {
		cfg.FrameInterval = DefaultFrameInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{
		cfg:     cfg,
		pub:     b,
		log:     cfg.Logger.With("instance", cfg.Instance),
		started: time.Now(),
		peers:   make(map[string]*peer),
		heard:   make(map[string]time.Time),
		listed:  make(map[string]time.Time),
	}
	if a, ok := b.(admin); ok && cfg.Prefix != "" {
		f.admin = a
	}
	f.delivering.Store(true)
	f.m = newMetrics(cfg.Registerer, f)
	return f
}

// Delivering reports whether this relay's own heartbeats come back through
// its subscription, i.e. whether it really receives what is published. It
// is part of readiness.
func (f *Fleet) Delivering() bool { return f.delivering.Load() }

// Route returns the feed's handler: heartbeats go to the fleet, every other
// message to deliver (the hub). Heartbeats are taken out before the hub, so
// they never reach clients or resume history.
func (f *Fleet) Route(deliver func(data []byte)) func(broker.Message) {
	return func(m broker.Message) {
		if m.Attributes[AttrKind] == KindHeartbeat {
			f.hear(m.Data)
			return
		}
		deliver(m.Data)
	}
}

// Run publishes heartbeats, checks that they come back through feed, sends
// fleet frames and runs the janitor until ctx is done, then returns nil.
// A clean stop calls Leave after it.
func (f *Fleet) Run(ctx context.Context, feed Feed) error {
	beat := time.NewTicker(f.cfg.Interval)
	defer beat.Stop()
	frame := time.NewTicker(f.cfg.FrameInterval)
	defer frame.Stop()
	f.beat(ctx, feed.Ready(), false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			f.check(feed)
			f.beat(ctx, feed.Ready(), false)
			f.sweep(ctx)
		case <-frame.C:
			f.sendFrame()
		}
	}
}

// Leave publishes a last heartbeat saying this relay leaves, so that the
// others drop it from the fleet at once rather than after its silence. Best
// effort within ctx (the shutdown's budget); call it after Run returned.
func (f *Fleet) Leave(ctx context.Context) { f.beat(ctx, false, true) }

// beat publishes one heartbeat; receiving is whether the feed receives as
// it is sent.
func (f *Fleet) beat(ctx context.Context, receiving, leaving bool) {
	clients := f.cfg.Clients()
	f.mu.Lock()
	f.seq++
	hb := Heartbeat{
		Type:      typeHeartbeat,
		VM:        f.cfg.VM,
		Instance:  f.cfg.Instance,
		Region:    f.cfg.Region,
		Clients:   clients,
		StartedAt: f.started.UTC(),
		Version:   f.cfg.Version,
		Seq:       f.seq,
		Leaving:   leaving,
	}
	f.mu.Unlock()

	pctx, cancel := context.WithTimeout(ctx, f.cfg.Interval)
	err := f.pub.Publish(pctx, hb.message())
	cancel()
	if err != nil {
		if !leaving {
			f.log.Warn("heartbeat not published", "err", err)
		}
		f.mu.Lock()
		f.coverage = time.Time{} // cannot prove receiving without one
		f.mu.Unlock()
		return
	}
	f.m.published.Inc()
	f.mu.Lock()
	defer f.mu.Unlock()
	// Heartbeats published while the feed is down prove nothing either way.
	if receiving && !leaving && hb.Seq > f.echoed {
		f.unanswered = append(f.unanswered, hb.Seq)
	}
}

// check runs before each heartbeat: has the previous one come back?
func (f *Fleet) check(feed Feed) {
	receiving := feed.Ready()
	now := time.Now()
	f.mu.Lock()
	n := len(f.unanswered)
	// Two heartbeats unanswered: a gap of more than an interval in which
	// this relay may have missed another VM's heartbeats. The janitor's
	// clock starts again.
	if !receiving || n >= 2 {
		f.coverage = time.Time{}
	}
	f.prune(now)
	// Recreate after Missed unanswered, and again after Missed more: not
	// on every tick while the feed is still busy recreating (heartbeats
	// published meanwhile are not counted, so n stands still).
	recreate := n >= f.cfg.Missed && n-f.recreatedAt >= f.cfg.Missed
	if recreate {
		f.recreatedAt = n
	}
	f.mu.Unlock()
	f.m.unanswered.Set(float64(n))
	if n < f.cfg.Missed {
		return
	}
	if f.delivering.Swap(false) {
		f.log.Error("own heartbeats are not coming back; not ready", "unanswered", n)
	}
	if recreate {
		f.log.Warn("recreating the subscription", "reason", "own heartbeats not coming back", "unanswered", n)
		f.m.recreations.Inc()
		feed.Recreate("own heartbeats not coming back")
	}
}

// prune forgets VMs that left the view and subscriptions long unheard.
// f.mu must be held.
func (f *Fleet) prune(now time.Time) {
	for vm, p := range f.peers {
		if now.Sub(p.seenAt) > f.stale() {
			delete(f.peers, vm)
		}
	}
	for name, at := range f.heard {
		if now.Sub(at) > 2*f.cfg.OrphanAfter {
			delete(f.heard, name)
		}
	}
}

func (f *Fleet) stale() time.Duration { return staleBeats * f.cfg.Interval }

// hear takes in one heartbeat from the topic.
func (f *Fleet) hear(data []byte) {
	f.m.received.Inc()
	hb, err := decode(data)
	if err != nil {
		f.m.malformed.Inc()
		f.log.Warn("heartbeat dropped", "reason", "malformed", "err", err)
		return
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if hb.VM == f.cfg.VM {
		if hb.Instance == f.cfg.Instance {
			f.echo(hb.Seq, now)
			return
		}
		if hb.Leaving {
			return
		}
		// Another process runs with this VM id: it receives from the same
		// subscription, so each of the two gets only part of the alerts,
		// and the first to stop deletes the other's subscription.
		f.selfDup = now.Add(f.stale())
		f.m.duplicates.Inc()
		f.log.Error("another process uses this VM id; its clients and ours share one subscription",
			"other_instance", hb.Instance, "other_region", hb.Region, "other_started_at", hb.StartedAt)
		return
	}
	f.heard[names.Subscription(f.cfg.Prefix, hb.VM)] = now
	p := f.peers[hb.VM]
	if p == nil {
		p = &peer{instances: make(map[string]time.Time)}
		f.peers[hb.VM] = p
	}
	// Two processes with one VM id alternate: an instance that comes back
	// after another took over. A restart only ever moves on.
	if p.instance != "" && p.instance != hb.Instance {
		if _, before := p.instances[hb.Instance]; before {
			p.dupUntil = now.Add(f.stale())
		}
	}
	for id, at := range p.instances {
		if now.Sub(at) > f.stale() {
			delete(p.instances, id)
		}
	}
	p.instances[hb.Instance] = now
	p.instance, p.region, p.clients, p.seenAt, p.leaving = hb.Instance, hb.Region, hb.Clients, now, hb.Leaving
}

// echo records one of this relay's own heartbeats heard back. f.mu must be
// held.
func (f *Fleet) echo(seq uint64, now time.Time) {
	f.echoed = max(f.echoed, seq)
	f.unanswered = slices.DeleteFunc(f.unanswered, func(s uint64) bool { return s <= f.echoed })
	f.recreatedAt = 0
	if f.coverage.IsZero() {
		f.coverage = now
	}
	if !f.delivering.Swap(true) {
		f.log.Info("own heartbeats are coming back; ready")
	}
}

// Snapshot returns the fleet as this relay sees it: itself and every VM
// heard within the last few intervals, sorted by region and VM. withSeen
// adds when each was heard (GET /fleet); frames leave it out, so they
// change only when the fleet does.
func (f *Fleet) Snapshot(withSeen bool) protocol.Fleet {
	clients := f.cfg.Clients()
	now := time.Now()
	f.mu.Lock()
	vms := []protocol.FleetVM{{
		VM:        f.cfg.VM,
		Region:    f.cfg.Region,
		Clients:   clients,
		SeenAt:    seen(withSeen, now),
		Duplicate: now.Before(f.selfDup),
	}}
	for vm, p := range f.peers {
		if p.leaving || now.Sub(p.seenAt) > f.stale() {
			continue
		}
		vms = append(vms, protocol.FleetVM{
			VM:        vm,
			Region:    p.region,
			Clients:   p.clients,
			SeenAt:    seen(withSeen, p.seenAt),
			Duplicate: now.Before(p.dupUntil),
		})
	}
	f.mu.Unlock()
	slices.SortFunc(vms, func(a, b protocol.FleetVM) int {
		if c := strings.Compare(a.Region, b.Region); c != 0 {
			return c
		}
		return strings.Compare(a.VM, b.VM)
	})
	out := protocol.Fleet{VMs: vms}
	for _, v := range vms {
		out.Clients += v.Clients
	}
	return out
}

func seen(with bool, t time.Time) string {
	if !with {
		return ""
	}
	return t.UTC().Format(protocol.SentAtLayout)
}

// sendFrame sends a fleet frame if the fleet changed since the last one.
func (f *Fleet) sendFrame() {
	if f.cfg.Broadcast == nil {
		return
	}
	snap := f.Snapshot(false)
	snap.Type = protocol.TypeFleet
	enc := protocol.Encode(snap)
	f.mu.Lock()
	same := bytes.Equal(enc, f.lastFrame)
	f.lastFrame = enc
	f.mu.Unlock()
	if !same {
		f.cfg.Broadcast(snap)
	}
}

// ServeHTTP answers GET /fleet with the Snapshot as JSON.
func (f *Fleet) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(f.Snapshot(true))
}
