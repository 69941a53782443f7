package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// devURLRE finds the line dev mode logs per VM: its id and port.
var devURLRE = regexp.MustCompile(`msg="open in a browser" vm=(\S+) key=\d+ url=http://localhost:(\d+)/`)

// Dev mode, as a person tries failover: each VM lists the others in its
// hello and accepts their pages' origin; typing a VM's number stops it (its
// clients get 1012) and typing it again brings it back on the same port,
// where it receives alerts from the others again.
func TestDevStopAndRestartOneVM(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testkit.SyncBuffer{}
	in, keys := io.Pipe()
	cfg, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)), "0,0", in) }()
	t.Cleanup(func() {
		cancel()
		keys.Close()
		<-done
		if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
	})

	var ports []string
	deadline := time.Now().Add(testkit.Wait)
	for len(ports) < 2 {
		ports = ports[:0]
		for _, m := range devURLRE.FindAllStringSubmatch(logs.String(), -1) {
			ports = append(ports, m[2])
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev relays never logged their URLs:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	vm1 := &vm{id: "dev-1", Endpoint: testkit.Endpoint("127.0.0.1:" + ports[0]), logs: logs}
	vm2 := &vm{id: "dev-2", Endpoint: testkit.Endpoint("127.0.0.1:" + ports[1]), logs: logs}
	vm1.waitReady(t)
	vm2.waitReady(t)

	// dev-1 accepts a page served by dev-2, and names dev-2 as its fallback.
	hdr := http.Header{"Origin": {"http://localhost:" + ports[1]}}
	conn, _, err := websocket.DefaultDialer.Dial(vm1.WS(""), hdr)
	if err != nil {
		t.Fatalf("a page of dev-2 opening dev-1's socket: %v; want it allowed", err)
	}
	var hello struct {
		Type   string   `json:"type"`
		VM     string   `json:"vm"`
		Relays []string `json:"relays"`
	}
	_ = conn.SetReadDeadline(time.Now().Add(testkit.Wait))
	if err := conn.ReadJSON(&hello); err != nil {
		t.Fatal(err)
	}
	if want := "ws://localhost:" + ports[1] + "/ws"; hello.VM != "dev-1" || strings.Join(hello.Relays, ",") != want {
		t.Errorf("dev-1's hello %+v: want vm dev-1 and relays [%s]", hello, want)
	}

	// "1" stops dev-1: its client is closed with 1012, the port is free.
	if _, err := io.WriteString(keys, "1\n"); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, websocket.CloseServiceRestart) {
			t.Fatalf("after typing 1, dev-1's client ended with %v, want close 1012", err)
		}
		break
	}
	conn.Close()
	logs.WaitFor(t, testkit.Wait, `msg="dev mode: stopped; type its number again to restart it" vm=dev-1`)
	if c, _, err := websocket.DefaultDialer.Dial(vm1.WS(""), nil); err == nil {
		c.Close()
		t.Fatal("dev-1 still accepts connections after it was stopped")
	}
	if code := vm2.status(t, "/readyz"); code != http.StatusOK {
		t.Errorf("dev-2 /readyz %d while dev-1 is stopped, want 200", code)
	}

	// "1" again: dev-1 is back on its port and receives dev-2's alerts.
	if _, err := io.WriteString(keys, "1\n"); err != nil {
		t.Fatal(err)
	}
	logs.WaitFor(t, testkit.Wait, `msg="dev mode: started again" vm=dev-1`)
	vm1.waitReady(t)
	c1 := dial(t, vm1, "client on the restarted dev-1")
	c2 := dial(t, vm2, "client on dev-2")
	id := ack(t, c2, "after the restart", "n-id")
	c1.ExpectAlerts(t, testkit.Wait, []string{id}, nil)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("dev shutdown: %v", err)
	}
	done <- nil
}
