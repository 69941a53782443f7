package fleet

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/feed"
	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// These tests run inside synctest bubbles: time is fake and advances only
// when every goroutine waits, so a ten-minute janitor rule takes no time
// and no assertion depends on the machine's speed.

const (
	interval    = 10 * time.Second
	orphanAfter = 10 * time.Minute
	prefix      = names.DefaultSubscriptionPrefix
)

// deafBroker wraps a broker; while deaf is set, the named subscription's
// receiver hears nothing (a stalled pull stream), though everything else
// works.
type deafBroker struct {
	broker.Broker
	deaf atomic.Pointer[string]
}

func (d *deafBroker) Receive(ctx context.Context, name string, handle func(broker.Message)) error {
	return d.Broker.Receive(ctx, name, func(m broker.Message) {
		if p := d.deaf.Load(); p != nil && *p == name {
			return
		}
		handle(m)
	})
}

func (d *deafBroker) ListSubscriptions(ctx context.Context) ([]string, error) {
	return d.Broker.(broker.Lister).ListSubscriptions(ctx)
}

// node is one relay's fleet and feed on a shared broker, without a hub.
type node struct {
	fleet   *Fleet
	feed    *feed.Feed
	clients atomic.Int64
	frames  chan protocol.Fleet
	reg     *prometheus.Registry
	stop    func()
}

func startNode(t *testing.T, b broker.Broker, vm, region string) *node {
	t.Helper()
	n := &node{frames: make(chan protocol.Fleet, 100), reg: prometheus.NewRegistry()}
	sub := names.Subscription(prefix, vm)
	n.fleet = New(Config{
		VM: vm, Region: region, Version: "test",
		Interval: interval, OrphanAfter: orphanAfter,
		Prefix: prefix, Subscription: sub,
		Clients: func() int { return int(n.clients.Load()) },
		Broadcast: func(f protocol.Fleet) {
			select {
			case n.frames <- f:
			default:
			}
		},
		Registerer: n.reg,
	}, b)
	n.feed = feed.New(b, feed.Config{Name: sub}, n.fleet.Route(func(data []byte) {
		t.Errorf("%s: hub got %q; only heartbeats were published", vm, data)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = n.feed.Run(ctx) })
	wg.Go(func() { _ = n.fleet.Run(ctx, n.feed) })
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			n.fleet.Leave(context.Background())
			_ = n.feed.Delete(context.Background())
		})
	}
	t.Cleanup(n.stop)
	return n
}

// vms returns the VM ids of a snapshot, with their clients.
func vms(f protocol.Fleet) map[string]int {
	out := map[string]int{}
	for _, v := range f.VMs {
		out[v.VM] = v.Clients
	}
	return out
}

func TestJoinsLeavesAndCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := mempubsub.New(mempubsub.Config{})
		a := startNode(t, b, "vm-a", "ams")
		bb := startNode(t, b, "vm-b", "iad")
		c := startNode(t, b, "vm-c", "syd")
		a.clients.Store(3)
		bb.clients.Store(5)
		c.clients.Store(7)

		time.Sleep(interval + time.Second)
		synctest.Wait()
		snap := a.fleet.Snapshot(true)
		if got, want := vms(snap), map[string]int{"vm-a": 3, "vm-b": 5, "vm-c": 7}; !mapsEqual(got, want) {
			t.Fatalf("vm-a sees %v, want %v", got, want)
		}
		if snap.Clients != 15 {
			t.Errorf("total clients %d, want 15", snap.Clients)
		}
		if got := []string{snap.VMs[0].Region, snap.VMs[1].Region, snap.VMs[2].Region}; !slices.IsSorted(got) {
			t.Errorf("regions %v, want sorted", got)
		}
		for _, v := range snap.VMs {
			if v.SeenAt == "" {
				t.Errorf("%s has no seen_at", v.VM)
			}
		}
		if got := value(a.fleet.m.published); got < 2 {
			t.Errorf("heartbeats published %v, want >= 2", got)
		}

		// Counts follow the next heartbeat.
		bb.clients.Store(1)
		time.Sleep(interval)
		synctest.Wait()
		if got := vms(a.fleet.Snapshot(false))["vm-b"]; got != 1 {
			t.Errorf("vm-b clients %d after a change, want 1", got)
		}

		// A clean stop is seen at once (its leaving heartbeat).
		c.stop()
		synctest.Wait()
		if got := vms(a.fleet.Snapshot(false)); got["vm-c"] != 0 || len(got) != 2 {
			t.Errorf("after vm-c stopped, vm-a sees %v", got)
		}

		// A crash is seen after a few silent intervals: a VM that only
		// speaks once joins, then leaves by silence.
		ghost := Heartbeat{Type: typeHeartbeat, VM: "vm-ghost", Instance: "g1", Region: "gru", Clients: 2, Seq: 1}
		if err := b.Publish(t.Context(), ghost.message()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := vms(a.fleet.Snapshot(false))["vm-ghost"]; got != 2 {
			t.Fatalf("vm-ghost not in view after its heartbeat (clients %d)", got)
		}
		time.Sleep(staleBeats*interval - time.Second)
		synctest.Wait()
		if _, ok := vms(a.fleet.Snapshot(false))["vm-ghost"]; !ok {
			t.Errorf("vm-ghost left the view before %d silent intervals", staleBeats)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if _, ok := vms(a.fleet.Snapshot(false))["vm-ghost"]; ok {
			t.Errorf("vm-ghost still in view after %d silent intervals", staleBeats)
		}

		// Metrics say the same as the snapshot.
		if got := gauge(t, a.reg, "skywatch_fleet_vms"); got != 2 {
			t.Errorf("skywatch_fleet_vms %v, want 2", got)
		}
		if got := gauge(t, a.reg, "skywatch_fleet_clients"); got != 4 {
			t.Errorf("skywatch_fleet_clients %v, want 4", got)
		}

		// The page got frames, the latest with the current fleet.
		var last protocol.Fleet
		for len(a.frames) > 0 {
			last = <-a.frames
		}
		if got := vms(last); len(got) != 2 || got["vm-b"] != 1 {
			t.Errorf("last fleet frame %v, want vm-a and vm-b (1 client)", got)
		}
	})
}

