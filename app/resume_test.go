package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

func TestConfigResume(t *testing.T) {
	c, err := loadConfig(env(map[string]string{"HISTORY_SIZE": "50", "HISTORY_AGE": "2m", "RESUME_MARGIN": "1500ms"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HistorySize != 50 || c.HistoryAge != 2*time.Minute || c.ResumeMargin != 1500*time.Millisecond {
		t.Errorf("resume settings %d %v %v, want 50 2m 1.5s", c.HistorySize, c.HistoryAge, c.ResumeMargin)
	}
	if c, _ := loadConfig(env(nil)); c.HistorySize != 0 || c.HistoryAge != 0 || c.ResumeMargin != 0 {
		t.Errorf("unset resume settings %+v, want zero (the hub's defaults)", c)
	}
	for _, bad := range []map[string]string{
		{"HISTORY_SIZE": "0"}, {"HISTORY_SIZE": "many"}, {"HISTORY_AGE": "10"}, {"HISTORY_AGE": "-1m"}, {"RESUME_MARGIN": "soon"},
	} {
		if _, err := loadConfig(env(bad)); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// pageClient is a client that behaves like the page: it keeps the alerts
// it holds by id, remembers the newest sent_at, and reconnects with since.
type pageClient struct {
	mu      sync.Mutex
	held    map[string]int // id -> times received on one connection (must stay 1)
	newest  string
	resumes []resumed
	dups    []string
}

// resumed is a resumed frame.
type resumed struct {
	Recovered bool `json:"recovered"`
	Replayed  int  `json:"replayed"`
}

// session reads one connection until it ends: hello, then (with since) the
// replay and resumed frame, then live alerts. Repeats across connections
// are dropped by id, as the page does; a repeat within one connection is a
// contract violation and recorded.
func (p *pageClient) session(conn *websocket.Conn) error {
	onConn := map[string]bool{}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		var f testkit.Frame
		if err := json.Unmarshal(data, &f); err != nil {
			return err
		}
		p.mu.Lock()
		switch f.Type {
		case "alert":
			if onConn[f.ID] {
				p.dups = append(p.dups, f.ID)
			}
			onConn[f.ID] = true
			// Counted once per connection that carried it.
			p.held[f.ID]++
			// Fixed-width UTC: text order is time order.
			if f.SentAt > p.newest {
				p.newest = f.SentAt
			}
		case "resumed":
			var r resumed
			if err := json.Unmarshal(data, &r); err != nil {
				p.mu.Unlock()
				return err
			}
			p.resumes = append(p.resumes, r)
		}
		p.mu.Unlock()
	}
}

func (p *pageClient) has(ids []string) (missing int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		if p.held[id] == 0 {
			missing++
		}
	}
	return missing
}

// TestResumeOnAnotherVM: a client's relay stops while alerts flow; the
// client reconnects to another relay with since and ends with every
// acknowledged alert, exactly once after dropping repeats by id.
func TestResumeOnAnotherVM(t *testing.T) {
	srv := newPubSub(t)
	var vms []*vm
	for i, region := range []string{"ams", "iad", "syd"} {
		e := emulatorEnv(srv, fmt.Sprintf("vm%d", i+1), region)
		e["ALERT_RATE"] = "200" // one sender at 50 alerts/s
		e["RESUME_MARGIN"] = "500ms"
		vms = append(vms, startVM(t, e))
	}
	for _, v := range vms {
		v.waitReady(t)
	}

	// The page-like client on vm1.
	p := &pageClient{held: map[string]int{}}
	conn1, _, err := websocket.DefaultDialer.Dial(vms[0].WS(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn1.Close() })
	ended1 := make(chan error, 1)
	go func() { ended1 <- p.session(conn1) }()

	// A sender on vm2, one alert every 20 ms, keeping the acknowledged ids.
	sender := dial(t, vms[1], "sender")
	var ackedMu sync.Mutex
	var acked []string
	stopSending := make(chan struct{})
	sent := make(chan struct{})
	// sendOne runs on the sender's goroutine: errors are returned, not
	// fatal there.
	sendOne := func(i int) error {
		nonce := fmt.Sprint(i)
		if err := sender.Send(testkit.NewAlertRequest("flow "+nonce, nonce)); err != nil {
			return err
		}
		f, err := sender.WaitFrame(testkit.Wait, "the ack for "+nonce, testkit.AnswerTo(nonce))
		if err != nil {
			return err
		}
		if f.Type != "ack" {
			return fmt.Errorf("answer %s, want an ack", f)
		}
		ackedMu.Lock()
		acked = append(acked, f.ID)
		ackedMu.Unlock()
		return nil
	}
	sendErr := make(chan error, 1)
	go func() {
		defer close(sent)
		for i := 0; ; i++ {
			select {
			case <-stopSending:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if err := sendOne(i); err != nil {
				sendErr <- err
				return
			}
		}
	}()
	ackedCount := func() int { ackedMu.Lock(); defer ackedMu.Unlock(); return len(acked) }
	// Flow for a while (longer than the margin, so vm3's coverage started
	// well before any since it will be asked for), then stop vm1.
	testkit.Eventually(t, "50 alerts acknowledged", func() bool { return ackedCount() >= 50 })
	if err := vms[0].shutdown(t); err != nil {
		t.Fatalf("vm1 shutdown: %v", err)
	}
	err = <-ended1
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseServiceRestart {
		t.Fatalf("vm1's connection ended with %v, want close 1012", err)
	}
	// Alerts keep flowing while the client is away.
	atStop := ackedCount()
	testkit.Eventually(t, "20 alerts acknowledged while the client is away", func() bool { return ackedCount() >= atStop+20 })

	p.mu.Lock()
	since := p.newest
	p.mu.Unlock()
	conn3, _, err := websocket.DefaultDialer.Dial(vms[2].WS("since="+url.QueryEscape(since)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn3.Close() })
	go func() { _ = p.session(conn3) }()

	atResume := ackedCount()
	testkit.Eventually(t, "20 alerts acknowledged after the resume", func() bool { return ackedCount() >= atResume+20 })
	close(stopSending)
	<-sent
	select {
	case err := <-sendErr:
		t.Fatalf("sender: %v", err)
	default:
	}

	ackedMu.Lock()
	all := append([]string(nil), acked...)
	ackedMu.Unlock()
	testkit.Eventually(t, fmt.Sprintf("every one of %d acknowledged alerts at the client", len(all)), func() bool { return p.has(all) == 0 })

	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.dups) > 0 {
		t.Errorf("alerts twice on one connection: %v", p.dups)
	}
	if len(p.resumes) != 1 || !p.resumes[0].Recovered {
		t.Errorf("resumed frames %+v, want one, recovered", p.resumes)
	}
	repeats := 0
	for _, n := range p.held {
		repeats += n - 1
	}
	t.Logf("%d alerts acknowledged (%d before vm1 stopped, %d while away); resume since %s: %+v; %d repeats dropped by id",
		len(all), atStop, atResume-atStop, since, p.resumes[0], repeats)
}
