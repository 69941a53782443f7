package gcppubsub_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/brokertest"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
)

const project = "skywatch-test"

// TestConformance runs the suite on pstest through the emulator path of
// New (EmulatorHost), which also makes the topic.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		srv := newServer(t)
		return newBroker(t, gcppubsub.Config{ProjectID: project, TopicID: "alerts", EmulatorHost: srv.Addr})
	})
}

// TestSubscriptionSettings reads a subscription back through the admin API
// to check that it expires when left behind and keeps messages only briefly.
func TestSubscriptionSettings(t *testing.T) {
	srv := newServer(t)
	for _, tt := range []struct {
		name                          string
		cfg                           gcppubsub.Config
		wantExpiration, wantRetention time.Duration
		wantAckDeadlineSeconds        int32
	}{
		{"defaults", gcppubsub.Config{}, 24 * time.Hour, 10 * time.Minute, 10},
		{"set", gcppubsub.Config{SubscriptionExpiration: 48 * time.Hour, MessageRetention: time.Hour, AckDeadline: 30 * time.Second}, 48 * time.Hour, time.Hour, 30},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.ProjectID, cfg.TopicID, cfg.EmulatorHost = project, "settings-"+tt.name, srv.Addr
			b := newBroker(t, cfg)
			if err := b.CreateSubscription(t.Context(), "vm-1"); err != nil {
				t.Fatal(err)
			}
			// Recreating must apply the settings too.
			if err := b.CreateSubscription(t.Context(), "vm-1"); err != nil {
				t.Fatal(err)
			}
			sub, err := srv.GServer.GetSubscription(t.Context(), &pubsubpb.GetSubscriptionRequest{
				Subscription: "projects/" + project + "/subscriptions/vm-1",
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := sub.GetExpirationPolicy().GetTtl().AsDuration(); got != tt.wantExpiration {
				t.Errorf("expiration TTL = %v, want %v", got, tt.wantExpiration)
			}
			if got := sub.GetMessageRetentionDuration().AsDuration(); got != tt.wantRetention {
				t.Errorf("message retention = %v, want %v", got, tt.wantRetention)
			}
			if got := sub.GetAckDeadlineSeconds(); got != tt.wantAckDeadlineSeconds {
				t.Errorf("ack deadline = %ds, want %ds", got, tt.wantAckDeadlineSeconds)
			}
			if got, want := sub.GetTopic(), "projects/"+project+"/topics/"+cfg.TopicID; got != want {
				t.Errorf("topic = %q, want %q", got, want)
			}
		})
	}
}

// TestMissingTopicOnCloud: without an emulator, New must not create the
// topic (infrastructure owns it) and must say how to fix it.
func TestMissingTopicOnCloud(t *testing.T) {
	srv := newServer(t)
	_, err := gcppubsub.New(t.Context(), gcppubsub.Config{
		ProjectID:     project,
		TopicID:       "missing",
		ClientOptions: []option.ClientOption{option.WithGRPCConn(dial(t, srv.Addr))},
	})
	if err == nil || !strings.Contains(err.Error(), "pulumi up") {
		t.Fatalf("New with missing topic: %v, want an error that mentions `pulumi up`", err)
	}
	t.Logf("New: %v", err)
	if _, err := srv.GServer.GetTopic(t.Context(), &pubsubpb.GetTopicRequest{
		Topic: "projects/" + project + "/topics/missing",
	}); err == nil {
		t.Fatal("New created the topic on Google Cloud; only an emulator should get one")
	}
}

// TestExistingTopicOnCloud: without an emulator, an existing topic is used.
func TestExistingTopicOnCloud(t *testing.T) {
	srv := newServer(t)
	if _, err := srv.GServer.CreateTopic(t.Context(), &pubsubpb.Topic{Name: "projects/" + project + "/topics/alerts"}); err != nil {
		t.Fatal(err)
	}
	b := newBroker(t, gcppubsub.Config{
		ProjectID:     project,
		TopicID:       "alerts",
		ClientOptions: []option.ClientOption{option.WithGRPCConn(dial(t, srv.Addr))},
	})
	if err := b.CreateSubscription(t.Context(), "vm-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), broker.Message{Data: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("server holds %d messages, want 1", n)
	}
}

