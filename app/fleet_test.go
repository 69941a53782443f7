package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// fleetOf asks a VM's GET /fleet.
func fleetOf(t *testing.T, v *vm) protocol.Fleet {
	t.Helper()
	resp, err := http.Get("http://" + v.addr + "/fleet")
	if err != nil {
		t.Fatalf("VM %s GET /fleet: %v", v.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("VM %s GET /fleet: %s %s", v.id, resp.Status, resp.Header.Get("Content-Type"))
	}
	var f protocol.Fleet
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		t.Fatalf("VM %s GET /fleet: %v", v.id, err)
	}
	return f
}

// metric reads one unlabelled series from a VM's /metrics.
func metric(t *testing.T, v *vm, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + v.addr + "/metrics")
	if err != nil {
		t.Fatalf("VM %s GET /metrics: %v", v.id, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if val, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(val, 64)
			if err != nil {
				t.Fatalf("VM %s metric %s: %v", v.id, name, err)
			}
			return f
		}
	}
	t.Fatalf("VM %s has no metric %s", v.id, name)
	return 0
}

func counts(f protocol.Fleet) string {
	var parts []string
	for _, v := range f.VMs {
		parts = append(parts, fmt.Sprintf("%s/%s:%d", v.VM, v.Region, v.Clients))
	}
	return strings.Join(parts, " ") + fmt.Sprintf(" total:%d", f.Clients)
}

