package feed_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/feed"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestOnReceivingWhenCreated: the hook that starts the history's coverage
// runs when a newly created subscription starts receiving (at boot, and
// after a recreation), and not when a kept subscription resumes after an
// outage, whose backlog still holds every alert sent meanwhile.
func TestOnReceivingWhenCreated(t *testing.T) {
	ctx := t.Context()
	b := &flaky{Broker: mempubsub.New(mempubsub.Config{})}
	var calls atomic.Int32
	cfg := fastConfig("ID_vm1")
	cfg.OnReceiving = func() { calls.Add(1) }
	f := feed.New(b, cfg, func(broker.Message) {})
	start(t, f)
	testkit.Eventually(t, "the hook at boot", func() bool { return calls.Load() == 1 })
	if !f.Ready() {
		t.Error("hook called before the feed is ready")
	}

	// An outage: the subscription is kept, coverage goes on.
	b.down.Store(true)
	testkit.Eventually(t, "readiness off while the broker is unreachable", func() bool { return !f.Ready() })
	b.down.Store(false)
	testkit.Eventually(t, "ready again", f.Ready)
	time.Sleep(50 * time.Millisecond) // a few check intervals: a wrong call would come now
	if n := calls.Load(); n != 1 {
		t.Fatalf("hook called %d times after an outage with the subscription kept, want still 1", n)
	}

	// The subscription vanishes and is recreated: coverage starts over.
	if err := b.DeleteSubscription(ctx, "ID_vm1"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the hook after the recreation", func() bool { return calls.Load() == 2 })
}
