// Package broker defines the small message-bus interface the relay's wiring
// needs: one topic that every VM publishes to, and one subscription per VM.
//
// Implementations live in subpackages: mempubsub (the embedded in-memory
// default for `make run` and `make dev`) and gcppubsub (Google Cloud Pub/Sub
// and its emulators). brokertest holds the conformance suite every
// implementation runs, so they behave alike.
package broker

import (
	"context"
	"errors"
	"time"
)

// DefaultPublishTimeout bounds one Publish made for a sender (a browser's
// alert, an API call), so that the sender hears "unavailable" within
// seconds when the broker is down. The hub and the publish API default to
// it; the relay's wiring passes one value to both and to gcppubsub.
const DefaultPublishTimeout = 5 * time.Second

// ErrNotFound reports that a subscription does not exist (never made, deleted,
// expired, or lost when an emulator restarted). Implementations wrap it, so
// test with errors.Is.
var ErrNotFound = errors.New("subscription not found")

// Message is what travels on the topic: a payload and, optionally, string
// attributes (Pub/Sub's message attributes). Attributes let a receiver tell
// kinds of message apart without decoding the payload; a message without
// them is an alert, as every message was before attributes existed.
type Message struct {
	Data       []byte
	Attributes map[string]string
}

// Broker is a topic with named subscriptions on it. Every subscription gets
// every message published after it was created (fan-out, like Pub/Sub).
// Delivery is at least once: a message may arrive more than once.
//
// All methods are safe for concurrent use.
type Broker interface {
	Publisher
	Subscriber
}

// Publisher is the half of a Broker the hub uses.
type Publisher interface {
	// Publish sends m to the topic and returns once the broker has
	// accepted it. It gives up when ctx is done and returns an error; a
	// message whose Publish returned an error should not be delivered later.
	// m.Data must not be empty (Pub/Sub refuses a message with neither data
	// nor attributes; requiring data keeps the rule simple); the caller may
	// reuse m.Data and m.Attributes once Publish returns.
	Publish(ctx context.Context, m Message) error
}

// Subscriber is the half of a Broker the feed uses: one VM's subscription.
type Subscriber interface {
	// CreateSubscription makes the named subscription on the topic. It
	// receives only what is published after CreateSubscription returns: if a
	// subscription by that name already exists (left by a crash), its backlog
	// is dropped, so a restarted VM never replays stale messages. Call it
	// before Receive: a Receive already running on that name may end with
	// ErrNotFound (Pub/Sub deletes and recreates it) or carry on.
	//
	// name is an ID, not a full resource name; for Pub/Sub it must start
	// with a letter and be 3 to 255 characters of letters, digits and
	// - _ . ~ + %.
	CreateSubscription(ctx context.Context, name string) error

	// CheckSubscription returns nil if the subscription exists and the broker
	// answers, an error wrapping ErrNotFound if it does not exist, and another
	// error if the broker cannot be reached. It returns within ctx's deadline.
	CheckSubscription(ctx context.Context, name string) error

	// Receive calls handle for each message on the subscription until ctx is
	// done, then returns nil. It returns an error wrapping ErrNotFound if the
	// subscription does not exist (some implementations only notice at start;
	// callers poll CheckSubscription to find one that vanishes later), and
	// another error if receiving fails for good. handle may be called from
	// several goroutines at once; a message is acknowledged after handle
	// returns. handle must not modify m.Data or m.Attributes, which may be
	// shared with other subscriptions. A message published without
	// attributes arrives with nil or empty Attributes.
	Receive(ctx context.Context, name string, handle func(m Message)) error

	// DeleteSubscription removes the subscription. Deleting one that does not
	// exist is not an error.
	DeleteSubscription(ctx context.Context, name string) error
}

// Lister is an optional extra of a Broker, found by type assertion (as
// io.Closer is): the janitor needs it, the relay's delivery path does not.
type Lister interface {
	// ListSubscriptions returns the IDs (not full resource names) of every
	// subscription attached to the broker's topic, in no particular order.
	ListSubscriptions(ctx context.Context) ([]string, error)
}

// Alerts adapts p for publishers of plain payloads (the hub, the publish
// API): each payload goes out as a message without attributes, which every
// relay, old or new, reads as an alert.
func Alerts(p Publisher) AlertPublisher { return AlertPublisher{p} }

// AlertPublisher publishes payloads as attribute-less messages.
type AlertPublisher struct{ p Publisher }

// Publish sends data as an alert.
func (a AlertPublisher) Publish(ctx context.Context, data []byte) error {
	return a.p.Publish(ctx, Message{Data: data})
}
