package brokertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
)

// Generous bounds: they only stop a broken implementation from hanging the
// suite. Nothing is asserted about how fast things happen.
const (
	arrivalTimeout = 60 * time.Second // for awaited messages to arrive
	callTimeout    = 30 * time.Second // for one broker call
)

// Run runs the conformance suite against the brokers newBroker returns.
// Each call of newBroker must return a fresh broker on its own topic, and
// register its own cleanup with t.Cleanup. Subtests run in parallel, each
// with its own broker; subscription names are random, so brokers may share
// a Pub/Sub project or emulator.
func Run(t *testing.T, newBroker func(t *testing.T) broker.Broker) {
	tests := []struct {
		name string
		test func(t *testing.T, b broker.Broker)
	}{
		{"FanOut", testFanOut},
		{"OnlyAfterCreation", testOnlyAfterCreation},
		{"RecreateDropsBacklog", testRecreateDropsBacklog},
		{"BacklogKeptWithoutReceive", testBacklogKeptWithoutReceive},
		{"CheckSubscription", testCheckSubscription},
		{"DeleteMissing", testDeleteMissing},
		{"ReceiveMissing", testReceiveMissing},
		{"ReceiveStopsOnCancel", testReceiveStopsOnCancel},
		{"ReceiveAfterDelete", testReceiveAfterDelete},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"PublishCancelled", testPublishCancelled},
		{"PublishEmpty", testPublishEmpty},
		{"Attributes", testAttributes},
		{"ListSubscriptions", testListSubscriptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.test(t, newBroker(t))
		})
	}
}

// testFanOut: every subscription gets every message.
func testFanOut(t *testing.T, b broker.Broker) {
	const subs, msgs = 3, 20
	var rs []*receiver
	for range subs {
		rs = append(rs, startReceiver(t, b, createSubscription(t, b)))
	}
	want := payloads("fan", msgs)
	publishAll(t, b, want)
	for _, r := range rs {
		r.waitFor(t, want)
	}
}

// testOnlyAfterCreation: a subscription does not get what was published
// before it existed.
func testOnlyAfterCreation(t *testing.T, b broker.Broker) {
	// A first subscription makes sure the topic has somewhere to deliver
	// "before", so an implementation cannot pass by dropping it.
	first := startReceiver(t, b, createSubscription(t, b))
	before := payloads("before", 5)
	publishAll(t, b, before)
	first.waitFor(t, before)

	r := startReceiver(t, b, createSubscription(t, b))
	after := payloads("after", 5)
	publishAll(t, b, after)
	r.waitFor(t, after)
	r.wantNone(t, before)
}

// testRecreateDropsBacklog: creating an existing subscription drops what it
// had not delivered yet, so a restarted VM never replays stale messages.
func testRecreateDropsBacklog(t *testing.T, b broker.Broker) {
	name := createSubscription(t, b)
	stale := payloads("stale", 5)
	publishAll(t, b, stale)

	if err := b.CreateSubscription(ctxT(t), name); err != nil {
		t.Fatalf("CreateSubscription on existing %s: %v", name, err)
	}
	r := startReceiver(t, b, name)
	fresh := payloads("fresh", 5)
	publishAll(t, b, fresh)
	r.waitFor(t, fresh)
	r.wantNone(t, stale)
}

// testBacklogKeptWithoutReceive: messages published while nobody receives
// wait for the next Receive.
func testBacklogKeptWithoutReceive(t *testing.T, b broker.Broker) {
	name := createSubscription(t, b)
	want := payloads("backlog", 20)
	publishAll(t, b, want)

	// A Receive that starts and stops without handling anything must not
	// lose the backlog either.
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	if err := b.Receive(ctx, name, func(broker.Message) {}); err != nil {
		t.Fatalf("Receive with cancelled ctx: %v, want nil", err)
	}

	startReceiver(t, b, name).waitFor(t, want)
}

func testCheckSubscription(t *testing.T, b broker.Broker) {
	name := randomName("sub")
	if err := b.CheckSubscription(ctxT(t), name); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("CheckSubscription before create: %v, want ErrNotFound", err)
	}
	if err := b.CreateSubscription(ctxT(t), name); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}
	if err := b.CheckSubscription(ctxT(t), name); err != nil {
		t.Fatalf("CheckSubscription after create: %v, want nil", err)
	}
	if err := b.DeleteSubscription(ctxT(t), name); err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	if err := b.CheckSubscription(ctxT(t), name); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("CheckSubscription after delete: %v, want ErrNotFound", err)
	}
}

func testDeleteMissing(t *testing.T, b broker.Broker) {
	if err := b.DeleteSubscription(ctxT(t), randomName("never")); err != nil {
		t.Fatalf("DeleteSubscription of a missing subscription: %v, want nil", err)
	}
	name := createSubscription(t, b)
	for i := range 2 {
		if err := b.DeleteSubscription(ctxT(t), name); err != nil {
			t.Fatalf("DeleteSubscription #%d: %v, want nil", i+1, err)
		}
	}
}

