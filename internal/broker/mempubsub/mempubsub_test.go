package mempubsub_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/brokertest"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return mempubsub.New(mempubsub.Config{})
	})
}

// TestMaxBacklog: a full subscription drops its oldest messages and keeps
// the newest, and Publish never blocks on it.
func TestMaxBacklog(t *testing.T) {
	ctx := t.Context()
	b := mempubsub.New(mempubsub.Config{MaxBacklog: 3})
	if err := b.CreateSubscription(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := b.Publish(ctx, broker.Message{Data: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	var got []string
	err := b.Receive(rctx, "s", func(m broker.Message) {
		got = append(got, string(m.Data))
		if len(got) == 3 {
			cancel()
		}
	})
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if fmt.Sprint(got) != "[m2 m3 m4]" {
		t.Fatalf("got %v, want [m2 m3 m4]", got)
	}
}

// TestPublishCopies: the caller may reuse its buffer once Publish returns.
func TestPublishCopies(t *testing.T) {
	ctx := t.Context()
	b := mempubsub.New(mempubsub.Config{})
	if err := b.CreateSubscription(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	buf := []byte("first")
	if err := b.Publish(ctx, broker.Message{Data: buf}); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXX")
	rctx, cancel := context.WithCancel(ctx)
	var got string
	if err := b.Receive(rctx, "s", func(m broker.Message) { got = string(m.Data); cancel() }); err != nil {
		t.Fatal(err)
	}
	if got != "first" {
		t.Fatalf("got %q, want %q", got, "first")
	}
}

func BenchmarkPublish(b *testing.B) {
	ctx := b.Context()
	br := mempubsub.New(mempubsub.Config{MaxBacklog: -1})
	for i := range 4 {
		if err := br.CreateSubscription(ctx, fmt.Sprint("s", i)); err != nil {
			b.Fatal(err)
		}
		go br.Receive(ctx, fmt.Sprint("s", i), func(broker.Message) {})
	}
	msg := make([]byte, 256)
	for b.Loop() {
		if err := br.Publish(ctx, broker.Message{Data: msg}); err != nil {
			b.Fatal(err)
		}
	}
}
