package gcppubsub

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/pubsub/v2"
	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skywatch-dev/skywatch/internal/broker"
)

var (
	_ broker.Broker = (*Broker)(nil)
	_ broker.Lister = (*Broker)(nil)
)

// Defaults for the zero values of Config.
const (
	// DefaultSubscriptionExpiration is also the smallest expiration Pub/Sub
	// accepts (one day).
	DefaultSubscriptionExpiration = 24 * time.Hour
	// DefaultMessageRetention is the smallest retention Pub/Sub accepts
	// (ten minutes): alerts older than that are not worth delivering.
	DefaultMessageRetention = 10 * time.Minute
	// DefaultAckDeadline is the smallest ack deadline Pub/Sub accepts; the
	// client library extends it while a handler runs.
	DefaultAckDeadline = 10 * time.Second
	// DefaultStreams is how many StreamingPull streams one Receive opens.
	// The emulator answers each stream on a 50 ms tick of its own, so one
	// stream makes an alert wait up to 50 ms there. With four, the relays'
	// median latency at 50 alerts/s fell by a third and p99 a little, for
	// about a third more CPU per delivery, as alerts come a few at a time
	// (docs/performance.md). Google Cloud pushes each message as it comes,
	// so there the three more streams only stand by; the client library's
	// v1 opened ten by default.
	DefaultStreams = 4
	// MaxStreams bounds Config.Streams: the library warns that many
	// streams pull badly, and a relay receives one topic's alerts.
	MaxStreams = 16
)

// receiveShutdownTimeout bounds how long Receive waits, once its ctx is
// done, for running handlers before it returns anyway. Handlers are meant
// to be quick (the relay's fan-out never blocks), so this is a safety net.
const receiveShutdownTimeout = 5 * time.Second

// reconnect is how the client's gRPC connections retry after losing
// Pub/Sub. gRPC's default waits up to 120 s between attempts, growing 1.6×
// from 1 s: after an outage of 40 s the publisher's connections (apart from
// the subscriber's, and used only by publishes) came back 25 s after Pub/Sub
// did, so a relay reported ready while every alert failed. Capped at 2 s, a
// connection is back within 2 s; an attempt costs one TCP (and TLS)
// handshake per connection, a handful per VM.
var reconnect = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  250 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   2 * time.Second,
	},
	MinConnectTimeout: 5 * time.Second,
}

// Config configures a Broker. Zero values mean the defaults above.
type Config struct {
	// ProjectID is the Google Cloud project. Required.
	ProjectID string
	// TopicID is the topic's ID within the project (not its full name).
	// Required.
	TopicID string

	// EmulatorHost, if set, is the host:port of a Pub/Sub emulator, reached
	// without TLS or credentials. New then creates the topic if it is
	// missing, since an emulator starts empty. CredentialsJSON is ignored.
	EmulatorHost string

	// CredentialsJSON is a service-account key (the raw JSON, not base64).
	// It is kept in memory only, never logged or written to disk. If empty
	// (and there is no emulator), Application Default Credentials are used.
	CredentialsJSON []byte

	// Credentials, if set, are used instead of CredentialsJSON: the relay
	// passes Fly's keyless workload identity credentials (internal/flyoidc)
	// or a key already parsed with KeyCredentials.
	Credentials *auth.Credentials

	// ClientOptions are appended last to the client's options, so they win;
	// tests pass option.WithGRPCConn to reach an in-process pstest server.
	ClientOptions []option.ClientOption

	// SubscriptionExpiration deletes a subscription nobody has received
	// from for this long, so one left behind by a crashed VM goes away.
	// Pub/Sub's minimum is one day.
	SubscriptionExpiration time.Duration
	// MessageRetention is how long a subscription keeps undelivered
	// messages. Pub/Sub accepts 10 minutes to 7 days.
	MessageRetention time.Duration
	// AckDeadline is the subscriptions' ack deadline, 10s to 600s.
	AckDeadline time.Duration
	// PublishTimeout is how long the client library tries to send one
	// message, retries included, and so the longest Publish takes. The
	// library sends batches on its own context, so it needs the caller's
	// publish deadline up front: set it to the deadline the caller puts on
	// Publish's ctx (the relay passes the hub's). Zero keeps the library's
	// default (60 s).
	PublishTimeout time.Duration
	// Streams is how many StreamingPull streams each Receive opens, 1 to
	// MaxStreams; zero means DefaultStreams.
	Streams int
}

