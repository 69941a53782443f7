package feed_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/feed"
)

// journal records when the subscription was deleted and created.
type journal struct {
	*mempubsub.Broker
	mu      sync.Mutex
	deletes []time.Time
	creates []time.Time
}

func (j *journal) DeleteSubscription(ctx context.Context, name string) error {
	j.mu.Lock()
	j.deletes = append(j.deletes, time.Now())
	j.mu.Unlock()
	return j.Broker.DeleteSubscription(ctx, name)
}

func (j *journal) CreateSubscription(ctx context.Context, name string) error {
	j.mu.Lock()
	j.creates = append(j.creates, time.Now())
	j.mu.Unlock()
	return j.Broker.CreateSubscription(ctx, name)
}

// TestRecreate: Recreate stops receiving, deletes the subscription, waits
// long enough for the emulator's dead pull stream to go (2 s), creates it
// again and receives from the new one.
func TestRecreate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &journal{Broker: mempubsub.New(mempubsub.Config{})}
		var in inbox
		f := feed.New(b, feed.Config{Name: "ID_vm1"}, in.handle)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- f.Run(ctx) }()
		synctest.Wait()
		if !f.Ready() {
			t.Fatal("not ready at start")
		}

		f.Recreate("test")
		synctest.Wait()
		if f.Ready() {
			t.Error("ready while recreating")
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if !f.Ready() {
			t.Fatal("not ready after recreating")
		}
		b.mu.Lock()
		deletes, creates := b.deletes, b.creates
		b.mu.Unlock()
		if len(deletes) != 1 || len(creates) != 2 {
			t.Fatalf("%d deletes and %d creates, want 1 and 2 (boot, recreate)", len(deletes), len(creates))
		}
		if gap := creates[1].Sub(deletes[0]); gap < 2*time.Second {
			t.Errorf("created again %v after deleting, want at least 2 s", gap)
		}
		if err := b.Publish(ctx, broker.Message{Data: []byte("after")}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if !in.has("after") {
			t.Error("nothing received from the recreated subscription")
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}
