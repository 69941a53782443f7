package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
)

// probeRate is the probe's messages per second: enough for a p99 over a
// step of a few seconds, little beside the load.
const probeRate = 50

// probe measures the broker on its own, beside the relays: it publishes
// probeRate time-stamped messages a second to a topic of its own and
// receives them on a subscription of its own, with no relay and no
// fan-out. Its latency is what the broker (and this machine) costs an alert
// before any relay touches it; the emulator delivers on a 50 ms tick, so on
// it this is the floor under the clients' latency (docs/performance.md).
// It runs in this process, so it shares the load tool's scheduling with
// the clients.
type probe struct {
	b   broker.Broker
	sub string

	mu  sync.Mutex
	lat []int64 // µs, since the last take
}

// startProbe creates the probe's subscription and starts publishing and
// receiving until ctx is done; stop deletes the subscription.
func startProbe(ctx context.Context, b broker.Broker, sub string) (*probe, error) {
	p := &probe{b: b, sub: sub}
	if err := b.CreateSubscription(ctx, sub); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	go func() {
		_ = b.Receive(ctx, sub, func(m broker.Message) {
			now := time.Now().UnixNano()
			if sent, err := strconv.ParseInt(string(m.Data), 10, 64); err == nil {
				p.mu.Lock()
				p.lat = append(p.lat, (now-sent)/1000)
				p.mu.Unlock()
			}
		})
	}()
	go func() {
		tick := time.NewTicker(time.Second / probeRate)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				data := []byte(strconv.FormatInt(time.Now().UnixNano(), 10))
				go func() { _ = b.Publish(ctx, broker.Message{Data: data}) }()
			}
		}
	}()
	return p, nil
}

// take returns the latencies received since the last take, sorted.
func (p *probe) take() []int64 {
	p.mu.Lock()
	lat := p.lat
	p.lat = nil
	p.mu.Unlock()
	slices.Sort(lat)
	return lat
}

func (p *probe) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = p.b.DeleteSubscription(ctx, p.sub)
}

// probeEmulator starts a probe on the emulator, on a topic of its own.
func probeEmulator(ctx context.Context, host string) (*probe, func(), error) {
	b, err := gcppubsub.New(ctx, gcppubsub.Config{EmulatorHost: host, ProjectID: "skywatch-load", TopicID: "LOAD_PROBE"})
	if err != nil {
		return nil, nil, fmt.Errorf("probe: %w", err)
	}
	pctx, cancel := context.WithCancel(ctx)
	p, err := startProbe(pctx, b, "load-probe")
	if err != nil {
		cancel()
		b.Close()
		return nil, nil, err
	}
	return p, func() { cancel(); p.stop(); b.Close() }, nil
}
