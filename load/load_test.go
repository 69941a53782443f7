package main

import (
	"io"
	"testing"
	"time"
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
