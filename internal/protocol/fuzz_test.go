package protocol

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// Seeds: the documented cases and the ones an adversarial pass found. `go
// test` runs them as unit tests; `make fuzz` explores from them.
var seeds = []string{
	`{"type":"alert","text":"Lights over the harbour","nonce":"c-42"}`,
	`{"type":"alert"}`,
	`{"text":"hi"}`,
	`{}`,
	`{"type":"hello","type":"alert"}`,
	`{"TYPE":"alert"}`,
	`{"type":"alert","text":"a","text":"b"}`,
	`{"type":"alert","nonce":"a","nonce":"b"}`,
	`{"type":"alert"} x`,
	`{"type":"alert","text":"\uD83D\uDC7D","nonce":null}`,
	`{"type":"alert","text":"\ud800"}`,
	`[1,2]`, `null`, `"alert"`, ``, `{`, `{"type":`,
	`{"type":"alert","x":{"y":[1,{"z":null}]},"text":" "}`,
	"{\"type\":\"alert\",\"text\":\"\xff\xfe\"}",
}

// checkAccepted holds for anything a parser accepts: valid JSON, text and
// nonce within the limits, and the same result from re-encoded input.
func checkAccepted(t *testing.T, data []byte, text, nonce string, reparse func([]byte) (string, string, *Rejection)) {
	t.Helper()
	if !json.Valid(data) {
		t.Fatalf("accepted invalid JSON %q", data)
	}
	if text == "" || strings.TrimSpace(text) == "" || utf8.RuneCountInString(text) > MaxTextRunes || !utf8.ValidString(text) {
		t.Fatalf("accepted %q with text %q", data, text)
	}
	if utf8.RuneCountInString(nonce) > MaxNonceRunes {
		t.Fatalf("accepted %q with nonce %q", data, nonce)
	}
	again, _ := json.Marshal(map[string]string{"type": TypeAlert, "text": text, "nonce": nonce})
	t2, n2, rej := reparse(again)
	if rej != nil || t2 != text || n2 != nonce {
		t.Fatalf("%q parsed as (%q, %q) but its re-encoding %s as (%q, %q, %v)", data, text, nonce, again, t2, n2, rej)
	}
}

func checkRejected(t *testing.T, data []byte, rej *Rejection) {
	t.Helper()
	if rej.Code != CodeInvalid && rej.Code != CodeTooLarge || rej.Message == "" {
		t.Fatalf("%q: rejection %+v, want invalid or too_large with a message", data, rej)
	}
	if utf8.RuneCountInString(rej.Nonce) > MaxNonceRunes {
		t.Fatalf("%q: echoes an over-long nonce", data)
	}
}

// FuzzParseRequest fuzzes the client frame decoder.
func FuzzParseRequest(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		text, nonce, rej := ParseRequest(data)
		if rej != nil {
			checkRejected(t, data, rej)
			return
		}
		checkAccepted(t, data, text, nonce, ParseRequest)
	})
}

// FuzzParsePublish fuzzes the body parser of POST /api/alerts.
func FuzzParsePublish(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		text, nonce, rej := ParsePublish(data)
		if rej != nil {
			checkRejected(t, data, rej)
			return
		}
		checkAccepted(t, data, text, nonce, ParsePublish)
	})
}

// FuzzDecodeAlert fuzzes the decoder of broker messages: whatever it
// accepts re-encodes to an alert it accepts again, unchanged.
func FuzzDecodeAlert(f *testing.F) {
	f.Add([]byte(`{"type":"alert","id":"9f1c0d3a4b5e6f708192a3b4c5d6e7f8","text":"x","origin":{"vm":"a","region":"ams","via":"api"},"sent_at":"2026-11-27T08:00:00.123Z"}`))
	f.Add([]byte(`{"type":"alert","id":"9f1c0d3a4b5e6f708192a3b4c5d6e7f8","text":"x","origin":{"vm":"a","region":"ams"},"sent_at":"2026-11-27T08:00:00.123Z"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, key, sent, err := DecodeAlert(data)
		if err != nil {
			return
		}
		b, key2, sent2, err := DecodeAlert(Encode(a))
		if err != nil || b != a || key2 != key || !sent2.Equal(sent) {
			t.Fatalf("%q decoded as %+v, its re-encoding as %+v (%v)", data, a, b, err)
		}
	})
}
