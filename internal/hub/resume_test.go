package hub

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// resumedFrame is the resumed frame as a client decodes it.
type resumedFrame struct {
	Type      string `json:"type"`
	Recovered bool   `json:"recovered"`
	Replayed  int    `json:"replayed"`
	From      string `json:"from"`
}

// resumeURL is the relay's URL with ?since=.
func resumeURL(tr *testHub, since string) string {
	return tr.url + "?since=" + url.QueryEscape(since)
}

// readRaw reads one text frame as it was sent.
func readRaw(t *testing.T, conn *websocket.Conn) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	_, data, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return data
}

// readReplay reads hello, the replayed alerts and the resumed frame.
func readReplay(t *testing.T, conn *websocket.Conn) ([]testkit.Frame, resumedFrame) {
	t.Helper()
	if f := read(t, conn); f.Type != protocol.TypeHello {
		t.Fatalf("first frame %+v, want hello", f)
	}
	var alerts []testkit.Frame
	for {
		data := readRaw(t, conn)
		var f testkit.Frame
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatal(err)
		}
		switch f.Type {
		case protocol.TypeAlert:
			alerts = append(alerts, f)
		case protocol.TypeResumed:
			var r resumedFrame
			if err := json.Unmarshal(data, &r); err != nil {
				t.Fatal(err)
			}
			return alerts, r
		default:
			t.Fatalf("during the replay: %s", data)
		}
	}
}

// alertAt is a broker message sent at the given time.
func alertAt(t *testing.T, id string, at time.Time) []byte {
	t.Helper()
	return protocol.Encode(protocol.Alert{
		Type: protocol.TypeAlert, ID: id, Text: "at " + at.Format(time.RFC3339Nano),
		Origin: protocol.Origin{VM: "other-vm", Region: "syd"}, SentAt: at.UTC().Format(protocol.SentAtLayout),
	})
}

func TestResumeReplaysThenLive(t *testing.T) {
	tr := startHub(t, Config{ResumeMargin: time.Second}, &loopback{})
	tr.CoverageStarts()
	base := tr.rs.history.Coverage().Add(10 * time.Second) // sent "later" than coverage started
	// Received out of sent order: the replay comes oldest sent first.
	tr.Deliver(alertAt(t, testID(3), base.Add(3*time.Second)))
	tr.Deliver(alertAt(t, testID(0), base))
	tr.Deliver(alertAt(t, testID(2), base.Add(2*time.Second)))
	tr.Deliver(alertAt(t, testID(1), base.Add(1500*time.Millisecond)))

	// The client holds up to testID(2); the 1 s margin brings back testID(1)
	// (a repeat, or one it missed), not testID(0).
	conn, _, err := dial(t, resumeURL(tr, base.Add(2*time.Second).UTC().Format(protocol.SentAtLayout)), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	alerts, r := readReplay(t, conn)
	var got []string
	for _, a := range alerts {
		got = append(got, a.ID)
	}
	if want := []string{testID(1), testID(2), testID(3)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("replayed %v, want %v (oldest sent first, from since minus the margin)", got, want)
	}
	if !r.Recovered || r.Replayed != 3 {
		t.Errorf("resumed %+v, want recovered with 3 replayed", r)
	}
	if from, err := time.Parse(time.RFC3339, r.From); err != nil || from.Before(tr.rs.history.Coverage()) {
		t.Errorf("from %q (%v): want coverage start %v", r.From, err, tr.rs.history.Coverage())
	}

	// Live alerts follow.
	tr.Deliver(alertJSON(t, testID(4), "live"))
	if f := read(t, conn); f.ID != testID(4) {
		t.Errorf("after resumed: %+v, want the live alert", f)
	}
	if n := count(t, tr.rs.resumes.WithLabelValues("recovered")); n != 1 {
		t.Errorf("resumes{recovered} = %v, want 1", n)
	}
	if n := count(t, tr.rs.replayed); n != 3 {
		t.Errorf("alerts replayed = %v, want 3", n)
	}
}

func TestNoSinceIsLiveOnly(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	tr.CoverageStarts()
	tr.Deliver(alertJSON(t, testID(0), "before"))
	conn, _ := connect(t, tr.url)
	tr.Deliver(alertJSON(t, testID(1), "after"))
	if f := read(t, conn); f.Type != protocol.TypeAlert || f.ID != testID(1) {
		t.Fatalf("after hello: %+v, want only the live alert (no replay, no resumed frame)", f)
	}
}

func TestInvalidSinceCarriesOnLive(t *testing.T) {
	tr := startHub(t, Config{}, &loopback{})
	tr.CoverageStarts()
	tr.Deliver(alertJSON(t, testID(0), "before"))
	for i, since := range []string{"", "yesterday", "1764230400", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)} {
		conn, _ := connect(t, resumeURL(tr, since))
		if f := read(t, conn); f.Type != protocol.TypeError || f.Code != protocol.CodeInvalid || f.Message == "" {
			t.Fatalf("since %q: after hello %+v, want an invalid error", since, f)
		}
		id := testID(100 + i)
		tr.Deliver(alertJSON(t, id, "live"))
		if f := read(t, conn); f.ID != id {
			t.Fatalf("since %q: then %+v, want the live alert", since, f)
		}
	}
}