func testReceiveMissing(t *testing.T, b broker.Broker) {
	err := b.Receive(ctxT(t), randomName("never"), func(m broker.Message) {
		t.Errorf("handle called with %q on a missing subscription", m.Data)
	})
	if !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("Receive on missing subscription: %v, want ErrNotFound", err)
	}
}

// startRunning starts a Receive on name and returns once it has handled a
// message, so it is demonstrably running; cancel stops it, done carries what
// it returned.
func startRunning(t *testing.T, b broker.Broker, name string) (cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	got := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- b.Receive(ctx, name, func(broker.Message) {
			select {
			case got <- struct{}{}:
			default:
			}
		})
	}()
	publishAll(t, b, payloads("running", 1))
	select {
	case <-got:
	case err := <-errc:
		t.Fatalf("Receive returned early: %v", err)
	case <-time.After(arrivalTimeout):
		t.Fatalf("no message within %v", arrivalTimeout)
	}
	return cancel, errc
}

// testReceiveStopsOnCancel: cancelling ctx ends a running Receive with nil.
func testReceiveStopsOnCancel(t *testing.T, b broker.Broker) {
	name := createSubscription(t, b)
	cancel, done := startRunning(t, b, name)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Receive after cancel: %v, want nil", err)
		}
	case <-time.After(callTimeout):
		t.Fatalf("Receive still running %v after cancel", callTimeout)
	}
}

// testReceiveAfterDelete: deleting a subscription under a running Receive
// makes Receive return an ErrNotFound error, or (the in-process Pub/Sub
// fake) keep running until ctx is done. Either way CheckSubscription, which
// callers poll, reports it gone, and Receive never fails otherwise.
func testReceiveAfterDelete(t *testing.T, b broker.Broker) {
	name := createSubscription(t, b)
	cancel, done := startRunning(t, b, name)

	if err := b.DeleteSubscription(ctxT(t), name); err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	if err := b.CheckSubscription(ctxT(t), name); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("CheckSubscription after delete: %v, want ErrNotFound", err)
	}
	// Give an implementation that notices the deletion a moment to say so;
	// not noticing is allowed, so this wait is not an assertion.
	select {
	case err := <-done:
		if !errors.Is(err, broker.ErrNotFound) {
			t.Fatalf("Receive after delete: %v, want ErrNotFound", err)
		}
		return
	case <-time.After(time.Second):
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, broker.ErrNotFound) {
			t.Fatalf("Receive after delete and cancel: %v, want nil or ErrNotFound", err)
		}
	case <-time.After(callTimeout):
		t.Fatalf("Receive still running %v after cancel", callTimeout)
	}
}