// TestUnreachable: with Pub/Sub gone, calls fail with errors that are not
// ErrNotFound (the caller must not recreate anything), Publish gives up,
// and Receive still stops when its ctx ends.
func TestUnreachable(t *testing.T) {
	srv := pstest.NewServer()
	b := newBroker(t, gcppubsub.Config{
		ProjectID:      project,
		TopicID:        "alerts",
		EmulatorHost:   srv.Addr,
		PublishTimeout: time.Second,
	})
	if err := b.CreateSubscription(t.Context(), "vm-1"); err != nil {
		t.Fatal(err)
	}
	srv.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	err := b.CheckSubscription(ctx, "vm-1")
	if err == nil || errors.Is(err, broker.ErrNotFound) {
		t.Errorf("CheckSubscription while unreachable: %v, want an error other than ErrNotFound", err)
	}
	t.Logf("CheckSubscription: %v", err)
	// A ctx shorter than PublishTimeout: Publish waits for the library to
	// give up, so that its error means the message will not be sent.
	pctx, pcancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer pcancel()
	err = b.Publish(pctx, broker.Message{Data: []byte("lost")})
	if err == nil {
		t.Error("Publish while unreachable: nil error, want one")
	}
	t.Logf("Publish: %v", err)

	rctx, rcancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer rcancel()
	done := make(chan error, 1)
	go func() { done <- b.Receive(rctx, "vm-1", func(broker.Message) {}) }()
	select {
	case err := <-done:
		t.Logf("Receive: %v", err)
		if err != nil && errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Receive while unreachable: %v, want nil or another error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Receive still running 30s after its ctx ended")
	}
}

// TestCredentialsJSON: the key is taken as raw JSON, and anything else
// fails New with an error that does not echo the key.
func TestCredentialsJSON(t *testing.T) {
	srv := newServer(t)
	key := serviceAccountKey(t)
	cfg := func(creds []byte) gcppubsub.Config {
		return gcppubsub.Config{
			ProjectID:       project,
			TopicID:         "alerts",
			CredentialsJSON: creds,
			// The in-process server takes no credentials; the key is still
			// parsed and checked by New.
			ClientOptions: []option.ClientOption{option.WithGRPCConn(dial(t, srv.Addr))},
		}
	}
	if _, err := srv.GServer.CreateTopic(t.Context(), &pubsubpb.Topic{Name: "projects/" + project + "/topics/alerts"}); err != nil {
		t.Fatal(err)
	}

	newBroker(t, cfg(key))

	encoded := []byte(base64.StdEncoding.EncodeToString(key))
	if _, err := gcppubsub.New(t.Context(), cfg(encoded)); err == nil {
		t.Error("New with base64 key: nil error, want one (the caller decodes)")
	} else if strings.Contains(err.Error(), string(encoded[:20])) {
		t.Errorf("error echoes the key: %v", err)
	}

	var user map[string]any
	if err := json.Unmarshal(key, &user); err != nil {
		t.Fatal(err)
	}
	user["type"] = "authorized_user"
	notSA, err := json.Marshal(user)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gcppubsub.New(t.Context(), cfg(notSA)); err == nil {
		t.Error("New with a non-service-account key: nil error, want one")
	}
}

func TestConfigRequired(t *testing.T) {
	for _, cfg := range []gcppubsub.Config{
		{TopicID: "alerts", EmulatorHost: "127.0.0.1:1"},
		{ProjectID: project, EmulatorHost: "127.0.0.1:1"},
		{ProjectID: project, TopicID: "alerts", EmulatorHost: "127.0.0.1:1", Streams: -1},
		{ProjectID: project, TopicID: "alerts", EmulatorHost: "127.0.0.1:1", Streams: gcppubsub.MaxStreams + 1},
	} {
		if _, err := gcppubsub.New(t.Context(), cfg); err == nil {
			t.Errorf("New(%+v): nil error, want one", cfg)
		}
	}
}