// Broker is a Pub/Sub topic with subscriptions on it. Create it with New and
// Close it when done.
//
// Receive calls handle from several goroutines at once (the client
// library's default; up to 1000 messages outstanding) and acknowledges a
// message when handle returns.
type Broker struct {
	client    *pubsub.Client
	publisher *pubsub.Publisher
	project   string
	topic     string // full name: projects/P/topics/T
	emulator  bool

	expiration  time.Duration
	retention   time.Duration
	ackDeadline time.Duration
	streams     int
}

// New connects to Pub/Sub and checks that the topic exists. Against Google
// Cloud a missing topic is an error (it belongs to `pulumi up`); against an
// emulator New creates it. ctx bounds only the connection and that check.
func New(ctx context.Context, cfg Config) (*Broker, error) {
	if cfg.ProjectID == "" {
		return nil, errors.New("gcppubsub: missing project ID")
	}
	if cfg.TopicID == "" {
		return nil, errors.New("gcppubsub: missing topic ID")
	}
	b := &Broker{
		project:     cfg.ProjectID,
		topic:       fmt.Sprintf("projects/%s/topics/%s", cfg.ProjectID, cfg.TopicID),
		expiration:  orDefault(cfg.SubscriptionExpiration, DefaultSubscriptionExpiration),
		retention:   orDefault(cfg.MessageRetention, DefaultMessageRetention),
		ackDeadline: orDefault(cfg.AckDeadline, DefaultAckDeadline),
		streams:     cmp.Or(cfg.Streams, DefaultStreams),
		emulator:    cfg.EmulatorHost != "",
	}
	if b.streams < 1 || b.streams > MaxStreams {
		return nil, fmt.Errorf("gcppubsub: %d streams: want 1 to %d", cfg.Streams, MaxStreams)
	}

	opts := []option.ClientOption{option.WithGRPCDialOption(grpc.WithConnectParams(reconnect))}
	switch {
	case cfg.EmulatorHost != "":
		// What the client library does for PUBSUB_EMULATOR_HOST, without
		// reading the environment.
		opts = append(opts,
			option.WithEndpoint(cfg.EmulatorHost),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
			option.WithoutAuthentication(),
			option.WithTelemetryDisabled(),
		)
	case cfg.Credentials != nil:
		opts = append(opts, option.WithAuthCredentials(cfg.Credentials))
	case len(cfg.CredentialsJSON) > 0:
		creds, err := KeyCredentials(cfg.CredentialsJSON)
		if err != nil {
			return nil, fmt.Errorf("gcppubsub: %w", err)
		}
		opts = append(opts, option.WithAuthCredentials(creds))
	}
	opts = append(opts, cfg.ClientOptions...)

	client, err := pubsub.NewClient(ctx, cfg.ProjectID, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcppubsub: new client: %w", err)
	}
	b.client = client
	if err := b.ensureTopic(ctx); err != nil {
		client.Close()
		return nil, err
	}

	b.publisher = client.Publisher(b.topic)
	// The library sends a batch on its own context (not the caller's),
	// retrying until this timeout; bounding it bounds Publish and
	// guarantees that a message is never sent after Publish gave up.
	if cfg.PublishTimeout > 0 {
		b.publisher.PublishSettings.Timeout = cfg.PublishTimeout
	}
	// An alert is one message a person is waiting to see: hold a batch 1 ms,
	// not the library's 10 ms. Measured with `make load` on the emulator
	// (docs/performance.md): p50 8–20 ms lower at 20–100 alerts/s, with no
	// more relay CPU. Smaller batches mean more publish requests, each billed
	// as at least 1000 bytes, which matters only at rates far above today's.
	b.publisher.PublishSettings.DelayThreshold = time.Millisecond
	return b, nil
}

