package protocol

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time // zero: invalid
	}{
		{"2026-11-27T07:59:58.123Z", now.Add(-1877 * time.Millisecond)},
		{"2026-11-27T07:59:58Z", now.Add(-2 * time.Second)},
		{"2026-11-27T07:59:58.123456789Z", now.Add(-2*time.Second + 123456789)},
		{"2026-11-27t07:59:58z", now.Add(-2 * time.Second)},
		{"2026-11-27T08:59:58+01:00", now.Add(-2 * time.Second)},
		{"2026-11-27T08:00:59Z", now.Add(59 * time.Second)}, // a fast clock elsewhere
		{"2026-11-27T08:01:01Z", time.Time{}},               // too far ahead
		{"", time.Time{}},
		{"yesterday", time.Time{}},
		{"1764230400", time.Time{}},
		{"2026-11-27 07:59:58Z", time.Time{}},
		{"2026-11-27", time.Time{}},
	} {
		got, err := ParseSince(tc.in, now)
		if tc.want.IsZero() {
			if err == nil {
				t.Errorf("ParseSince(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestSentAtRoundTrips(t *testing.T) {
	now := time.Now()
	a := NewAlert("x", Origin{VM: "a", Region: "b"}, now)
	got, err := ParseSince(a.SentAt, now)
	if err != nil || got.Format(SentAtLayout) != a.SentAt {
		t.Fatalf("sent_at %q parsed as %v, %v", a.SentAt, got, err)
	}
}

func TestResumedFrame(t *testing.T) {
	from := time.Date(2026, 11, 27, 8, 0, 0, 1, time.UTC) // rounds up
	got := string(Encode(NewResumed(false, 3, from)))
	want := `{"type":"resumed","recovered":false,"replayed":3,"from":"2026-11-27T08:00:00.001Z"}`
	if got != want {
		t.Fatalf("resumed frame %s, want %s", got, want)
	}
	var r Resumed
	if err := json.Unmarshal([]byte(want), &r); err != nil || r.Replayed != 3 {
		t.Fatal(r, err)
	}
}
