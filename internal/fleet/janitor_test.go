package fleet

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/names"
)

// exists lists the broker's subscriptions.
func exists(t *testing.T, b broker.Lister, name string) bool {
	t.Helper()
	subs, err := b.ListSubscriptions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(subs, name)
}

func create(t *testing.T, b broker.Broker, name string) {
	t.Helper()
	if err := b.CreateSubscription(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// beatEvery publishes vm's heartbeats every interval until ctx is done,
// as a live relay would (without receiving anything itself).
func beatEvery(ctx context.Context, t *testing.T, b broker.Broker, vm string) {
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			hb := Heartbeat{Type: typeHeartbeat, VM: vm, Instance: vm + "-1", Region: "iad", Seq: seq}
			if err := b.Publish(ctx, hb.message()); err != nil && ctx.Err() == nil {
				t.Errorf("publish %s heartbeat: %v", vm, err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// TestJanitor: with a relay that has received without a break, the
// subscription of a VM never heard is deleted once it has been listed for
// longer than OrphanAfter, and only it: not a live VM's, not a foreign
// prefix's, not the relay's own.
func TestJanitor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := mempubsub.New(mempubsub.Config{})
		dead := names.Subscription(prefix, "vm-dead")
		live := names.Subscription(prefix, "vm-live")
		foreign := "OTHER_vm-dead"
		for _, name := range []string{dead, live, foreign} {
			create(t, b, name)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		beatEvery(ctx, t, b, "vm-live")
		a := startNode(t, b, "vm-a", "ams")
		own := names.Subscription(prefix, "vm-a")

		// Up to OrphanAfter nothing goes: the relay has not covered that
		// long yet (and the dead VM's subscription was listed only now).
		time.Sleep(orphanAfter - time.Second)
		synctest.Wait()
		for _, name := range []string{dead, live, foreign, own} {
			if !exists(t, b, name) {
				t.Fatalf("%s deleted before OrphanAfter", name)
			}
		}
		// Within two heartbeat intervals after it, the orphan goes.
		time.Sleep(2*interval + time.Second)
		synctest.Wait()
		if exists(t, b, dead) {
			t.Errorf("%s (never heard) still there after OrphanAfter plus two intervals", dead)
		}
		// Much later, the others are still there.
		time.Sleep(3 * orphanAfter)
		synctest.Wait()
		for _, name := range []string{live, foreign, own} {
			if !exists(t, b, name) {
				t.Errorf("%s deleted; the janitor must never touch it", name)
			}
		}
		if got := value(a.fleet.m.deleted); got != 1 {
			t.Errorf("deletions counted %v, want 1", got)
		}
	})
}

// TestJanitorWaitsForUnbrokenCoverage: a relay that was deaf for a while
// (a stall, an outage) starts its clock again: it deletes nothing until
// it has received without a break for OrphanAfter, however long the
// orphan has been silent.
func TestJanitorWaitsForUnbrokenCoverage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &deafBroker{Broker: mempubsub.New(mempubsub.Config{})}
		dead := names.Subscription(prefix, "vm-dead")
		create(t, b, dead)
		startNode(t, b, "vm-a", "ams")
		own := names.Subscription(prefix, "vm-a")

		time.Sleep(orphanAfter / 2)
		b.deaf.Store(&own)
		time.Sleep(5 * interval)
		b.deaf.Store(nil)
		synctest.Wait()
		healed := time.Now()

		// The orphan has been silent far longer than OrphanAfter by now,
		// but the relay's own coverage restarted when it healed.
		time.Sleep(orphanAfter - 2*interval)
		synctest.Wait()
		if !exists(t, b, dead) {
			t.Fatalf("%s deleted %v after the relay could hear again; want OrphanAfter (%v) first", dead, time.Since(healed), orphanAfter)
		}
		// Its coverage restarts with the first heartbeat heard after the
		// feed recreated its subscription: up to an interval and the
		// recreate gap after healing; then the janitor's next round.
		time.Sleep(6 * interval)
		synctest.Wait()
		if exists(t, b, dead) {
			t.Errorf("%s still there %v after the relay could hear again", dead, time.Since(healed))
		}
	})
}

// TestJanitorSparesRecentlyHeard: a VM heard recently keeps its
// subscription, and one that goes silent loses it OrphanAfter after its
// last heartbeat, not after it was first listed.
func TestJanitorSparesRecentlyHeard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := mempubsub.New(mempubsub.Config{})
		sub := names.Subscription(prefix, "vm-b")
		create(t, b, sub)
		ctx, cancel := context.WithCancel(context.Background())
		beatEvery(ctx, t, b, "vm-b")
		startNode(t, b, "vm-a", "ams")

		time.Sleep(2 * orphanAfter)
		synctest.Wait()
		if !exists(t, b, sub) {
			t.Fatal("a live VM's subscription was deleted")
		}
		cancel() // vm-b crashes
		synctest.Wait()
		crashed := time.Now()
		time.Sleep(orphanAfter - interval)
		synctest.Wait()
		if !exists(t, b, sub) {
			t.Fatalf("vm-b's subscription deleted %v after its last heartbeat, before OrphanAfter", time.Since(crashed))
		}
		time.Sleep(3 * interval)
		synctest.Wait()
		if exists(t, b, sub) {
			t.Errorf("vm-b's subscription still there %v after its last heartbeat", time.Since(crashed))
		}
	})
}
