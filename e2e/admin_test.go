//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// admin looks at the emulator from outside, with Pub/Sub's own admin API,
// to check what the relays made there.
type admin struct {
	c *pubsub.Client
}

// newAdmin connects an admin client to emu, closed when the test ends. It
// sets its options itself rather than PUBSUB_EMULATOR_HOST, because tests
// may use more than one emulator.
func newAdmin(t *testing.T, emu emulator) *admin {
	t.Helper()
	c, err := pubsub.NewClient(context.Background(), projectID,
		option.WithEndpoint(emu.Host()),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithTelemetryDisabled(),
	)
	if err != nil {
		t.Fatalf("admin client for %s: %v", emu.Host(), err)
	}
	t.Cleanup(func() { c.Close() })
	return &admin{c: c}
}

func subPath(name string) string   { return "projects/" + projectID + "/subscriptions/" + name }
func topicPath(name string) string { return "projects/" + projectID + "/topics/" + name }

// subscription returns the named subscription; an error with code NotFound
// if there is none.
func (a *admin) subscription(ctx context.Context, name string) (*pubsubpb.Subscription, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return a.c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: subPath(name)})
}

// topicExists reports whether the topic exists.
func (a *admin) topicExists(ctx context.Context, topic string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := a.c.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: topicPath(topic)})
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// topicSubscriptions lists the subscriptions on topic, by short name.
func (a *admin) topicSubscriptions(ctx context.Context, topic string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	it := a.c.TopicAdminClient.ListTopicSubscriptions(ctx, &pubsubpb.ListTopicSubscriptionsRequest{Topic: topicPath(topic)})
	var names []string
	for {
		name, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return names, nil
		}
		if err != nil {
			return names, fmt.Errorf("list subscriptions of %s: %w", topic, err)
		}
		names = append(names, name[strings.LastIndex(name, "/")+1:])
	}
}

// describe says in one line what the emulator holds for a topic, for
// failure messages.
func (a *admin) describe(ctx context.Context, topic string) string {
	exists, err := a.topicExists(ctx, topic)
	if err != nil {
		return fmt.Sprintf("topic %s: %v", topic, err)
	}
	if !exists {
		return fmt.Sprintf("topic %s does not exist", topic)
	}
	subs, err := a.topicSubscriptions(ctx, topic)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("topic %s exists with subscriptions %v", topic, subs)
}

func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }
