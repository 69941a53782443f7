package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/gorilla/websocket"
)

// These tests run whole relays through run, as main does, on port 0: three
// "VMs" with their own alloc ids on one in-process Pub/Sub server (pstest,
// reached the way the official emulator is, through PUBSUB_EMULATOR_HOST),
// with real WebSocket clients.

const testProject = "skywatch-test"

// wait is how long to wait for something that should happen: long enough
// for a loaded CI machine, so a failure means it did not happen at all.
const wait = 20 * time.Second

// syncBuffer is a relay's stdout: written by the relay, read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type vm struct {
	id   string
	addr string // host:port
	logs *syncBuffer
	stop context.CancelFunc
	done chan error
}

// listeningRE finds the line a VM logs once it listens: its id and port.
var listeningRE = regexp.MustCompile(`msg=listening vm=(\S+) .*?addr=\S*:(\d+)`)

// startVM runs a relay with env on port 0 and waits until it serves.
func startVM(t *testing.T, env map[string]string) *vm {
	t.Helper()
	env["PORT"] = "0"
	ctx, cancel := context.WithCancel(context.Background())
	v := &vm{id: env["FLY_ALLOC_ID"], logs: &syncBuffer{}, stop: cancel, done: make(chan error, 1)}
	go func() { v.done <- run(ctx, []string{"skywatch"}, func(k string) string { return env[k] }, v.logs) }()
	t.Cleanup(func() {
		v.stop()
		<-v.done
		if t.Failed() {
			t.Logf("logs of VM %s:\n%s", v.id, v.logs)
		}
	})
	deadline := time.Now().Add(wait)
	for {
		if m := listeningRE.FindStringSubmatch(v.logs.String()); m != nil {
			v.addr = "127.0.0.1:" + m[2]
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
	case <-time.After(wait):
		t.Fatalf("VM %s did not shut down", v.id)
		return nil
	}
}

func (v *vm) status(t *testing.T, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + v.addr + path)
	if err != nil {
		t.Fatalf("VM %s GET %s: %v", v.id, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (v *vm) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for v.status(t, "/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("VM %s never became ready:\n%s", v.id, v.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// frame is any server frame of protocol v1.
type frame struct {
	Type    string `json:"type"`
	VM      string `json:"vm"`
	Region  string `json:"region"`
	ID      string `json:"id"`
	Text    string `json:"text"`
	Nonce   string `json:"nonce"`
	Code    string `json:"code"`
	Message string `json:"message"`
	SentAt  string `json:"sent_at"`
	Origin  struct {
		VM     string `json:"vm"`
		Region string `json:"region"`
		Via    string `json:"via"`
	} `json:"origin"`
}

// client is a real WebSocket client whose frames are read in the
// background, as a browser would.
type client struct {
	name   string
	conn   *websocket.Conn
	hello  frame
	frames chan frame
	closed chan error // the read error that ended the connection
	stash  []frame    // frames skipped by nextOf, returned first by next
}

func dial(t *testing.T, v *vm, name string) *client {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+v.addr+"/ws", nil)
	if err != nil {
		t.Fatalf("%s: dial VM %s: %v", name, v.id, err)
	}
	c := &client{name: name, conn: conn, frames: make(chan frame, 1024), closed: make(chan error, 1)}
	t.Cleanup(func() { conn.Close() })
	go func() {
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				c.closed <- err
				close(c.frames)
				return
			}
			var f frame
			if err := json.Unmarshal(data, &f); err != nil {
				c.closed <- fmt.Errorf("undecodable frame %q: %w", data, err)
				close(c.frames)
				return
			}
			c.frames <- f
		}
	}()
	c.hello = c.next(t)
	if c.hello.Type != "hello" || (v.id != "" && c.hello.VM != v.id) {
		t.Fatalf("%s: first frame %+v, want hello from VM %s", name, c.hello, v.id)
	}
	return c
}

func (c *client) send(t *testing.T, v any) {
	t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		t.Fatalf("%s: write: %v", c.name, err)
	}
}

func (c *client) next(t *testing.T) frame {
	t.Helper()
	if len(c.stash) > 0 {
		f := c.stash[0]
		c.stash = c.stash[1:]
		return f
	}
	return c.read(t)
}

func (c *client) read(t *testing.T) frame {
	t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			t.Fatalf("%s: connection closed: %v", c.name, <-c.closed)
		}
		return f
	case <-time.After(wait):
		t.Fatalf("%s: no frame arrived", c.name)
	}
	return frame{}
}

