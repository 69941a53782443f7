package gcppubsub_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/brokertest"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// lazyWait bounds how long a Lazy broker may take to connect once the
// server answers: an attempt in flight (5 s), then the next after at most
// 5 s of backoff, with room for a loaded machine.
const lazyWait = 40 * time.Second

// TestLazyConformance: once connected, a Lazy broker is the broker.
func TestLazyConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		srv := newServer(t)
		l := openLazy(t, gcppubsub.Config{ProjectID: project, TopicID: "alerts", EmulatorHost: srv.Addr}, nil)
		waitConnected(t, l)
		return l
	})
}

// TestLazyPermissionDenied: while Pub/Sub refuses, every call fails with
// ErrNotConnected and the reason (never ErrNotFound, which would make the
// feed recreate things); the reason is logged once however many attempts
// fail; when Pub/Sub accepts, the broker connects by itself.
func TestLazyPermissionDenied(t *testing.T) {
	deny := &testkit.Refuser{}
	deny.On.Store(true)
	srv := pstest.NewServer(pstest.ServerReactorOption{FuncName: "GetTopic", Reactor: deny})
	t.Cleanup(func() { srv.Close() })
	logs := &testkit.SyncBuffer{}
	l := openLazy(t, gcppubsub.Config{ProjectID: project, TopicID: "alerts", EmulatorHost: srv.Addr}, logs)

	logs.WaitFor(t, lazyWait, "PermissionDenied")
	// Room for several more attempts (backoff 250 ms, 500 ms, 1 s, 2 s),
	// which must not log again: the reason has not changed.
	time.Sleep(4 * time.Second)
	for name, err := range map[string]error{
		"Publish":            l.Publish(t.Context(), broker.Message{Data: []byte("x")}),
		"CreateSubscription": l.CreateSubscription(t.Context(), "vm-1"),
		"CheckSubscription":  l.CheckSubscription(t.Context(), "vm-1"),
		"Receive":            l.Receive(t.Context(), "vm-1", func(broker.Message) {}),
	} {
		if !errors.Is(err, gcppubsub.ErrNotConnected) || errors.Is(err, broker.ErrNotFound) {
			t.Errorf("%s before connecting: %v, want ErrNotConnected and not ErrNotFound", name, err)
		}
		if !strings.Contains(err.Error(), "PermissionDenied") {
			t.Errorf("%s before connecting: %v, want the reason", name, err)
		}
	}
	if err := l.DeleteSubscription(t.Context(), "vm-1"); err != nil {
		t.Errorf("DeleteSubscription before connecting: %v, want nil (nothing was created)", err)
	}
	if n := strings.Count(logs.String(), "grants can take minutes to propagate"); n != 1 {
		t.Errorf("the refusal was logged %d times, want once:\n%s", n, logs)
	}

	deny.On.Store(false)
	waitConnected(t, l)
	if err := l.CreateSubscription(t.Context(), "vm-1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Publish(t.Context(), broker.Message{Data: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "pubsub connected") {
		t.Errorf("connection not logged:\n%s", logs)
	}
}

// TestLazyUnreachable: a broker opened before Pub/Sub listens connects
// once it does.
func TestLazyUnreachable(t *testing.T) {
	addr := testkit.FreeAddr(t)
	logs := &testkit.SyncBuffer{}
	l := openLazy(t, gcppubsub.Config{ProjectID: project, TopicID: "alerts", EmulatorHost: addr}, logs)
	logs.WaitFor(t, lazyWait, "pubsub unreachable")
	if err := l.Publish(t.Context(), broker.Message{Data: []byte("x")}); !errors.Is(err, gcppubsub.ErrNotConnected) {
		t.Errorf("Publish before connecting: %v, want ErrNotConnected", err)
	}
	srv := pstest.NewServerWithAddress(addr)
	t.Cleanup(func() { srv.Close() })
	waitConnected(t, l)
}

// TestLazyMissingTopicOnCloud: a missing topic on Google Cloud is a clear
// error that is retried, not created and not fatal.
func TestLazyMissingTopicOnCloud(t *testing.T) {
	srv := newServer(t)
	logs := &testkit.SyncBuffer{}
	l := openLazy(t, gcppubsub.Config{
		ProjectID:     project,
		TopicID:       "missing",
		ClientOptions: []option.ClientOption{option.WithGRPCConn(dial(t, srv.Addr))},
	}, logs)
	logs.WaitFor(t, lazyWait, "create it with `pulumi up`")
	if l.Connected() {
		t.Fatal("connected without a topic")
	}
}

// TestOpenBadKey: a key that cannot be parsed fails Open at once, without
// quoting it; retrying could not fix it.
func TestOpenBadKey(t *testing.T) {
	bad := []byte(`{"type":"service_account","private_key":"SECRET-NOT-A-PEM"}`)
	l, err := gcppubsub.Open(gcppubsub.Config{ProjectID: project, TopicID: "alerts", CredentialsJSON: bad}, nil)
	if err == nil {
		l.Close()
		t.Fatal("Open with an unparseable key: nil error, want one")
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("error quotes the key: %v", err)
	}
	t.Logf("Open: %v", err)
}

func openLazy(t *testing.T, cfg gcppubsub.Config, logs *testkit.SyncBuffer) *gcppubsub.Lazy {
	t.Helper()
	var log *slog.Logger
	if logs != nil {
		log = slog.New(slog.NewTextHandler(logs, nil))
	}
	l, err := gcppubsub.Open(cfg, log)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func waitConnected(t *testing.T, l *gcppubsub.Lazy) {
	t.Helper()
	deadline := time.Now().Add(lazyWait)
	for !l.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("Lazy broker never connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