// TestFleetAcrossThreeVMs: three relays on one Pub/Sub hear one another's
// heartbeats: /fleet on each lists all three with their client counts, the
// page's fleet frame says the same, and no heartbeat ever reaches a client
// or the hub's alert path (where resume history would record it).
func TestFleetAcrossThreeVMs(t *testing.T) {
	srv := newPubSub(t)
	regions := []string{"ams", "iad", "syd"}
	var vms []*vm
	for i, r := range regions {
		env := emulatorEnv(srv, fmt.Sprintf("vm%d", i+1), r)
		env["HEARTBEAT_INTERVAL"] = "200ms"
		vms = append(vms, startVM(t, env))
	}
	var clients []*client
	for i, v := range vms {
		v.waitReady(t)
		for j := range i + 1 { // 1, 2 and 3 clients
			clients = append(clients, dial(t, v, fmt.Sprintf("client %d on VM %s", j+1, v.id)))
		}
	}
	const want = "vm1/ams:1 vm2/iad:2 vm3/syd:3 total:6"

	for _, v := range vms {
		deadline := time.Now().Add(wait)
		for {
			f := fleetOf(t, v)
			if counts(f) == want {
				for _, e := range f.VMs {
					if _, err := time.Parse(time.RFC3339, e.SeenAt); err != nil {
						t.Errorf("VM %s: %s seen_at %q: %v", v.id, e.VM, e.SeenAt, err)
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("VM %s /fleet: %s, want %s", v.id, counts(f), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got := metric(t, v, "skywatch_fleet_vms"); got != 3 {
			t.Errorf("VM %s skywatch_fleet_vms %v, want 3", v.id, got)
		}
		if got := metric(t, v, "skywatch_fleet_clients"); got != 6 {
			t.Errorf("VM %s skywatch_fleet_clients %v, want 6", v.id, got)
		}
	}

	// Let a few more heartbeats go by, then send one alert: every client
	// reads its frames up to that alert, and none of them may be anything
	// but hello, fleet or this alert.
	time.Sleep(time.Second)
	clients[0].send(t, map[string]string{"type": "alert", "text": "only this", "nonce": "n1"})
	ack := clients[0].nextOf(t, "ack")
	for _, c := range clients {
		for {
			f := c.next(t)
			if f.Type == "alert" {
				if f.ID != ack.ID {
					t.Errorf("%s: alert %+v, want only %s", c.name, f, ack.ID)
				}
				break
			}
			if f.Type != "fleet" && f.Type != "ack" {
				t.Errorf("%s: unexpected frame %+v", c.name, f)
			}
		}
	}
	for _, v := range vms {
		if got := metric(t, v, "skywatch_heartbeats_received_total"); got < 6 {
			t.Errorf("VM %s heard %v heartbeats, want many", v.id, got)
		}
		// One message reached the hub's alert path, the alert: heartbeats
		// are routed away before it.
		if got := metric(t, v, "skywatch_alerts_received_total"); got != 1 {
			t.Errorf("VM %s skywatch_alerts_received_total %v, want 1 (heartbeats must not reach the hub)", v.id, got)
		}
		if got := metric(t, v, "skywatch_alerts_malformed_total"); got != 0 {
			t.Errorf("VM %s skywatch_alerts_malformed_total %v, want 0", v.id, got)
		}
	}
}

// rawFleet reads a connection's frames and returns the fleet frames.
func rawFleet(t *testing.T, v *vm) (first string, frames <-chan protocol.Fleet) {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+v.addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial VM %s: %v", v.id, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan protocol.Fleet, 100)
	types := make(chan string, 2)
	go func() {
		defer close(ch)
		for n := 0; ; n++ {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var f protocol.Fleet
			if err := json.Unmarshal(data, &f); err != nil {
				return
			}
			if n < 2 {
				types <- f.Type
			}
			if f.Type == protocol.TypeFleet {
				ch <- f
			}
		}
	}()
	if hello := <-types; hello != "hello" {
		t.Fatalf("first frame %q, want hello", hello)
	}
	select {
	case first = <-types:
	case <-time.After(wait):
	}
	return first, ch
}

// waitFleet reads fleet frames until one has want's counts.
func waitFleet(t *testing.T, frames <-chan protocol.Fleet, want string) {
	t.Helper()
	var last protocol.Fleet
	deadline := time.After(wait)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("connection closed waiting for fleet %s", want)
			}
			if last = f; counts(f) == want {
				return
			}
		case <-deadline:
			t.Fatalf("no fleet frame %s; last %s", want, counts(last))
		}
	}
}

// TestFleetFrame: a client gets the fleet as a frame when it changes, and
// a client that connects later gets the current one right after hello. A
// VM that stops cleanly leaves the frame at once.
func TestFleetFrame(t *testing.T) {
	srv := newPubSub(t)
	env := func(alloc, region string) map[string]string {
		e := emulatorEnv(srv, alloc, region)
		e["HEARTBEAT_INTERVAL"] = "200ms"
		return e
	}
	a := startVM(t, env("vm1", "ams"))
	a.waitReady(t)
	_, frames := rawFleet(t, a)
	waitFleet(t, frames, "vm1/ams:1 total:1")

	b := startVM(t, env("vm2", "iad"))
	b.waitReady(t)
	dial(t, b, "client 1 on vm2")
	dial(t, b, "client 2 on vm2")
	waitFleet(t, frames, "vm1/ams:1 vm2/iad:2 total:3")

	if second, _ := rawFleet(t, a); second != protocol.TypeFleet {
		t.Errorf("a new client's second frame is %q, want the current fleet", second)
	}

	if err := b.shutdown(t); err != nil {
		t.Fatalf("vm2 shutdown: %v", err)
	}
	// Two watchers on vm1 now.
	waitFleet(t, frames, "vm1/ams:2 total:2")
}

func TestFleetConfig(t *testing.T) {
	for _, tt := range []struct {
		env map[string]string
		ok  bool
	}{
		{map[string]string{}, true},
		{map[string]string{"HEARTBEAT_INTERVAL": "1s", "ORPHAN_AFTER": "5s"}, true},
		{map[string]string{"HEARTBEAT_INTERVAL": "1s", "ORPHAN_AFTER": "4s"}, false}, // a few lost heartbeats would be enough
		{map[string]string{"ORPHAN_AFTER": "1m"}, true},                              // 5 × the default 10s is 50s
		{map[string]string{"ORPHAN_AFTER": "40s"}, false},
		{map[string]string{"HEARTBEAT_INTERVAL": "ten"}, false},
		{map[string]string{"ORPHAN_AFTER": "-1m"}, false},
	} {
		_, err := loadConfig(func(k string) string { return tt.env[k] })
		if (err == nil) != tt.ok {
			t.Errorf("%v: err %v, want ok=%v", tt.env, err, tt.ok)
		}
	}
}
