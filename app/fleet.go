package main

import (
	"context"

	"github.com/skywatch-dev/skywatch/internal/broker"
)

// alerts publishes the hub's alerts as messages without attributes: a
// message without attributes is an alert, for relays old and new.
type alerts struct{ broker.Publisher }

func (a alerts) Publish(ctx context.Context, data []byte) error {
	return a.Publisher.Publish(ctx, broker.Message{Data: data})
}