// testConcurrentPublishers: many goroutines publishing at once lose nothing.
// The count stays modest because the in-process Pub/Sub fake delivers only
// about 250 messages a second per stream.
func testConcurrentPublishers(t *testing.T, b broker.Broker) {
	const publishers, each = 10, 20
	r1 := startReceiver(t, b, createSubscription(t, b))
	r2 := startReceiver(t, b, createSubscription(t, b))

	var want []string
	var wg sync.WaitGroup
	errs := make(chan error, publishers*each)
	for p := range publishers {
		batch := payloads(fmt.Sprintf("conc%d", p), each)
		want = append(want, batch...)
		wg.Go(func() {
			for _, m := range batch {
				if err := b.Publish(ctxT(t), broker.Message{Data: []byte(m)}); err != nil {
					errs <- fmt.Errorf("publish %s: %w", m, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r1.waitFor(t, want)
	r2.waitFor(t, want)
}

// testPublishCancelled: Publish with a done ctx returns its error and the
// message is never delivered.
func testPublishCancelled(t *testing.T, b broker.Broker) {
	r := startReceiver(t, b, createSubscription(t, b))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ghost := payloads("ghost", 1)
	if err := b.Publish(ctx, broker.Message{Data: []byte(ghost[0])}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with cancelled ctx: %v, want context.Canceled", err)
	}
	marker := payloads("marker", 3)
	publishAll(t, b, marker)
	r.waitFor(t, marker)
	r.wantNone(t, ghost)
}

// testPublishEmpty: an empty message is refused, as Pub/Sub refuses it.
func testPublishEmpty(t *testing.T, b broker.Broker) {
	if err := b.Publish(ctxT(t), broker.Message{}); err == nil {
		t.Fatal("Publish of an empty message: nil error, want one")
	}
}

// testAttributes: attributes arrive as they were published, and a message
// published without them arrives without them (the relay reads such a
// message as an alert, so old and new relays understand each other).
func testAttributes(t *testing.T, b broker.Broker) {
	r := startReceiver(t, b, createSubscription(t, b))
	tagged, plain := payloads("tagged", 1)[0], payloads("plain", 1)[0]
	want := map[string]string{"kind": "heartbeat", "v": "1"}
	if err := b.Publish(ctxT(t), broker.Message{Data: []byte(tagged), Attributes: want}); err != nil {
		t.Fatalf("Publish with attributes: %v", err)
	}
	publishAll(t, b, []string{plain})
	r.waitFor(t, []string{tagged, plain})
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := r.attrs[tagged]; !maps.Equal(got, want) {
		t.Errorf("attributes of %s: %v, want %v", tagged, got, want)
	}
	if got := r.attrs[plain]; len(got) != 0 {
		t.Errorf("attributes of %s: %v, want none", plain, got)
	}
}

// testListSubscriptions: a broker that offers broker.Lister lists what was
// created on its topic and not what was deleted.
func testListSubscriptions(t *testing.T, b broker.Broker) {
	l, ok := b.(broker.Lister)
	if !ok {
		t.Skipf("%T does not implement broker.Lister", b)
	}
	kept := createSubscription(t, b)
	gone := createSubscription(t, b)
	if err := b.DeleteSubscription(ctxT(t), gone); err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	names, err := l.ListSubscriptions(ctxT(t))
	if err != nil {
		t.Fatalf("ListSubscriptions: %v", err)
	}
	if !slices.Contains(names, kept) {
		t.Errorf("ListSubscriptions = %v, want it to include %s", names, kept)
	}
	if slices.Contains(names, gone) {
		t.Errorf("ListSubscriptions = %v, want it without the deleted %s", names, gone)
	}
}

// receiver collects what one Receive call hands over.
type receiver struct {
	name string
	done chan struct{} // closed when Receive returns
	err  error         // Receive's result, readable once done is closed

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every message
	counts  map[string]int
	attrs   map[string]map[string]string // by payload, as last received
}

// startReceiver runs Receive on name until the test ends, then checks that
// it returned nil.
func startReceiver(t *testing.T, b broker.Broker, name string) *receiver {
	t.Helper()
	r := &receiver{
		name:    name,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		counts:  make(map[string]int),
		attrs:   make(map[string]map[string]string),
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(r.done)
		r.err = b.Receive(ctx, name, r.handle)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
			if r.err != nil {
				t.Errorf("Receive %s: %v", name, r.err)
			}
		case <-time.After(callTimeout):
			t.Errorf("Receive %s still running %v after cancel", name, callTimeout)
		}
	})
	return r
}

func (r *receiver) handle(m broker.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[string(m.Data)]++
	r.attrs[string(m.Data)] = maps.Clone(m.Attributes)
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitFor waits until every payload in want has arrived at least once.
func (r *receiver) waitFor(t *testing.T, want []string) {
	t.Helper()
	deadline := time.After(arrivalTimeout)
	for {
		r.mu.Lock()
		var missing []string
		for _, w := range want {
			if r.counts[w] == 0 {
				missing = append(missing, w)
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-changed:
		case <-r.done:
			t.Fatalf("Receive %s returned %v while %d of %d messages were missing", r.name, r.err, len(missing), len(want))
		case <-deadline:
			t.Fatalf("subscription %s: %d of %d messages missing after %v, e.g. %q", r.name, len(missing), len(want), arrivalTimeout, missing[0])
		}
	}
}

// wantNone fails if any payload in unwanted has arrived.
func (r *receiver) wantNone(t *testing.T, unwanted []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range unwanted {
		if n := r.counts[u]; n > 0 {
			t.Errorf("subscription %s got %q %d times, want never", r.name, u, n)
		}
	}
}

// createSubscription makes a subscription with a random name and deletes it
// when the test ends.
func createSubscription(t *testing.T, b broker.Broker) string {
	t.Helper()
	name := randomName("sub")
	if err := b.CreateSubscription(ctxT(t), name); err != nil {
		t.Fatalf("CreateSubscription %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if err := b.DeleteSubscription(ctx, name); err != nil {
			t.Errorf("DeleteSubscription %s: %v", name, err)
		}
	})
	return name
}

func publishAll(t *testing.T, b broker.Broker, msgs []string) {
	t.Helper()
	for _, m := range msgs {
		if err := b.Publish(ctxT(t), broker.Message{Data: []byte(m)}); err != nil {
			t.Fatalf("Publish %s: %v", m, err)
		}
	}
}

// payloads returns n distinct payloads, unique across tests and runs so
// that brokers sharing a project cannot mix them up.
func payloads(prefix string, n int) []string {
	id := rand.Text()[:10]
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%s-%03d", prefix, id, i)
	}
	return out
}

// randomName returns a valid Pub/Sub resource ID: it starts with a letter,
// and is unique so that brokers may share a project or emulator.
func randomName(prefix string) string {
	return prefix + "-" + strings.ToLower(rand.Text())
}

// ctxT is a context for one broker call, ended with the test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}