// TestRecoveredEdges: recovered is true exactly when since minus the margin
// is at or after coverage start, and false before coverage.
func TestRecoveredEdges(t *testing.T) {
	const margin = 2 * time.Second
	tr := startHub(t, Config{ResumeMargin: margin}, &loopback{})
	resume := func(since time.Time) resumedFrame {
		t.Helper()
		conn, _, err := dial(t, resumeURL(tr, since.UTC().Format(time.RFC3339Nano)), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, r := readReplay(t, conn)
		conn.Close()
		return r
	}
	if r := resume(time.Now()); r.Recovered {
		t.Errorf("before the subscription receives: %+v, want not recovered", r)
	}
	tr.CoverageStarts()
	cov := tr.rs.history.Coverage()
	edge := cov.Add(margin)
	if r := resume(edge); !r.Recovered {
		t.Errorf("since = coverage start + margin: %+v, want recovered", r)
	}
	r := resume(edge.Add(-time.Nanosecond))
	if r.Recovered {
		t.Errorf("since a nanosecond earlier: %+v, want not recovered", r)
	}
	if from, err := time.Parse(time.RFC3339, r.From); err != nil || from.Before(cov) || from.Sub(cov) >= time.Millisecond {
		t.Errorf("from %q, want coverage start %v (to the millisecond, rounded up)", r.From, cov)
	}
	if n := count(t, tr.rs.resumes.WithLabelValues("not_recovered")); n != 2 {
		t.Errorf("resumes{not_recovered} = %v, want 2", n)
	}
}

func TestLateAlertIsDropped(t *testing.T) {
	tr := startHub(t, Config{HistoryAge: time.Minute}, &loopback{})
	tr.CoverageStarts()
	conn, _ := connect(t, tr.url)
	tr.Deliver(alertAt(t, testID(0), time.Now().Add(-time.Minute-time.Second)))
	tr.Deliver(alertJSON(t, testID(1), "fresh"))
	if f := read(t, conn); f.ID != testID(1) {
		t.Fatalf("got %+v, want only the fresh alert: a late one is not news", f)
	}
	if n := count(t, tr.rs.late); n != 1 {
		t.Errorf("late dropped = %v, want 1", n)
	}
	if n := tr.rs.history.Len(); n != 1 {
		t.Errorf("history holds %d, want 1", n)
	}
}

// TestResumeHandoffUnderLoad: alerts are delivered from several goroutines
// while clients resume from before the first one. Each client must end with
// every alert exactly once: those delivered before it registered in its
// replay, the rest live, none in both and none in neither. Run with -race.
func TestResumeHandoffUnderLoad(t *testing.T) {
	const senders, each, clients = 4, 150, 12
	n := senders * each
	tr := startHub(t, Config{HistorySize: n + 10}, &loopback{})
	tr.CoverageStarts()
	since := time.Now().UTC().Format(protocol.SentAtLayout)

	var deliveries sync.WaitGroup
	start := make(chan struct{})
	for s := range senders {
		deliveries.Go(func() {
			<-start
			for i := range each {
				tr.Deliver(alertJSON(t, testID(s*each+i), "load"))
				if i%10 == 0 {
					time.Sleep(time.Millisecond) // spread the run so resumes land in the middle
				}
			}
		})
	}
	var readers sync.WaitGroup
	results := make([]string, clients)
	conns := make([]*websocket.Conn, clients)
	close(start)
	for c := range clients {
		conn, _, err := dial(t, resumeURL(tr, since), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns[c] = conn
		readers.Go(func() {
			seen := map[string]int{}
			frames, replayed, resumed := 0, 0, 0
			for len(seen) < n+1 { // every alert, then the marker
				f, err := tryRead(conn)
				if err != nil {
					results[c] = fmt.Sprintf("read after %d frames, %d distinct alerts: %v", frames, len(seen), err)
					return
				}
				frames++
				switch f.Type {
				case protocol.TypeHello:
					if frames != 1 {
						results[c] = "hello not first"
						return
					}
				case protocol.TypeResumed:
					resumed++
					replayed = frames - 2 // all but hello and resumed so far
				case protocol.TypeAlert:
					seen[f.ID]++
					if seen[f.ID] > 1 {
						results[c] = "alert " + f.ID + " twice"
						return
					}
				}
			}
			if resumed != 1 {
				results[c] = fmt.Sprintf("%d resumed frames, want 1", resumed)
				return
			}
			results[c] = fmt.Sprintf("ok, %d replayed", replayed)
		})
		time.Sleep(time.Duration(c) * time.Millisecond)
	}
	deliveries.Wait()
	tr.Deliver(alertJSON(t, testID(n), "marker")) // after every other: the readers' end
	readers.Wait()
	var replays []string
	for c, r := range results {
		if len(r) < 2 || r[:2] != "ok" {
			t.Errorf("client %d: %s", c, r)
		}
		replays = append(replays, r)
	}
	t.Logf("%d alerts; clients: %v", n, replays)
}
