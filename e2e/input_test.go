//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestBadInput sends a running VM what a broken or hostile client would and
// proves each gets the documented answer (docs/protocol.md): an error frame
// on a connection that stays usable, or a close code for frames the relay
// will not read; nothing bad is published, the VM stays up, and other
// clients, on the same VM and on another, are unaffected.
func TestBadInput(t *testing.T) {
	c := newCluster(t, sharedEmulator(t), 2)
	vm1, vm2 := c.vms[0], c.vms[1]
	bad := dial(t, vm1, "bad client")
	near, far := dial(t, vm1, "bystander"), dial(t, vm2, "bystander")
	bystanders := []*testkit.Client{near, far}

	// Each bad frame of the shared table wants its error frame, matched by
	// its nonce where the relay can echo it.
	for _, tc := range testkit.BadFrames {
		from := bad.Mark()
		if err := bad.SendRaw(websocket.TextMessage, []byte(tc.Frame)); err != nil {
			t.Fatalf("%s: %v", tc.Name, err)
		}
		f, err := bad.WaitFrameFrom(from, arrival, "the error for "+tc.Name, func(f testkit.Frame) bool {
			return f.Type == "error" && f.Nonce == tc.Nonce || f.Type == "ack"
		})
		if err != nil {
			t.Errorf("%s: %v", tc.Name, err)
			continue
		}
		if f.Type != "error" || f.Code != tc.Code || f.Nonce != tc.Nonce || f.Message == "" {
			t.Errorf("%s: sent %.80s; want error %q with nonce %q and a message, got %s", tc.Name, tc.Frame, tc.Code, tc.Nonce, f)
		}
		// The connection still answers (rate_limited is an answer too: the
		// probes spend the bucket). Waiting for it also keeps the answers
		// of frames without a nonce apart.
		bad.MustFrame(t, arrival, "the answer to a probe after "+tc.Name, probe(t, bad))
	}
	time.Sleep(2 * time.Second) // the rate limit's bucket refills (5/s, burst 10)

	// The bad client's connection still works, and a good alert from it
	// reaches everyone.
	all := []*testkit.Client{bad, near, far}
	broadcast(t, bad, all, "good alert after bad input "+randomHex(3))

	// A flood: more alerts at once than the burst allows. The excess is
	// answered rate_limited and not published; the rest goes out.
	flood := dial(t, vm1, "flooding client")
	const n = 30
	run := randomHex(3)
	for i := range n {
		flood.SendAlert(t, fmt.Sprintf("flood %s %d", run, i), fmt.Sprintf("f%d", i))
	}
	var acked, limited []string
	for i := range n {
		nonce := fmt.Sprintf("f%d", i)
		f, err := flood.WaitFrame(arrival, "the answer to "+nonce, testkit.AnswerTo(nonce))
		if err != nil {
			t.Fatal(err)
		}
		text := fmt.Sprintf("flood %s %d", run, i)
		switch {
		case f.Type == "ack":
			acked = append(acked, text)
		case f.Code == "rate_limited":
			limited = append(limited, text)
		default:
			t.Errorf("%s: flood alert %s: want ack or rate_limited, got %s", flood, nonce, f)
		}
	}
	t.Logf("flood of %d: %d acked, %d rate_limited", n, len(acked), len(limited))
	if len(limited) == 0 || len(acked) == 0 {
		t.Errorf("flood of %d alerts at once: want some acked and some rate_limited (burst ~10), got %d acked and %d rate_limited",
			n, len(acked), len(limited))
	}
	for _, text := range acked {
		for _, cl := range bystanders {
			if _, err := cl.WaitFrame(arrival, "acked flood alert "+text, testkit.IsAlertText(text)); err != nil {
				t.Error(err)
			}
		}
	}

	// Frames the relay will not read close the connection with a code.
	big := dial(t, vm1, "oversize client")
	if err := big.SendRaw(websocket.TextMessage, []byte(testkit.OversizeFrame)); err != nil {
		t.Fatal(err)
	}
	big.ExpectClose(t, arrival, websocket.CloseMessageTooBig, "a frame over the 4096-byte read limit")
	bin := dial(t, vm1, "binary client")
	if err := bin.SendRaw(websocket.BinaryMessage, []byte(`{"type":"alert"}`)); err != nil {
		t.Fatal(err)
	}
	bin.ExpectClose(t, arrival, websocket.CloseUnsupportedData, "binary frames are not part of the protocol")

	// Nothing bad was published; the VM is up; bystanders still receive.
	time.Sleep(settle)
	for _, tc := range testkit.BadFrames {
		if tc.Text == "" {
			continue
		}
		for _, cl := range bystanders {
			if got := cl.AlertsWithText(tc.Text); len(got) > 0 {
				t.Errorf("%s: %s was answered with an error but broadcast anyway: %s", cl, tc.Name, got[0])
			}
		}
	}
	for _, text := range limited {
		for _, cl := range bystanders {
			if got := cl.AlertsWithText(text); len(got) > 0 {
				t.Errorf("%s: %q was rate_limited but broadcast anyway", cl, text)
			}
		}
	}
	vm1.running(t)
	if code, err := vm1.Status("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("%s: after bad input want GET /healthz 200, got %d %v", vm1, code, err)
	}
	broadcast(t, far, all, "bystanders unaffected "+randomHex(3))
	exactlyOnce(t, all)
}

// probe sends a valid alert with a fresh nonce from cl and returns a
// matcher for its answer: proof that the connection still works.
func probe(t *testing.T, cl *testkit.Client) testkit.Match {
	t.Helper()
	nonce := "probe-" + randomHex(4)
	cl.SendAlert(t, "probe "+nonce, nonce)
	return testkit.AnswerTo(nonce)
}