// nextOf returns the first frame of type typ, keeping the others it
// passes for next (an ack and its alert may come in either order).
func (c *client) nextOf(t *testing.T, typ string) frame {
	t.Helper()
	for i, f := range c.stash {
		if f.Type == typ {
			c.stash = append(c.stash[:i:i], c.stash[i+1:]...)
			return f
		}
	}
	for {
		f := c.read(t)
		if f.Type == typ {
			return f
		}
		c.stash = append(c.stash, f)
	}
}

func (c *client) stashed(typ string) bool {
	for _, f := range c.stash {
		if f.Type == typ {
			return true
		}
	}
	return false
}

// closeCode waits for the server to close the connection and returns the
// close code it sent.
func (c *client) closeCode(t *testing.T) int {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				err := <-c.closed
				var ce *websocket.CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("%s: connection ended without a close frame: %v", c.name, err)
				}
				return ce.Code
			}
		case <-deadline:
			t.Fatalf("%s: server never closed the connection", c.name)
		}
	}
}

func newPubSub(t *testing.T) *pstest.Server {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	return srv
}

func emulatorEnv(srv *pstest.Server, alloc, region string) map[string]string {
	return map[string]string{
		"FLY_ALLOC_ID":         alloc,
		"FLY_REGION":           region,
		"GOOGLE_CLOUD_PROJECT": testProject,
		"PUBSUB_EMULATOR_HOST": srv.Addr,
	}
}

