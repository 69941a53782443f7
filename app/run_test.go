package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// These tests run whole relays through run, as main does, on port 0: three
// "VMs" with their own alloc ids on one in-process Pub/Sub server (pstest,
// reached the way the official emulator is, through PUBSUB_EMULATOR_HOST),
// with real WebSocket clients from the test kit.

const testProject = "skywatch-test"

// vm is a relay run in-process through run.
type vm struct {
	id string
	testkit.Endpoint
	logs *testkit.SyncBuffer
	stop context.CancelFunc
	done chan error
}

// listeningRE finds the line a VM logs once it listens: its id and port.
var listeningRE = regexp.MustCompile(`msg=listening vm=(\S+) .*?addr=\S*:(\d+)`)

// startVM runs a relay with env on port 0 and waits until it serves.
func startVM(t *testing.T, env map[string]string) *vm {
	t.Helper()
	env[names.EnvPort] = "0"
	ctx, cancel := context.WithCancel(context.Background())
	v := &vm{id: env[names.EnvAllocID], logs: &testkit.SyncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() { v.done <- run(ctx, []string{"skywatch"}, func(k string) string { return env[k] }, nil, v.logs) }()
	t.Cleanup(func() {
		v.stop()
		<-v.done
		if t.Failed() {
			t.Logf("logs of VM %s:\n%s", v.id, v.logs)
		}
	})
	deadline := time.Now().Add(testkit.Wait)
	for {
		if m := listeningRE.FindStringSubmatch(v.logs.String()); m != nil {
			v.Endpoint = testkit.Endpoint("127.0.0.1:" + m[2])
			return v
		}
		select {
		case err := <-v.done:
			t.Fatalf("VM %s exited at start: %v\n%s", v.id, err, v.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("VM %s never listened:\n%s", v.id, v.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// shutdown stops the VM as a signal would and returns run's result.
func (v *vm) shutdown(t *testing.T) error {
	t.Helper()
	v.stop()
	select {
	case err := <-v.done:
		v.done <- err // for the cleanup
		return err
	case <-time.After(testkit.Wait):
		t.Fatalf("VM %s did not shut down", v.id)
		return nil
	}
}

// status returns the HTTP status of GET path, failing the test without one.
func (v *vm) status(t *testing.T, path string) int {
	t.Helper()
	code, err := v.Status(path)
	if err != nil {
		t.Fatalf("VM %s GET %s: %v", v.id, path, err)
	}
	return code
}

func (v *vm) waitReady(t *testing.T) {
	t.Helper()
	if err := v.WaitStatus("/readyz", http.StatusOK, testkit.Wait, nil); err != nil {
		t.Fatalf("VM %s never became ready: %v\n%s", v.id, err, v.logs)
	}
}

// dial connects a client to v and checks that its hello names v.
func dial(t *testing.T, v *vm, name string) *testkit.Client {
	t.Helper()
	c := testkit.MustDial(t, v.WS(""), nil, name)
	if v.id != "" && c.Hello.VM != v.id {
		t.Fatalf("%s: hello %s, want VM %s", name, c.Hello, v.id)
	}
	return c
}

func newPubSub(t *testing.T) *pstest.Server {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	return srv
}

func emulatorEnv(srv *pstest.Server, alloc, region string) map[string]string {
	return map[string]string{
		names.EnvAllocID:      alloc,
		names.EnvRegion:       region,
		names.EnvProject:      testProject,
		names.EnvEmulatorHost: srv.Addr,
	}
}

// subscriptionPath is the full name of a VM's subscription on pstest.
func subscriptionPath(alloc string) string {
	return "projects/" + testProject + "/subscriptions/" + names.Subscription(names.DefaultSubscriptionPrefix, alloc)
}

// threeVMs starts three relays on one Pub/Sub, waits until all receive,
// and connects two clients to each.
func threeVMs(t *testing.T, srv *pstest.Server) ([]*vm, [][]*testkit.Client) {
	t.Helper()
	regions := []string{"ams", "iad", "syd"}
	vms := make([]*vm, 3)
	clients := make([][]*testkit.Client, 3)
	for i := range vms {
		vms[i] = startVM(t, emulatorEnv(srv, fmt.Sprintf("vm%d", i+1), regions[i]))
	}
	for i, v := range vms {
		v.waitReady(t)
		for j := range 2 {
			clients[i] = append(clients[i], dial(t, v, fmt.Sprintf("client %d on VM %s", j+1, v.id)))
		}
	}
	return vms, clients
}

// ack sends an alert from c and returns the id of its ack.
func ack(t *testing.T, c *testkit.Client, text, nonce string) string {
	t.Helper()
	f := c.MustAnswer(t, text, nonce)
	if f.Type != protocol.TypeAck || f.ID == "" {
		t.Fatalf("%s: answer %s, want an ack", c, f)
	}
	return f.ID
}

func TestThreeVMsBroadcastExactlyOnce(t *testing.T) {
	srv := newPubSub(t)
	vms, clients := threeVMs(t, srv)

	// One alert from a client on each VM.
	var want []string
	for i, cs := range clients {
		sender := cs[0]
		nonce := fmt.Sprintf("n%d", i)
		if err := sender.Send(map[string]any{"type": "alert", "text": "landing at VM " + vms[i].id, "nonce": nonce,
			// Forged fields: the server must stamp its own.
			"id": "forged", "origin": map[string]string{"vm": "evil"}, "sent_at": "1999-01-01T00:00:00Z"}); err != nil {
			t.Fatal(err)
		}
		a := sender.MustFrame(t, testkit.Wait, "ack "+nonce, testkit.AnswerTo(nonce))
		if a.Type != protocol.TypeAck || a.ID == "" || a.ID == "forged" {
			t.Fatalf("%s: answer %s, want an ack with a server id", sender, a)
		}
		want = append(want, a.ID)
	}
	// A marker alert sent last: once every client has it, a redelivered
	// duplicate of an earlier one would have shown up.
	want = append(want, ack(t, clients[2][1], "marker", "m"))
	for _, cs := range clients {
		for _, c := range cs {
			for id, f := range c.ExpectAlerts(t, testkit.Wait, want, nil) {
				if f.Origin.VM == "evil" || f.SentAt == "1999-01-01T00:00:00Z" {
					t.Errorf("%s: alert %s carries forged fields: %s", c, id, f)
				}
				if _, err := time.Parse(time.RFC3339, f.SentAt); err != nil {
					t.Errorf("%s: sent_at %q: %v", c, f.SentAt, err)
				}
			}
		}
	}
}

func TestSubscriptionsHaveExpiryAndGoAwayOnShutdown(t *testing.T) {
	srv := newPubSub(t)
	vms, clients := threeVMs(t, srv)
	admin := &srv.GServer // the pstest server implements the admin API

	for _, v := range vms {
		sub, err := admin.GetSubscription(t.Context(), &pubsubpb.GetSubscriptionRequest{Subscription: subscriptionPath(v.id)})
		if err != nil {
			t.Fatalf("subscription of VM %s: %v", v.id, err)
		}
		if ttl := sub.GetExpirationPolicy().GetTtl().AsDuration(); ttl != 24*time.Hour {
			t.Errorf("VM %s subscription expiration ttl = %v, want 24h", v.id, ttl)
		}
		if !strings.HasSuffix(sub.GetTopic(), "/topics/"+names.DefaultTopic) {
			t.Errorf("VM %s subscription topic = %q", v.id, sub.GetTopic())
		}
	}

	// Stop VM 1 as SIGTERM would.
	if err := vms[0].shutdown(t); err != nil {
		t.Fatalf("VM %s shutdown: %v, want nil (exit status 0)", vms[0].id, err)
	}
	for _, c := range clients[0] {
		c.ExpectClose(t, testkit.Wait, websocket.CloseServiceRestart, "the VM shut down")
	}
	if _, err := admin.GetSubscription(t.Context(), &pubsubpb.GetSubscriptionRequest{Subscription: subscriptionPath(vms[0].id)}); err == nil {
		t.Errorf("subscription of stopped VM %s still exists", vms[0].id)
	}

	// The others carry on.
	id := ack(t, clients[1][0], "still here", "s")
	for _, cs := range clients[1:] {
		for _, c := range cs {
			c.ExpectAlerts(t, testkit.Wait, []string{id}, nil)
		}
	}
}

func TestBadInputGetsDocumentedAnswers(t *testing.T) {
	srv := newPubSub(t)
	v := startVM(t, emulatorEnv(srv, "vm1", "ams"))
	v.waitReady(t)
	bystander := dial(t, v, "bystander")

	t.Run("errors that keep the connection", func(t *testing.T) {
		c := dial(t, v, "sender")
		for _, tc := range testkit.BadFrames {
			from := c.Mark()
			if err := c.SendRaw(websocket.TextMessage, []byte(tc.Frame)); err != nil {
				t.Fatal(err)
			}
			f, err := c.WaitFrameFrom(from, testkit.Wait, "the error for "+tc.Name, testkit.IsType(protocol.TypeError))
			if err != nil {
				t.Fatal(err)
			}
			if f.Code != tc.Code || f.Nonce != tc.Nonce || f.Message == "" {
				t.Errorf("%s: got %s, want error %q with nonce %q and a message", tc.Name, f, tc.Code, tc.Nonce)
			}
		}
		// Still usable: a good alert is acked once the bucket, which bad
		// frames drain too, has refilled.
		deadline := time.Now().Add(testkit.Wait)
		for i := 0; ; i++ {
			f := c.MustAnswer(t, "", fmt.Sprint("ok-", i))
			if f.Type == protocol.TypeAck {
				break
			}
			if f.Code != protocol.CodeRateLimited || time.Now().After(deadline) {
				t.Fatalf("after bad frames: %s, want an ack once the bucket refills", f)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("flood is rate limited and nothing over the limit is published", func(t *testing.T) {
		c := dial(t, v, "flooder")
		const n = 100
		for i := range n {
			c.SendAlert(t, "flood", fmt.Sprint(i))
		}
		acked, limited := 0, 0
		for i := range n {
			switch f := c.MustFrame(t, testkit.Wait, "answer", testkit.AnswerTo(fmt.Sprint(i))); {
			case f.Type == protocol.TypeAck:
				acked++
			case f.Code == protocol.CodeRateLimited:
				limited++
			default:
				t.Fatalf("flood: unexpected answer %s", f)
			}
		}
		if limited == 0 || acked == 0 {
			t.Fatalf("flood of %d: %d acked, %d rate_limited; want both", n, acked, limited)
		}
		t.Logf("flood of %d: %d acked, %d rate_limited", n, acked, limited)
	})

	t.Run("binary frame closes with 1003", func(t *testing.T) {
		c := dial(t, v, "binary")
		if err := c.SendRaw(websocket.BinaryMessage, []byte{0xde, 0xad}); err != nil {
			t.Fatal(err)
		}
		c.ExpectClose(t, testkit.Wait, protocol.CloseBinary, "binary frames are not part of the protocol")
	})

	t.Run("oversize frame closes with 1009", func(t *testing.T) {
		c := dial(t, v, "oversize")
		// The server may close before the whole frame is written.
		_ = c.SendRaw(websocket.TextMessage, []byte(testkit.OversizeFrame))
		c.ExpectClose(t, testkit.Wait, protocol.CloseTooBig, "a frame over the read limit")
	})

	// The VM is up, and the bystander saw the good alerts, nothing else.
	if code := v.status(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d after bad input", code)
	}
	id := ack(t, bystander, "still up", "b")
	bystander.MustFrame(t, testkit.Wait, "the bystander's own alert", testkit.IsAlertID(id))
	for _, f := range bystander.Frames() {
		if f.Type == protocol.TypeAlert && f.Text != "flood" && f.Text != protocol.DefaultText && f.ID != id {
			t.Errorf("bystander got an alert nobody sent: %s", f)
		}
	}
}

func TestEmbeddedBrokerByDefault(t *testing.T) {
	v := startVM(t, map[string]string{})
	if !strings.Contains(v.logs.String(), "embedded in-memory broker") {
		t.Errorf("no log line says the embedded broker is in use:\n%s", v.logs)
	}
	v.waitReady(t)
	a, b := dial(t, v, "a"), dial(t, v, "b")
	id := ack(t, a, "", "x")
	for _, c := range []*testkit.Client{a, b} {
		f := c.ExpectAlerts(t, testkit.Wait, []string{id}, nil)[id]
		if f.Text != protocol.DefaultText || f.Origin.Region != "local" || f.Origin.VM != a.Hello.VM {
			t.Errorf("%s: alert %s, want default text from this VM in region local", c, f)
		}
	}
	// The page and the probes are served.
	for path, want := range map[string]int{"/": 200, "/healthz": 200, "/readyz": 200, "/metrics": 200, "/nope": 404} {
		if got := v.status(t, path); got != want {
			t.Errorf("GET %s = %d, want %d", path, got, want)
		}
	}
	body, err := v.Get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"skywatch_connections", "skywatch_alerts_published_total", "go_goroutines"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if err := v.shutdown(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestDevRunsThreeVMsOnOneBroker(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testkit.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"skywatch", "-dev", "-dev-ports", "0,0,0"}, func(string) string { return "" }, strings.NewReader(""), logs)
	}()
	t.Cleanup(func() { cancel(); <-done })

	var vms []*vm
	testkit.Eventually(t, "three dev relays listening", func() bool {
		ms := listeningRE.FindAllStringSubmatch(logs.String(), -1)
		if len(ms) != 3 {
			return false
		}
		for _, m := range ms {
			vms = append(vms, &vm{id: m[1], Endpoint: testkit.Endpoint("127.0.0.1:" + m[2]), logs: logs})
		}
		return true
	})
	ids := map[string]bool{}
	for _, v := range vms {
		ids[v.id] = true
	}
	if !ids["dev-1"] || !ids["dev-2"] || !ids["dev-3"] {
		t.Fatalf("dev VMs are %v, want dev-1, dev-2 and dev-3", ids)
	}
	var clients []*testkit.Client
	for _, v := range vms {
		v.waitReady(t)
		clients = append(clients, dial(t, v, "client on "+v.id))
	}
	id := ack(t, clients[0], "", "d")
	for _, c := range clients {
		c.ExpectAlerts(t, testkit.Wait, []string{id}, nil)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("dev shutdown: %v", err)
	}
	done <- nil
}

func TestSecretsStayOutOfLogs(t *testing.T) {
	srv := newPubSub(t)
	e := emulatorEnv(srv, "vm1", "ams")
	e[names.EnvServiceAccountKey] = base64.StdEncoding.EncodeToString([]byte(fakeKey))
	v := startVM(t, e)
	v.waitReady(t)
	if err := v.shutdown(t); err != nil {
		t.Fatal(err)
	}
	logs := v.logs.String()
	if strings.Contains(logs, "SECRET") || strings.Contains(logs, e[names.EnvServiceAccountKey]) {
		t.Fatalf("the service-account key appears in the logs:\n%s", logs)
	}
}