// gauge reads a registered gauge by name, as /metrics would.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	_ = m.Write(&d)
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestDuplicateVM: a heartbeat with this relay's VM id from another process
// is logged, counted and shown in the snapshot; another VM whose instances
// alternate is shown as duplicate too, while a restart (a new instance
// that stays) is not.
func TestDuplicateVM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := mempubsub.New(mempubsub.Config{})
		a := startNode(t, b, "vm-a", "ams")
		time.Sleep(time.Second)
		synctest.Wait()
		if self(a.fleet.Snapshot(false)).Duplicate {
			t.Fatal("duplicate before any other process")
		}
		twin := Heartbeat{Type: typeHeartbeat, VM: "vm-a", Instance: "other", Region: "ams", Seq: 1}
		if err := b.Publish(t.Context(), twin.message()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if !self(a.fleet.Snapshot(false)).Duplicate {
			t.Error("vm-a not marked duplicate after a heartbeat from another instance with its id")
		}
		if got := value(a.fleet.m.duplicates); got != 1 {
			t.Errorf("duplicates counted %v, want 1", got)
		}
		if len(a.fleet.Snapshot(false).VMs) != 1 {
			t.Error("the other process with vm-a's id appears as a second VM")
		}

		publish := func(instance string) {
			hb := Heartbeat{Type: typeHeartbeat, VM: "vm-b", Instance: instance, Region: "iad", Seq: 1}
			if err := b.Publish(t.Context(), hb.message()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			synctest.Wait()
		}
		publish("b1")
		publish("b2") // a restart
		if dup(a.fleet.Snapshot(false), "vm-b") {
			t.Error("a restarted vm-b (new instance) marked duplicate")
		}
		publish("b1") // the first one again: two processes
		if !dup(a.fleet.Snapshot(false), "vm-b") {
			t.Error("vm-b with alternating instances not marked duplicate")
		}
	})
}

func self(f protocol.Fleet) protocol.FleetVM {
	for _, v := range f.VMs {
		if v.VM == "vm-a" {
			return v
		}
	}
	return protocol.FleetVM{}
}

func dup(f protocol.Fleet, vm string) bool {
	for _, v := range f.VMs {
		if v.VM == vm {
			return v.Duplicate
		}
	}
	return false
}