// threeVMs starts three relays on one Pub/Sub, waits until all receive,
// and connects two clients to each.
func threeVMs(t *testing.T, srv *pstest.Server) ([]*vm, [][]*client) {
	t.Helper()
	regions := []string{"ams", "iad", "syd"}
	vms := make([]*vm, 3)
	clients := make([][]*client, 3)
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

// expectAlerts reads alerts on c until it has seen every id in want, and
// fails on any id seen twice or not sent.
func expectAlerts(t *testing.T, c *client, want map[string]bool) map[string]frame {
	t.Helper()
	got := map[string]frame{}
	for len(got) < len(want) {
		f := c.nextOf(t, "alert")
		if !want[f.ID] {
			t.Fatalf("%s: alert %q was never sent (%+v)", c.name, f.ID, f)
		}
		if _, dup := got[f.ID]; dup {
			t.Fatalf("%s: alert %s delivered twice", c.name, f.ID)
		}
		got[f.ID] = f
	}
	return got
}

func TestThreeVMsBroadcastExactlyOnce(t *testing.T) {
	srv := newPubSub(t)
	vms, clients := threeVMs(t, srv)

	// One alert from a client on each VM.
	want := map[string]bool{}
	for i, cs := range clients {
		sender := cs[0]
		nonce := fmt.Sprintf("n%d", i)
		sender.send(t, map[string]any{"type": "alert", "text": "landing at VM " + vms[i].id, "nonce": nonce,
			// Forged fields: the server must stamp its own.
			"id": "forged", "origin": map[string]string{"vm": "evil"}, "sent_at": "1999-01-01T00:00:00Z"})
		ack := sender.nextOf(t, "ack")
		if ack.Nonce != nonce || ack.ID == "" || ack.ID == "forged" {
			t.Fatalf("%s: ack %+v, want nonce %q and a server id", sender.name, ack, nonce)
		}
		want[ack.ID] = true
	}
	for _, cs := range clients {
		for _, c := range cs {
			got := expectAlerts(t, c, want)
			for id, f := range got {
				if f.Origin.VM == "evil" || f.SentAt == "1999-01-01T00:00:00Z" {
					t.Errorf("%s: alert %s carries forged fields: %+v", c.name, id, f)
				}
				if _, err := time.Parse(time.RFC3339, f.SentAt); err != nil {
					t.Errorf("%s: sent_at %q: %v", c.name, f.SentAt, err)
				}
			}
		}
	}

	// A marker alert sent last: once every client has it, a redelivered
	// duplicate of an earlier one would have shown up in expectAlerts or
	// be in the buffer now.
	clients[2][1].send(t, map[string]any{"type": "alert", "text": "marker"})
	marker := clients[2][1].nextOf(t, "ack").ID
	for _, cs := range clients {
		for _, c := range cs {
			if f := c.nextOf(t, "alert"); f.ID != marker {
				t.Fatalf("%s: got alert %s (%q) after all were delivered, want only the marker", c.name, f.ID, f.Text)
			}
		}
	}
}

func TestSubscriptionsHaveExpiryAndGoAwayOnShutdown(t *testing.T) {
	srv := newPubSub(t)
	vms, clients := threeVMs(t, srv)
	admin := &srv.GServer // the pstest server implements the admin API

	for _, v := range vms {
		sub, err := admin.GetSubscription(t.Context(), &pubsubpb.GetSubscriptionRequest{
			Subscription: "projects/" + testProject + "/subscriptions/ID_" + v.id,
		})
		if err != nil {
			t.Fatalf("subscription of VM %s: %v", v.id, err)
		}
		if ttl := sub.GetExpirationPolicy().GetTtl().AsDuration(); ttl != 24*time.Hour {
			t.Errorf("VM %s subscription expiration ttl = %v, want 24h", v.id, ttl)
		}
		if !strings.HasSuffix(sub.GetTopic(), "/topics/ALIEN_NOTIFICATIONS") {
			t.Errorf("VM %s subscription topic = %q", v.id, sub.GetTopic())
		}
	}

	// Stop VM 1 as SIGTERM would.
	if err := vms[0].shutdown(t); err != nil {
		t.Fatalf("VM %s shutdown: %v, want nil (exit status 0)", vms[0].id, err)
	}
	for _, c := range clients[0] {
		if code := c.closeCode(t); code != websocket.CloseServiceRestart {
			t.Errorf("%s: close code %d, want 1012", c.name, code)
		}
	}
	_, err := admin.GetSubscription(t.Context(), &pubsubpb.GetSubscriptionRequest{
		Subscription: "projects/" + testProject + "/subscriptions/ID_" + vms[0].id,
	})
	if err == nil {
		t.Errorf("subscription of stopped VM %s still exists", vms[0].id)
	}

	// The others carry on.
	clients[1][0].send(t, map[string]any{"type": "alert", "text": "still here"})
	id := clients[1][0].nextOf(t, "ack").ID
	for _, cs := range clients[1:] {
		for _, c := range cs {
			expectAlerts(t, c, map[string]bool{id: true})
		}
	}
}

func TestVanishedSubscriptionIsRecreated(t *testing.T) {
	srv := newPubSub(t)
	v := startVM(t, emulatorEnv(srv, "vm1", "ams"))
	v.waitReady(t)
	c := dial(t, v, "client")

	// pstest keeps a Receive open after its subscription is deleted; the
	// relay must notice anyway.
	_, err := srv.GServer.DeleteSubscription(t.Context(), &pubsubpb.DeleteSubscriptionRequest{
		Subscription: "projects/" + testProject + "/subscriptions/ID_vm1",
	})
	if err != nil {
		t.Fatal(err)
	}
	// Alerts published before it is back are lost; send until one arrives.
	deadline := time.Now().Add(wait)
	for i := 0; ; i++ {
		c.send(t, map[string]any{"type": "alert", "text": fmt.Sprint("after ", i)})
		ack := c.nextOf(t, "ack")
		if c.stashed("alert") {
			return
		}
		select {
		case f := <-c.frames:
			if f.Type == "alert" {
				return
			}
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no alert after the subscription vanished (last ack %s):\n%s", ack.ID, v.logs)
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
		for _, tc := range []struct {
			name, frame, code string
		}{
			{"malformed JSON", `{"type":"alert",`, "invalid"},
			{"not an object", `[1,2]`, "invalid"},
			{"unknown type", `{"type":"launch","nonce":"u"}`, "invalid"},
			{"text of the wrong type", `{"type":"alert","text":42,"nonce":"w"}`, "invalid"},
			{"text over 280 characters", `{"type":"alert","text":"` + strings.Repeat("👽", 281) + `","nonce":"t"}`, "too_large"},
			{"nonce over 64 characters", `{"type":"alert","nonce":"` + strings.Repeat("n", 65) + `"}`, "too_large"},
		} {
			if err := c.conn.WriteMessage(websocket.TextMessage, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			if f := c.nextOf(t, "error"); f.Code != tc.code || f.Message == "" {
				t.Errorf("%s: got %+v, want error code %q with a message", tc.name, f, tc.code)
			}
		}
		// Still usable: a good alert is acked and broadcast.
		c.send(t, map[string]any{"type": "alert", "nonce": "ok"})
		if ack := c.nextOf(t, "ack"); ack.Nonce != "ok" {
			t.Fatalf("after bad frames: %+v, want ack", ack)
		}
	})

	t.Run("flood is rate limited and nothing over the limit is published", func(t *testing.T) {
		c := dial(t, v, "flooder")
		const n = 100
		for i := range n {
			c.send(t, map[string]any{"type": "alert", "text": "flood", "nonce": fmt.Sprint(i)})
		}
		acked, limited := 0, 0
		for acked+limited < n {
			switch f := c.next(t); {
			case f.Type == "ack":
				acked++
			case f.Type == "error" && f.Code == "rate_limited":
				limited++
			case f.Type == "error":
				t.Fatalf("flood: unexpected error %+v", f)
			}
		}
		if limited == 0 || acked == 0 {
			t.Fatalf("flood of %d: %d acked, %d rate_limited; want both", n, acked, limited)
		}
		t.Logf("flood of %d: %d acked, %d rate_limited", n, acked, limited)
	})

	t.Run("binary frame closes with 1003", func(t *testing.T) {
		c := dial(t, v, "binary")
		if err := c.conn.WriteMessage(websocket.BinaryMessage, []byte{0xde, 0xad}); err != nil {
			t.Fatal(err)
		}
		if code := c.closeCode(t); code != websocket.CloseUnsupportedData {
			t.Fatalf("close code %d, want 1003", code)
		}
	})

	t.Run("oversize frame closes with 1009", func(t *testing.T) {
		c := dial(t, v, "oversize")
		big := `{"type":"alert","text":"` + strings.Repeat("x", 64<<10) + `"}`
		// The server may close before the whole frame is written.
		_ = c.conn.WriteMessage(websocket.TextMessage, []byte(big))
		if code := c.closeCode(t); code != websocket.CloseMessageTooBig {
			t.Fatalf("close code %d, want 1009", code)
		}
	})

	// The VM is up and the bystander saw the good alerts, nothing else.
	if code := v.status(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d after bad input", code)
	}
	bystander.send(t, map[string]any{"type": "alert", "text": "still up", "nonce": "b"})
	id := bystander.nextOf(t, "ack").ID
	for {
		f := bystander.nextOf(t, "alert")
		if f.Text != "flood" && f.Text != "An alien landing!" && f.ID != id {
			t.Fatalf("bystander got an alert nobody sent: %+v", f)
		}
		if f.ID == id {
			break
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
	a.send(t, map[string]any{"type": "alert", "nonce": "x"})
	id := a.nextOf(t, "ack").ID
	for _, c := range []*client{a, b} {
		f := expectAlerts(t, c, map[string]bool{id: true})[id]
		if f.Text == "" || f.Origin.Region != "local" || f.Origin.VM != a.hello.VM {
			t.Errorf("%s: alert %+v, want default text from this VM in region local", c.name, f)
		}
	}
	// The page and the probes are served.
	for path, want := range map[string]int{"/": 200, "/healthz": 200, "/readyz": 200, "/metrics": 200, "/nope": 404} {
		if got := v.status(t, path); got != want {
			t.Errorf("GET %s = %d, want %d", path, got, want)
		}
	}
	resp, err := http.Get("http://" + v.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"skywatch_connections", "skywatch_alerts_published_total", "go_goroutines"} {
		if !bytes.Contains(body, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if err := v.shutdown(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestDevRunsThreeVMsOnOneBroker(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"skywatch", "-dev", "-dev-ports", "0,0,0"}, func(string) string { return "" }, logs)
	}()
	t.Cleanup(func() { cancel(); <-done })

	var vms []*vm
	deadline := time.Now().Add(wait)
	for len(vms) < 3 {
		ms := listeningRE.FindAllStringSubmatch(logs.String(), -1)
		if len(ms) == 3 {
			for _, m := range ms {
				vms = append(vms, &vm{id: m[1], addr: "127.0.0.1:" + m[2], logs: logs})
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev relays never listened:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ids := map[string]bool{}
	for _, v := range vms {
		ids[v.id] = true
	}
	if !ids["dev-1"] || !ids["dev-2"] || !ids["dev-3"] {
		t.Fatalf("dev VMs are %v, want dev-1, dev-2 and dev-3", ids)
	}
	var clients []*client
	for _, v := range vms {
		v.waitReady(t)
		c := dial(t, v, "client on "+v.id)
		if c.hello.VM != v.id {
			t.Fatalf("VM on %s says it is %q, want %q", v.addr, c.hello.VM, v.id)
		}
		clients = append(clients, c)
	}
	clients[0].send(t, map[string]any{"type": "alert"})
	id := clients[0].nextOf(t, "ack").ID
	for _, c := range clients {
		expectAlerts(t, c, map[string]bool{id: true})
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
	e["GCP_SERVICE_ACCOUNT_KEY"] = base64.StdEncoding.EncodeToString([]byte(fakeKey))
	v := startVM(t, e)
	v.waitReady(t)
	if err := v.shutdown(t); err != nil {
		t.Fatal(err)
	}
	logs := v.logs.String()
	if strings.Contains(logs, "SECRET") || strings.Contains(logs, e["GCP_SERVICE_ACCOUNT_KEY"]) {
		t.Fatalf("the service-account key appears in the logs:\n%s", logs)
	}
}
