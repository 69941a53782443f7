package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// Centrifugo, for comparison: nodes started here with a Redis broker (the
// peer's own way to fan out across nodes), spoken to in its JSON client
// protocol: connect, subscribe to one channel, publish into it. Its
// publications carry the same "L<seq>.<ns>" text, so latency is measured
// the same way. Centrifugo answers a client publish with a reply, which
// stands for Skywatch's ack.

const centrifugoChannel = "alerts"

// centrifugoProto speaks Centrifugo's JSON protocol (v2): one command per
// line, replies matched by id, pushes without id, an empty object as ping.
type centrifugoProto struct{}

func (centrifugoProto) join(c *websocket.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	cmds := `{"id":1,"connect":{}}` + "\n" + `{"id":2,"subscribe":{"channel":"` + centrifugoChannel + `"}}`
	if err := c.WriteMessage(websocket.TextMessage, []byte(cmds)); err != nil {
		return err
	}
	got := 0
	for got < 2 {
		_, data, err := c.ReadMessage()
		if err != nil {
			return err
		}
		for line := range bytes.Lines(data) {
			var r struct {
				ID    int             `json:"id"`
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal(line, &r) != nil || r.ID == 0 {
				continue
			}
			if r.Error != nil {
				return fmt.Errorf("centrifugo refused command %d: %s", r.ID, r.Error)
			}
			got++
		}
	}
	return nil
}

// Publish ids start above the join's, so the nonce is id-3.
func (centrifugoProto) publish(text string, nonce int) []byte {
	return []byte(`{"id":` + strconv.Itoa(nonce+3) + `,"publish":{"channel":"` + centrifugoChannel + `","data":{"text":"` + text + `"}}}`)
}

func (centrifugoProto) parse(data []byte, each func(event)) {
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if string(line) == "{}" {
			each(event{kind: evPing})
			continue
		}
		if bytes.HasPrefix(line, []byte(`{"push"`)) {
			if j := bytes.Index(line, textKey); j >= 0 {
				rest := line[j+len(textKey):]
				if k := bytes.IndexByte(rest, '"'); k >= 0 {
					each(event{kind: evAlert, text: rest[:k]})
				}
			}
			continue
		}
		var r struct {
			ID    int `json:"id"`
			Error *struct {
				Code int `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal(line, &r) != nil || r.ID < 3 {
			continue
		}
		if r.Error != nil {
			each(event{kind: evError, nonce: r.ID - 3, code: strconv.Itoa(r.Error.Code)})
		} else {
			each(event{kind: evAck, nonce: r.ID - 3})
		}
	}
}

// startCentrifugo starts redis-server on a free loopback port (no disk, no
// other interface) and n Centrifugo nodes using it as their broker.
func startCentrifugo(ctx context.Context, bin string, n int, logDir string) (*target, error) {
	t := &target{proto: centrifugoProto{}}
	rport, err := testkit.FreePort()
	if err != nil {
		return nil, err
	}
	redis, err := startProcess("redis", logDir, exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(rport),
		"--save", "", "--appendonly", "no", "--protected-mode", "yes"))
	if err != nil {
		return nil, err
	}
	t.broker = append(t.broker, redis)
	time.Sleep(500 * time.Millisecond)
	for i := range n {
		port, err := testkit.FreePort()
		if err != nil {
			t.stop()
			return nil, err
		}
		// Keys as printed by `centrifugo defaultconfig -d` (v6). insecure:
		// anonymous clients may connect, subscribe and publish, like
		// Skywatch's; loopback only; no usage statistics sent anywhere.
		cfg := map[string]any{
			"client": map[string]any{"insecure": true, "allowed_origins": []string{"*"}},
			"channel": map[string]any{"without_namespace": map[string]any{
				"allow_subscribe_for_client": true, "allow_publish_for_client": true,
				"allow_subscribe_for_anonymous": true, "allow_publish_for_anonymous": true,
			}},
			"engine": map[string]any{"type": "redis", "redis": map[string]any{
				"address": []string{"redis://127.0.0.1:" + strconv.Itoa(rport)},
			}},
			"http_server": map[string]any{"address": "127.0.0.1", "port": port},
			"health":      map[string]any{"enabled": true},
			"usage_stats": map[string]any{"disabled": true},
		}
		b, _ := json.Marshal(cfg)
		path := filepath.Join(logDir, fmt.Sprintf("centrifugo-%d.json", i))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.stop()
			return nil, err
		}
		if err := t.add(ctx, fmt.Sprintf("centrifugo-%d", i), logDir, exec.Command(bin, "--config", path), port, "/health", "/connection/websocket"); err != nil {
			t.stop()
			return nil, err
		}
	}
	return t, nil
}
