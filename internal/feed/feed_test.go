package feed_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/feed"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// inbox collects what a feed hands over.
type inbox struct {
	mu  sync.Mutex
	got []string
}

func (in *inbox) handle(m broker.Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.got = append(in.got, string(m.Data))
}

func (in *inbox) has(s string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, g := range in.got {
		if g == s {
			return true
		}
	}
	return false
}

func (in *inbox) all() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.got)
}

func fastConfig(name string) feed.Config {
	return feed.Config{Name: name, CheckInterval: 10 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}
}

// start runs f until the test ends and returns a function that stops it
// and waits for Run to return.
func start(t *testing.T, f *feed.Feed) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestBootDropsStaleBacklog(t *testing.T) {
	ctx := t.Context()
	b := mempubsub.New(mempubsub.Config{})
	// A crashed VM with this alloc id left its subscription and a backlog.
	if err := b.CreateSubscription(ctx, "ID_vm1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, broker.Message{Data: []byte("stale")}); err != nil {
		t.Fatal(err)
	}

	var in inbox
	f := feed.New(b, fastConfig("ID_vm1"), in.handle)
	start(t, f)
	testkit.Eventually(t, "feed ready", f.Ready)
	if err := b.Publish(ctx, broker.Message{Data: []byte("fresh")}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, `"fresh" delivered`, func() bool { return in.has("fresh") })
	if got := in.all(); len(got) != 1 {
		t.Fatalf("delivered %q, want only the fresh alert: a restart must not replay a stale backlog", got)
	}
}

// TestVanishedSubscriptionIsRecreated runs on both brokers: mempubsub ends
// a Receive whose subscription is deleted, while pstest (like Pub/Sub behind
// a retrying client) keeps it open, so only the feed's polling notices.
func TestVanishedSubscriptionIsRecreated(t *testing.T) {
	for name, b := range map[string]broker.Broker{"mempubsub": mempubsub.New(mempubsub.Config{}), "pstest": pstestBroker(t)} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			var in inbox
			f := feed.New(b, fastConfig("ID_vm1"), in.handle)
			start(t, f)
			testkit.Eventually(t, "feed ready", f.Ready)

			// Someone (expiry, an operator, an emulator restart) deletes it.
			if err := b.DeleteSubscription(ctx, "ID_vm1"); err != nil {
				t.Fatal(err)
			}
			// What is published while it is gone is lost; keep publishing
			// until the recreated subscription delivers.
			for i := 0; ; i++ {
				msg := fmt.Sprintf("after-%d", i)
				if err := b.Publish(ctx, broker.Message{Data: []byte(msg)}); err != nil {
					t.Fatal(err)
				}
				if in.has(msg) || func() bool { time.Sleep(10 * time.Millisecond); return in.has(msg) }() {
					break
				}
				if i > 1000 {
					t.Fatal("the feed never recreated its vanished subscription")
				}
			}
			if err := b.CheckSubscription(ctx, "ID_vm1"); err != nil {
				t.Fatalf("subscription after recovery: %v", err)
			}
		})
	}
}

// pstestBroker is gcppubsub on an in-process pstest server.
func pstestBroker(t *testing.T) broker.Broker {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	b, err := gcppubsub.New(t.Context(), gcppubsub.Config{ProjectID: "skywatch-test", TopicID: "alerts", EmulatorHost: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// flaky wraps a real broker and makes it unreachable on demand, as a
// network partition or a stopped emulator would.
type flaky struct {
	*mempubsub.Broker
	down     atomic.Bool
	refusals atomic.Int32 // calls refused while down
}

var errDown = errors.New("broker unreachable")

func (f *flaky) CheckSubscription(ctx context.Context, name string) error {
	if f.down.Load() {
		f.refusals.Add(1)
		return errDown
	}
	return f.Broker.CheckSubscription(ctx, name)
}

func (f *flaky) CreateSubscription(ctx context.Context, name string) error {
	if f.down.Load() {
		f.refusals.Add(1)
		return errDown
	}
	return f.Broker.CreateSubscription(ctx, name)
}

func TestOutageTurnsReadinessOffAndRecovers(t *testing.T) {
	ctx := t.Context()
	b := &flaky{Broker: mempubsub.New(mempubsub.Config{})}
	var in inbox
	f := feed.New(b, fastConfig("ID_vm1"), in.handle)
	start(t, f)
	testkit.Eventually(t, "feed ready", f.Ready)

	b.down.Store(true)
	testkit.Eventually(t, "readiness off while the broker is unreachable", func() bool { return !f.Ready() })

	// Alerts published during the blip sit in the subscription, which still
	// exists; recovery must keep it rather than recreate it.
	if err := b.Broker.Publish(ctx, broker.Message{Data: []byte("during")}); err != nil {
		t.Fatal(err)
	}
	b.down.Store(false)
	testkit.Eventually(t, "ready again after the broker returned", f.Ready)
	testkit.Eventually(t, "the alert published during the outage delivered", func() bool { return in.has("during") })
}

func TestBrokerDownAtBootIsRetried(t *testing.T) {
	b := &flaky{Broker: mempubsub.New(mempubsub.Config{})}
	b.down.Store(true)
	f := feed.New(b, fastConfig("ID_vm1"), func(broker.Message) {})
	start(t, f)
	// Let the feed fail a few times before the broker comes back.
	testkit.Eventually(t, "the feed retried while the broker was down", func() bool { return b.refusals.Load() >= 3 })
	if f.Ready() {
		t.Fatal("ready while the broker is unreachable")
	}
	b.down.Store(false)
	testkit.Eventually(t, "ready once the broker answers", f.Ready)
}

func TestDeleteAfterStop(t *testing.T) {
	ctx := t.Context()
	b := mempubsub.New(mempubsub.Config{})
	f := feed.New(b, fastConfig("ID_vm1"), func(broker.Message) {})
	stop := start(t, f)
	testkit.Eventually(t, "feed ready", f.Ready)
	stop()
	if f.Ready() {
		t.Error("ready after Run returned")
	}
	if err := f.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckSubscription(ctx, "ID_vm1"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("subscription after Delete: err = %v, want ErrNotFound", err)
	}
}
