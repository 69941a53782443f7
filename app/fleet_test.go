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

	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// fleetOf asks a VM's GET /fleet.
func fleetOf(t *testing.T, v *vm) protocol.Fleet {
	t.Helper()
	resp, err := http.Get(v.URL("/fleet"))
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
	resp, err := http.Get(v.URL("/metrics"))
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
	var clients []*testkit.Client
	for i, v := range vms {
		v.waitReady(t)
		for j := range i + 1 { // 1, 2 and 3 clients
			clients = append(clients, dial(t, v, fmt.Sprintf("client %d on VM %s", j+1, v.id)))
		}
	}
	const want = "vm1/ams:1 vm2/iad:2 vm3/syd:3 total:6"

	for _, v := range vms {
		deadline := time.Now().Add(testkit.Wait)
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
	id := ack(t, clients[0], "only this", "n1")
	for _, c := range clients {
		c.MustFrame(t, testkit.Wait, "the alert", testkit.IsAlertID(id))
		for _, f := range c.Frames() {
			switch {
			case f.Type == protocol.TypeAlert && f.ID != id:
				t.Errorf("%s: alert %s, want only %s", c, f, id)
			case f.Type != protocol.TypeAlert && f.Type != protocol.TypeHello && f.Type != protocol.TypeFleet && f.Type != protocol.TypeStatus && f.Type != protocol.TypeAck:
				t.Errorf("%s: unexpected frame %s", c, f)
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

// waitFleet waits for a fleet frame on c, read after the first from
// frames, with want's counts.
func waitFleet(t *testing.T, c *testkit.Client, from int, want string) {
	t.Helper()
	last := "none"
	_, err := c.WaitFrameFrom(from, testkit.Wait, "fleet "+want, func(f testkit.Frame) bool {
		var fl protocol.Fleet
		if f.Type != protocol.TypeFleet || json.Unmarshal([]byte(f.Raw), &fl) != nil {
			return false
		}
		last = counts(fl)
		return last == want
	})
	if err != nil {
		t.Fatalf("no fleet frame %s; last %s: %v", want, last, err)
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
	watcher := dial(t, a, "watcher on vm1")
	waitFleet(t, watcher, 0, "vm1/ams:1 total:1")

	b := startVM(t, env("vm2", "iad"))
	b.waitReady(t)
	dial(t, b, "client 1 on vm2")
	dial(t, b, "client 2 on vm2")
	waitFleet(t, watcher, 0, "vm1/ams:1 vm2/iad:2 total:3")

	late := dial(t, a, "late client on vm1")
	testkit.Eventually(t, "a second frame", func() bool { return late.Mark() >= 2 })
	if second := late.Frames()[1]; second.Type != protocol.TypeFleet {
		t.Errorf("a new client's second frame is %s, want the current fleet", second)
	}

	from := watcher.Mark()
	if err := b.shutdown(t); err != nil {
		t.Fatalf("vm2 shutdown: %v", err)
	}
	// Two watchers on vm1 now.
	waitFleet(t, watcher, from, "vm1/ams:2 total:2")
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
