package main

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/mempubsub"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

func TestAlertTextRoundTrip(t *testing.T) {
	sent := time.Unix(1700000000, 123456789)
	seq, ns, ok := parseText([]byte(alertText(4242, sent)))
	if !ok || seq != 4242 || ns != sent.UnixNano() {
		t.Fatalf("parse = %d %d %v", seq, ns, ok)
	}
	for _, bad := range []string{"", "hello", "L12", "Lx.1", "L1.y"} {
		if _, _, ok := parseText([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestOptionsRefuseRemoteByDefault(t *testing.T) {
	if _, err := parseOptions([]string{"-url", "wss://skywatch.example/ws"}, io.Discard); err == nil {
		t.Error("a remote URL was accepted without -remote")
	}
	if _, err := parseOptions([]string{"-url", "wss://skywatch.example/ws", "-remote"}, io.Discard); err != nil {
		t.Error(err)
	}
	if _, err := parseOptions([]string{"-url", "ws://127.0.0.1:8080/ws"}, io.Discard); err != nil {
		t.Error(err)
	}
	for _, bad := range [][]string{
		{"-clients", "100000"}, {"-rates", "0"}, {"-rates", "99999"}, {"-hold", "1h"},
	} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestSkywatchParse(t *testing.T) {
	var got []event
	p := skywatchProto{}
	p.parse([]byte(`{"type":"alert","id":"x","text":"L7.99","origin":{"vm":"a","region":"b"},"sent_at":"t"}`), func(e event) { got = append(got, e) })
	p.parse([]byte(`{"type":"ack","nonce":"7","id":"x"}`), func(e event) { got = append(got, e) })
	p.parse([]byte(`{"type":"error","code":"rate_limited","nonce":"8","message":"m"}`), func(e event) { got = append(got, e) })
	if len(got) != 3 || got[0].kind != evAlert || string(got[0].text) != "L7.99" ||
		got[1].kind != evAck || got[1].nonce != 7 || got[2].kind != evError || got[2].code != "rate_limited" {
		t.Fatalf("events = %+v", got)
	}
}

// Two relays, alerts 10 and 11 of a step that starts at 10: the first
// delivery per alert and relay is the broker's path, last − first the
// fan-out; a late alert of an earlier step and an alert nobody got count
// for nothing.
func TestPaths(t *testing.T) {
	p := newPaths(10, 13, 2)
	for _, d := range []struct {
		relay int
		delivery
	}{
		{0, delivery{seq: 10, sock: 30}}, {0, delivery{seq: 10, sock: 36}}, {0, delivery{seq: 10, sock: 31}}, // relay 0: 30, spread 6
		{1, delivery{seq: 10, sock: 50}}, {1, delivery{seq: 10, sock: 51}}, // relay 1: 50, spread 1
		{0, delivery{seq: 11, sock: 40}}, // relay 0 alone: 40, spread 0
		{1, delivery{seq: 9, sock: 999}}, // an earlier step's
	} {
		p.add(d.relay, d.delivery)
	}
	firsts, spreads := p.split()
	if !slices.Equal(firsts, []int64{30, 40, 50}) || !slices.Equal(spreads, []int64{0, 1, 6}) {
		t.Fatalf("firsts %v spreads %v, want [30 40 50] [0 1 6]", firsts, spreads)
	}
}

// The probe publishes and receives on a broker of its own (here the
// in-memory one): take hands over what arrived since the last take, sorted,
// and the subscription is gone after stop.
func TestProbe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b := mempubsub.New(mempubsub.Config{})
	p, err := startProbe(ctx, b, "probe")
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	testkit.Eventually(t, "five probe messages", func() bool {
		lat := p.take()
		if !slices.IsSorted(lat) {
			t.Errorf("take = %v, not sorted", lat)
		}
		got = append(got, lat...)
		return len(got) >= 5
	})
	if slices.ContainsFunc(got, func(us int64) bool { return us < 0 || us > 10_000_000 }) {
		t.Errorf("latencies %v µs: want each between 0 and 10 s", got)
	}
	cancel()
	p.stop()
	if err := b.CheckSubscription(context.Background(), "probe"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("after stop, CheckSubscription = %v, want ErrNotFound", err)
	}
}