// TestOwnHeartbeatsProveDelivery: a relay whose subscription exists but
// hears nothing is not ready after Missed heartbeats and recreates its
// subscription through the feed; once it hears again it is ready.
func TestOwnHeartbeatsProveDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deafBroker{Broker: mempubsub.New(mempubsub.Config{})}
		a := startNode(t, b, "vm-a", "ams")
		time.Sleep(interval + time.Second)
		synctest.Wait()
		if !a.fleet.Delivering() {
			t.Fatal("not delivering while everything works")
		}
		sub := names.Subscription(prefix, "vm-a")
		b.deaf.Store(&sub)
		// The next tick publishes the first heartbeat that will not come
		// back; each later tick finds one more missing.
		time.Sleep(time.Duration(DefaultMissed) * interval)
		synctest.Wait()
		if !a.fleet.Delivering() {
			t.Errorf("not delivering after %d unanswered heartbeats; want %d first", DefaultMissed-1, DefaultMissed)
		}
		time.Sleep(interval)
		synctest.Wait()
		if a.fleet.Delivering() {
			t.Errorf("still delivering after %d unanswered heartbeats", DefaultMissed)
		}
		if got := value(a.fleet.m.recreations); got != 1 {
			t.Errorf("recreations %v, want 1", got)
		}
		b.deaf.Store(nil)
		time.Sleep(2 * interval)
		synctest.Wait()
		if !a.fleet.Delivering() {
			t.Error("not delivering after its heartbeats came back")
		}
	})
}

// TestOldRelayDropsHeartbeat: a relay that predates heartbeats hands every
// message to its hub, whose validation rejects a heartbeat as a malformed
// alert (counted, logged at Warn): it is never shown to anyone.
func TestOldRelayDropsHeartbeat(t *testing.T) {
	hb := Heartbeat{Type: typeHeartbeat, VM: "vm-a", Instance: "i", Region: "ams", Clients: 1, Seq: 1}
	m := hb.message()
	if m.Attributes[AttrKind] != KindHeartbeat {
		t.Fatalf("heartbeat attributes %v", m.Attributes)
	}
	if _, _, _, err := protocol.DecodeAlert(m.Data); !errors.Is(err, protocol.ErrMalformed) {
		t.Fatalf("DecodeAlert(heartbeat) = %v, want ErrMalformed", err)
	}
}

// TestRoute: only a message marked as a heartbeat goes to the fleet; one
// without attributes (every alert, old relays' too) goes to the hub.
func TestRoute(t *testing.T) {
	f := New(Config{VM: "vm-a", Clients: func() int { return 0 }}, mempubsub.New(mempubsub.Config{}))
	var hub []string
	route := f.Route(func(data []byte) { hub = append(hub, string(data)) })
	hb := Heartbeat{Type: typeHeartbeat, VM: "vm-b", Instance: "i", Region: "iad", Clients: 4, Seq: 1}
	route(hb.message())
	route(broker.Message{Data: []byte(`{"type":"alert"}`)})
	route(broker.Message{Data: hb.message().Data}) // a heartbeat's bytes without the mark: the hub judges it
	if len(hub) != 2 {
		t.Errorf("hub got %q, want the two unmarked messages", hub)
	}
	if got := vms(f.Snapshot(false)); got["vm-b"] != 4 {
		t.Errorf("fleet %v, want vm-b with 4 clients", got)
	}
}

// stuckFeed is a feed whose subscription delivers nothing; Recreate takes
// it out of service until the test puts it back.
type stuckFeed struct {
	ready     atomic.Bool
	recreates atomic.Int32
}

func (s *stuckFeed) Ready() bool { return s.ready.Load() }
func (s *stuckFeed) Recreate(string) {
	s.recreates.Add(1)
	s.ready.Store(false)
}

// TestRecreateNotRepeatedWhileRecovering: the fleet asks for a recreate
// after Missed unanswered heartbeats, not again on every tick while the
// feed is busy with it, and again after Missed more once it receives.
func TestRecreateNotRepeatedWhileRecovering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// No subscription on this broker: nothing ever comes back.
		f := New(Config{VM: "vm-a", Interval: interval, Clients: func() int { return 0 }}, mempubsub.New(mempubsub.Config{}))
		feed := &stuckFeed{}
		feed.ready.Store(true)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = f.Run(ctx, feed); close(done) }()

		time.Sleep(time.Duration(DefaultMissed)*interval + time.Second)
		synctest.Wait()
		if got := feed.recreates.Load(); got != 1 {
			t.Fatalf("recreates after %d unanswered: %d, want 1", DefaultMissed, got)
		}
		time.Sleep(5 * interval)
		synctest.Wait()
		if got := feed.recreates.Load(); got != 1 {
			t.Errorf("recreates while the feed is recovering: %d, want still 1", got)
		}
		feed.ready.Store(true) // receiving again, but still nothing comes back
		// The next tick publishes the first counted heartbeat; Missed
		// ticks later that many are known missing.
		time.Sleep(time.Duration(DefaultMissed+1)*interval + time.Second)
		synctest.Wait()
		if got := feed.recreates.Load(); got != 2 {
			t.Errorf("recreates after %d more unanswered: %d, want 2", DefaultMissed, got)
		}
		if f.Delivering() {
			t.Error("delivering while nothing comes back")
		}
		cancel()
		<-done
	})
}
