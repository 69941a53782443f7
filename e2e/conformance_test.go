//go:build e2e

package e2e

import (
	"context"
	"testing"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/brokertest"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
)

// TestBrokerConformance runs the broker conformance suite (brokertest, the
// same one `make test` runs on mempubsub and on pstest) through gcppubsub
// against Google's official emulator.
func TestBrokerConformance(t *testing.T) {
	emu := sharedEmulator(t)
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		// A topic of its own per case, since the emulator is shared.
		b, err := gcppubsub.New(context.Background(), gcppubsub.Config{
			ProjectID:    projectID,
			TopicID:      topicFor(t),
			EmulatorHost: emu.Host(),
		})
		if err != nil {
			t.Fatalf("gcppubsub on the %s emulator: %v", emu.Kind(), err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}