// TestStreams: Receive opens Config.Streams pull streams (DefaultStreams
// when zero), and a message published once arrives, and not a second time
// before Receive ends.
func TestStreams(t *testing.T) {
	srv := newServer(t)
	for _, tt := range []struct {
		streams, want int
	}{{0, gcppubsub.DefaultStreams}, {1, 1}, {3, 3}} {
		t.Run(fmt.Sprint(tt.streams), func(t *testing.T) {
			var opened atomic.Int32
			count := grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				if strings.HasSuffix(method, "/StreamingPull") {
					opened.Add(1)
				}
				return streamer(ctx, desc, cc, method, opts...)
			})
			topic := fmt.Sprintf("streams-%d", tt.streams)
			b := newBroker(t, gcppubsub.Config{ProjectID: project, TopicID: topic, EmulatorHost: srv.Addr,
				Streams: tt.streams, ClientOptions: []option.ClientOption{option.WithGRPCDialOption(count)}})
			if err := b.CreateSubscription(t.Context(), topic); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			got := make(chan string, 4)
			done := make(chan error, 1)
			go func() {
				done <- b.Receive(ctx, topic, func(m broker.Message) { got <- string(m.Data) })
			}()
			if err := b.Publish(t.Context(), broker.Message{Data: []byte("one")}); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-got:
				if m != "one" {
					t.Fatalf("received %q, want one", m)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("nothing received")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if n := int(opened.Load()); n != tt.want {
				t.Errorf("Receive opened %d pull streams, want %d", n, tt.want)
			}
			close(got)
			for m := range got {
				t.Errorf("received %q again", m)
			}
		})
	}
}

// TestNotFoundCode: only NotFound maps to broker.ErrNotFound; other server
// errors stay distinct so callers do not mistake an outage for a deletion.
func TestNotFoundCode(t *testing.T) {
	srv := pstest.NewServer(pstest.WithErrorInjection("GetSubscription", codes.PermissionDenied, "no"))
	t.Cleanup(func() { srv.Close() })
	b := newBroker(t, gcppubsub.Config{ProjectID: project, TopicID: "alerts", EmulatorHost: srv.Addr})
	err := b.CheckSubscription(t.Context(), "vm-1")
	if err == nil || errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("CheckSubscription with PermissionDenied: %v, want an error other than ErrNotFound", err)
	}
}

func newServer(t *testing.T) *pstest.Server {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	return srv
}

func newBroker(t *testing.T, cfg gcppubsub.Config) *gcppubsub.Broker {
	t.Helper()
	b, err := gcppubsub.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serviceAccountKey returns a syntactically real service-account key with a
// fresh RSA key, for a project that does not exist.
func serviceAccountKey(t *testing.T) []byte {
	t.Helper()
	pk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	key, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     project,
		"private_key_id": "0123456789abcdef",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "relay@" + project + ".iam.gserviceaccount.com",
		"client_id":      "1",
		"auth_uri":       "https://accounts.google.com/o/oauth2/auth",
		"token_uri":      "https://oauth2.googleapis.com/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestEmulatorRestartRecreatesTopic: an emulator that restarts forgets its
// topic along with everything else; the relay's feed recreates its
// subscription, and that must bring the topic back too.
func TestEmulatorRestartRecreatesTopic(t *testing.T) {
	srv := newServer(t)
	b := newBroker(t, gcppubsub.Config{ProjectID: project, TopicID: "restarted", EmulatorHost: srv.Addr})
	topic := "projects/" + project + "/topics/restarted"
	if _, err := srv.GServer.DeleteTopic(t.Context(), &pubsubpb.DeleteTopicRequest{Topic: topic}); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateSubscription(t.Context(), "vm-1"); err != nil {
		t.Fatalf("CreateSubscription after the topic vanished: %v", err)
	}
	if _, err := srv.GServer.GetTopic(t.Context(), &pubsubpb.GetTopicRequest{Topic: topic}); err != nil {
		t.Fatalf("topic not recreated: %v", err)
	}
	if err := b.CheckSubscription(t.Context(), "vm-1"); err != nil {
		t.Fatal(err)
	}
}
