package server_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/feed"
	"github.com/skywatch-dev/skywatch/internal/hub"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/server"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// hangingBroker is a real broker whose Receive does not return when its
// context ends, as a client library stuck draining would, until release is
// closed. It records whether the delete came while the budget lasted.
type hangingBroker struct {
	broker.Broker
	release        chan struct{}
	deleted        atomic.Bool
	deletedInTime  atomic.Bool
	receiveStarted chan struct{}
}

func (b *hangingBroker) Receive(ctx context.Context, name string, handle func(broker.Message)) error {
	close(b.receiveStarted)
	err := b.Broker.Receive(ctx, name, handle)
	<-b.release
	return err
}

func (b *hangingBroker) DeleteSubscription(ctx context.Context, name string) error {
	b.deleted.Store(true)
	b.deletedInTime.Store(ctx.Err() == nil)
	return b.Broker.DeleteSubscription(ctx, name)
}

// newServer builds one relay's parts on b, as app/ does, and serves it on a
// loopback port until the returned stop is called.
func newServer(t *testing.T, b broker.Broker) (srv *server.Server, addr testkit.Endpoint, stop func() error) {
	t.Helper()
	h := hub.New(hub.Config{VM: "vm1", Region: "ams"}, broker.Alerts(b))
	f := feed.New(b, feed.Config{Name: "ID_vm1"}, func(m broker.Message) { h.Deliver(m.Data) })
	srv = server.New(server.Config{Hub: h, Feed: f})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	return srv, testkit.Endpoint(ln.Addr().String()), func() error {
		cancel()
		return <-served
	}
}

// TestDeleteGetsItsShareOfTheBudget: with a receiver that never stops, the
// shutdown gives up waiting for it and still deletes the subscription while
// the budget lasts.
func TestDeleteGetsItsShareOfTheBudget(t *testing.T) {
	b := &hangingBroker{Broker: mempubsub.New(mempubsub.Config{}), release: make(chan struct{}), receiveStarted: make(chan struct{})}
	t.Cleanup(func() { close(b.release) })
	srv, addr, stop := newServer(t, b)
	<-b.receiveStarted
	if err := addr.WaitStatus("/readyz", http.StatusOK, testkit.Wait, nil); err != nil {
		t.Fatal(err)
	}
	c := testkit.MustDial(t, addr.WS(""), nil, "client")

	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err == nil || !strings.Contains(err.Error(), "stop receiving") {
		t.Errorf("Shutdown = %v, want it to report the receiver that did not stop", err)
	}
	c.ExpectClose(t, testkit.Wait, protocol.CloseRestart, "clients are closed before the receiver is stopped")
	if !b.deleted.Load() || !b.deletedInTime.Load() {
		t.Fatalf("subscription deleted: %v, within the budget: %v; want both", b.deleted.Load(), b.deletedInTime.Load())
	}
	if err := b.CheckSubscription(context.Background(), "ID_vm1"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("subscription after shutdown: %v, want it gone", err)
	}
}

// TestShutdownInOrder: a clean shutdown turns readiness off, closes clients
// with 1012 and deletes the subscription, and reports no error.
func TestShutdownInOrder(t *testing.T) {
	b := mempubsub.New(mempubsub.Config{})
	srv, addr, stop := newServer(t, b)
	if err := addr.WaitStatus("/readyz", http.StatusOK, testkit.Wait, nil); err != nil {
		t.Fatal(err)
	}
	c := testkit.MustDial(t, addr.WS(""), nil, "client")
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !srv.Ready() {
		t.Error("not ready before Shutdown: only Shutdown turns readiness off")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if srv.Ready() {
		t.Error("ready after Shutdown")
	}
	c.ExpectClose(t, testkit.Wait, protocol.CloseRestart, "the relay shut down")
	if err := b.CheckSubscription(context.Background(), "ID_vm1"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("subscription after shutdown: %v, want it gone", err)
	}
}
