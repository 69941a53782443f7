//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// Generous bounds for things that must happen eventually. Nothing in this
// suite asserts speed: these only stop a broken relay from hanging it.
const (
	arrival = 60 * time.Second // an alert reaching every client
	settle  = 3 * time.Second  // quiet time in which a duplicate would show up
)

// TestCrossVMBroadcast proves the core promise: an alert sent on any VM
// reaches every client on every VM, the sender included, exactly once and
// with the same id, and the sender gets an ack with that id.
func TestCrossVMBroadcast(t *testing.T) {
	c := newCluster(t, sharedEmulator(t), 3)
	var clients []*testkit.Client
	for _, v := range c.vms {
		for i := range 2 {
			clients = append(clients, dial(t, v, fmt.Sprintf("client %d", i+1)))
		}
	}
	for i, v := range c.vms {
		sender := clients[2*i]
		a := broadcast(t, sender, clients, fmt.Sprintf("broadcast from %s %s", v.name, randomHex(4)))
		if a.Origin.VM != v.alloc || a.Origin.Region != v.region {
			t.Errorf("alert sent on %s: want origin {vm %s region %s}, got %s", v, v.alloc, v.region, a)
		}
		if _, err := time.Parse(time.RFC3339, a.SentAt); err != nil {
			t.Errorf("alert sent on %s: sent_at %q is not RFC 3339: %v", v, a.SentAt, err)
		}
	}
	time.Sleep(settle)
	exactlyOnce(t, clients)
}

// TestSubscriptionPerVM proves that each running VM owns one subscription
// on the topic, named ID_<FLY_ALLOC_ID>, with the one-day expiration policy
// that cleans up after a crash.
func TestSubscriptionPerVM(t *testing.T) {
	emu := sharedEmulator(t)
	c := newCluster(t, emu, 3)
	adm := newAdmin(t, emu)
	ctx := context.Background()

	var want []string
	for _, v := range c.vms {
		want = append(want, v.subscription())
	}
	got, err := adm.topicSubscriptions(ctx, c.topic)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("subscriptions on topic %s: want one per VM %v, got %v", c.topic, want, got)
	}
	for _, v := range c.vms {
		sub, err := adm.subscription(ctx, v.subscription())
		if err != nil {
			t.Errorf("%s: subscription %s: %v", v, v.subscription(), err)
			continue
		}
		if sub.GetTopic() != topicPath(c.topic) {
			t.Errorf("%s: subscription %s is on %s, want %s", v, v.subscription(), sub.GetTopic(), topicPath(c.topic))
		}
		checkExpiration(t, v, sub.GetExpirationPolicy().GetTtl().AsDuration())
	}
}

// checkExpiration wants the one-day expiration policy of the contract.
func checkExpiration(t *testing.T, v *vm, ttl time.Duration) {
	t.Helper()
	if ttl != 24*time.Hour {
		t.Errorf("%s: subscription %s: want expiration policy ttl 24h (a crashed VM's subscription goes away), got %v",
			v, v.subscription(), ttl)
	}
}

// TestManyAlerts sends hundreds of alerts from clients spread over every
// VM, each client pacing itself under the per-connection rate limit, and
// proves every client receives every alert exactly once.
func TestManyAlerts(t *testing.T) {
	const (
		perVM     = 8                      // clients on each VM
		perClient = 12                     // alerts each client sends
		pace      = 300 * time.Millisecond // about 3 a second: under the 5/s limit
	)
	c := newCluster(t, sharedEmulator(t), 3)
	var clients []*testkit.Client
	for _, v := range c.vms {
		for i := range perVM {
			clients = append(clients, dial(t, v, fmt.Sprintf("client %d", i+1)))
		}
	}
	total := len(clients) * perClient
	t.Logf("%d clients on %d VMs send %d alerts", len(clients), len(c.vms), total)

	// Every client sends its share at once, paced; the ids come from the
	// acks, which the relay sends only once the broker has the alert.
	var (
		mu  sync.Mutex
		ids = make(map[string]string) // id -> text
		wg  sync.WaitGroup
	)
	run := randomHex(3)
	for ci, cl := range clients {
		wg.Go(func() {
			for n := range perClient {
				nonce := fmt.Sprintf("c%d-n%d", ci, n)
				text := fmt.Sprintf("load %s %s", run, nonce)
				if err := cl.Send(testkit.NewAlertRequest(text, nonce)); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(pace)
			}
			for n := range perClient {
				nonce := fmt.Sprintf("c%d-n%d", ci, n)
				f, err := cl.WaitFrame(arrival, "the answer to "+nonce, testkit.AnswerTo(nonce))
				if err != nil {
					t.Error(err)
					return
				}
				if f.Type != "ack" {
					t.Errorf("%s: alert %s: want ack, got %s", cl, nonce, f)
					continue
				}
				mu.Lock()
				ids[f.ID] = fmt.Sprintf("load %s %s", run, nonce)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(ids) != total {
		t.Fatalf("want %d distinct alert ids in the acks, got %d", total, len(ids))
	}

	// Every client gets every alert, eventually.
	deadline := time.Now().Add(3 * arrival)
	for _, cl := range clients {
		for {
			counts := cl.AlertCounts()
			missing := 0
			for id := range ids {
				if counts[id] == 0 {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %d of %d alerts never arrived", cl, missing, total)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	time.Sleep(settle)
	exactlyOnce(t, clients)
	// Texts and ids agree on every client.
	for _, cl := range clients {
		frames, _, _ := cl.Snapshot()
		for _, f := range frames {
			if f.Type == "alert" && ids[f.ID] != "" && ids[f.ID] != f.Text {
				t.Errorf("%s: alert %s has text %q, the sender's ack says %q", cl, f.ID, f.Text, ids[f.ID])
			}
		}
	}
}

// broadcast sends an alert from sender and checks that every client in all
// receives it with the same id, and that the sender gets an ack with that
// id. It returns the alert as the sender saw it.
func broadcast(t *testing.T, sender *testkit.Client, all []*testkit.Client, text string) testkit.Frame {
	t.Helper()
	nonce := "n-" + randomHex(4)
	sender.SendAlert(t, text, nonce)
	ack := sender.MustFrame(t, arrival, "the ack of "+nonce, testkit.AnswerTo(nonce))
	if ack.Type != "ack" {
		t.Fatalf("%s: alert %q: want ack, got %s", sender, text, ack)
	}
	if ack.ID == "" {
		t.Fatalf("%s: ack without id: %s", sender, ack)
	}
	var first testkit.Frame
	for _, cl := range all {
		f, err := cl.WaitFrame(arrival, fmt.Sprintf("alert %q sent by %s", text, sender), testkit.IsAlertText(text))
		if err != nil {
			t.Error(err)
			continue
		}
		if f.ID != ack.ID {
			t.Errorf("%s: alert %q has id %s, the sender's ack says %s", cl, text, f.ID, ack.ID)
		}
		if cl == sender {
			first = f
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return first
}

// exactlyOnce fails the test for every alert a client received twice.
func exactlyOnce(t *testing.T, clients []*testkit.Client) {
	t.Helper()
	for _, cl := range clients {
		for id, n := range cl.AlertCounts() {
			if n != 1 {
				t.Errorf("%s: alert %s arrived %d times, want exactly once", cl, id, n)
			}
		}
	}
}