// KeyCredentials parses a service-account key (raw JSON) into credentials
// for Pub/Sub. The type is pinned to a service account, so a key of another
// type (which could make the library fetch URLs named in it) is refused.
// Parsing makes no call, so a bad key fails here, at start, rather than at
// the first call; errors never quote the key.
func KeyCredentials(key []byte) (*auth.Credentials, error) {
	// The library reads the private key only when it first signs, so a
	// truncated or mangled key would pass here and fail every call later,
	// on the retry path. Check it now.
	var probe struct {
		Email      string `json:"client_email"`
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(key, &probe); err != nil {
		return nil, errors.New("credentials: key is not JSON")
	}
	if probe.Email == "" {
		return nil, errors.New("credentials: key has no client_email")
	}
	block, _ := pem.Decode([]byte(probe.PrivateKey))
	if block == nil {
		return nil, errors.New("credentials: key's private_key is not PEM")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if _, err1 := x509.ParsePKCS1PrivateKey(block.Bytes); err1 != nil {
			return nil, errors.New("credentials: key's private_key does not parse as PKCS#8 or PKCS#1")
		}
	}
	creds, err := credentials.NewCredentialsFromJSON(credentials.ServiceAccount, key, &credentials.DetectOptions{
		Scopes: vkit.DefaultAuthScopes(),
	})
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	return creds, nil
}

// Scopes are the OAuth scopes the Pub/Sub client asks for, for credentials
// made elsewhere (internal/flyoidc).
func Scopes() []string { return vkit.DefaultAuthScopes() }

func (b *Broker) ensureTopic(ctx context.Context) error {
	_, err := b.client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: b.topic})
	switch {
	case err == nil:
		return nil
	case status.Code(err) != codes.NotFound:
		return fmt.Errorf("gcppubsub: get topic %s: %w", b.topic, err)
	case !b.emulator:
		return &missingTopicError{topic: b.topic}
	}
	_, err = b.client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: b.topic})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("gcppubsub: create topic %s on emulator: %w", b.topic, err)
	}
	return nil
}

// missingTopicError is New's error for a topic missing on Google Cloud,
// where the relay never creates it.
type missingTopicError struct{ topic string }

func (e *missingTopicError) Error() string {
	return fmt.Sprintf("gcppubsub: topic %s does not exist: create it with `pulumi up`", e.topic)
}

// Close stops the publisher, sending what it still holds, and closes the
// client. Receive calls should have returned first.
func (b *Broker) Close() error {
	b.publisher.Stop()
	if err := b.client.Close(); err != nil {
		return fmt.Errorf("gcppubsub: close: %w", err)
	}
	return nil
}

// Publish sends m and returns once Pub/Sub has accepted it. If ctx ends
// first, Publish still waits (up to PublishTimeout after the batch left) for
// the library's verdict, so that an error really means the message was not sent: it
// returns nil if the message was accepted after all.
func (b *Broker) Publish(ctx context.Context, m broker.Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if len(m.Data) == 0 {
		// Checked here because only Google Cloud refuses it; pstest would
		// accept it and hide the bug.
		return errors.New("publish: empty message")
	}
	// The library holds on to the message until the batch is sent.
	res := b.publisher.Publish(ctx, &pubsub.Message{Data: bytes.Clone(m.Data), Attributes: maps.Clone(m.Attributes)})
	// The result is always ready within the batch's own deadline
	// (PublishTimeout), whatever ctx does: waiting for it is bounded.
	<-res.Ready()
	if _, err := res.Get(context.Background()); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// CreateSubscription makes the named subscription (an ID, not a full name)
// with the configured expiration, retention and ack deadline. If it already
// exists it is deleted and made again: that drops its stale backlog and
// applies the current settings. Deleting and recreating works the same on
// Google Cloud, the official emulator and pstest, unlike Seek (pstest's
// Seek is incomplete). A Receive running on the old subscription ends
// (official emulator) or stays on the old one (pstest).
func (b *Broker) CreateSubscription(ctx context.Context, name string) error {
	sub := &pubsubpb.Subscription{
		Name:                     b.subName(name),
		Topic:                    b.topic,
		AckDeadlineSeconds:       int32(b.ackDeadline / time.Second),
		MessageRetentionDuration: durationpb.New(b.retention),
		ExpirationPolicy:         &pubsubpb.ExpirationPolicy{Ttl: durationpb.New(b.expiration)},
	}
	admin := b.client.SubscriptionAdminClient
	_, err := admin.CreateSubscription(ctx, sub)
	if status.Code(err) == codes.NotFound && b.emulator {
		// The topic is gone: an emulator that restarted forgets everything.
		// Make it again, as New did, so the relays recover on their own.
		if err := b.ensureTopic(ctx); err != nil {
			return fmt.Errorf("create subscription %s: %w", name, err)
		}
		_, err = admin.CreateSubscription(ctx, sub)
	}
	if status.Code(err) != codes.AlreadyExists {
		if err != nil {
			return fmt.Errorf("create subscription %s: %w", name, err)
		}
		return nil
	}

	err = admin.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: sub.Name})
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("create subscription %s: delete stale: %w", name, err)
	}
	// Google Cloud may briefly still report the deleted name as taken.
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		_, err = admin.CreateSubscription(ctx, sub)
		if status.Code(err) != codes.AlreadyExists {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create subscription %s: recreate: %w", name, err)
		case <-time.After(wait):
		}
	}
	if err != nil {
		return fmt.Errorf("create subscription %s: recreate: %w", name, err)
	}
	return nil
}

// CheckSubscription asks Pub/Sub whether the named subscription exists.
func (b *Broker) CheckSubscription(ctx context.Context, name string) error {
	_, err := b.client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{
		Subscription: b.subName(name),
	})
	switch {
	case err == nil:
		return nil
	case status.Code(err) == codes.NotFound:
		return fmt.Errorf("check subscription %s: %w", name, broker.ErrNotFound)
	default:
		return fmt.Errorf("check subscription %s: pubsub unreachable: %w", name, err)
	}
}

// DeleteSubscription deletes the named subscription; a missing one is fine.
func (b *Broker) DeleteSubscription(ctx context.Context, name string) error {
	err := b.client.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{
		Subscription: b.subName(name),
	})
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("delete subscription %s: %w", name, err)
	}
	return nil
}

// Receive pulls from the named subscription until ctx is done. handle may
// run on several goroutines at once; each message is acknowledged when
// handle returns. A missing subscription ends Receive with an error wrapping
// broker.ErrNotFound; one deleted while Receive runs ends it that way on
// Google Cloud and the official emulator, but not on pstest.
func (b *Broker) Receive(ctx context.Context, name string, handle func(m broker.Message)) error {
	if ctx.Err() != nil {
		return nil
	}
	sub := b.client.Subscriber(b.subName(name))
	sub.ReceiveSettings.NumGoroutines = b.streams // streams, in v2
	// A timed shutdown stops the pull streams at once when ctx ends, instead
	// of waiting on them (and on final acks, which can hang while Pub/Sub is
	// unreachable); unacked messages are simply redelivered.
	sub.ReceiveSettings.ShutdownOptions = &pubsub.ShutdownOptions{
		Behavior: pubsub.ShutdownBehaviorWaitForProcessing,
		Timeout:  receiveShutdownTimeout,
	}
	err := sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		handle(broker.Message{Data: m.Data, Attributes: m.Attributes})
		m.Ack()
	})
	switch {
	case err == nil:
		return nil
	case status.Code(err) == codes.NotFound:
		return fmt.Errorf("receive %s: %w", name, broker.ErrNotFound)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return nil
	default:
		return fmt.Errorf("receive %s: %w", name, err)
	}
}

// ListSubscriptions returns the IDs of the subscriptions attached to the
// topic (ListTopicSubscriptions; IAM checks pubsub.topics.get on the topic).
// Subscriptions of this topic made in other projects are listed too; their
// IDs come back as "projects/P/subscriptions/ID" so that nobody mistakes
// them for this project's.
func (b *Broker) ListSubscriptions(ctx context.Context) ([]string, error) {
	it := b.client.TopicAdminClient.ListTopicSubscriptions(ctx, &pubsubpb.ListTopicSubscriptionsRequest{Topic: b.topic})
	prefix := b.subName("")
	var ids []string
	for {
		name, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return ids, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list subscriptions of %s: %w", b.topic, err)
		}
		if id, ok := strings.CutPrefix(name, prefix); ok {
			name = id
		}
		ids = append(ids, name)
	}
}

func (b *Broker) subName(id string) string {
	return fmt.Sprintf("projects/%s/subscriptions/%s", b.project, id)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
