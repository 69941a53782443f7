package protocol

import (
	"bytes"
	"testing"
	"time"
)

func TestStrictParsing(t *testing.T) {
	for _, tc := range []struct {
		frame, code, nonce string
	}{
		{`{"type":"hello","type":"alert","nonce":"n"}`, CodeInvalid, "n"},
		{`{"type":"alert","type":"hello"}`, CodeInvalid, ""},
		{`{"type":"alert","text":"a","text":"b"}`, CodeInvalid, ""},
		{`{"type":"alert","nonce":"a","nonce":"b"}`, CodeInvalid, ""},
		{`{"TYPE":"alert","nonce":"n"}`, CodeInvalid, "n"},
		{`{"Type":"alert"}`, CodeInvalid, ""},
		{`{"type":"alert","Text":"ignored","NONCE":"x"}`, "", ""},
	} {
		text, nonce, rej := ParseRequest([]byte(tc.frame))
		if tc.code == "" {
			if rej != nil || text != DefaultText || nonce != "" {
				t.Errorf("%s: (%q, %q, %+v), want the default text: mixed-case keys are unknown keys", tc.frame, text, nonce, rej)
			}
			continue
		}
		if rej == nil || rej.Code != tc.code || rej.Nonce != tc.nonce {
			t.Errorf("%s: %+v, want %s with nonce %q", tc.frame, rej, tc.code, tc.nonce)
		}
	}
}

func TestViaSurvivesDecode(t *testing.T) {
	data := []byte(`{"type":"alert","id":"9f1c0d3a4b5e6f708192a3b4c5d6e7f8","text":"x","origin":{"vm":"a","region":"ams","via":"api"},"sent_at":"2026-11-27T08:00:00.123Z"}`)
	a, _, _, err := DecodeAlert(data)
	if err != nil || a.Origin.Via != ViaAPI {
		t.Fatalf("DecodeAlert: %+v, %v; want origin.via api", a, err)
	}
	if got := string(Encode(a)); got != string(data) {
		t.Errorf("re-encoded %s, want %s", got, data)
	}
	browser := Encode(NewAlert("x", Origin{VM: "a", Region: "ams"}, time.Now()))
	if string(browser) == "" || bytes.Contains(browser, []byte("via")) {
		t.Errorf("a browser's alert %s carries via", browser)
	}
}
