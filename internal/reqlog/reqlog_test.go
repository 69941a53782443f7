package reqlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

func TestClip(t *testing.T) {
	if got := Clip("short"); got != "short" {
		t.Errorf("Clip(short) = %q", got)
	}
	long := strings.Repeat("é", 1000) // 2 bytes each: a cut can fall mid-character
	got := Clip(long)
	if len(got) > MaxValue+32 || !utf8.ValidString(got) || !strings.Contains(got, "(2000 bytes)") {
		t.Errorf("Clip(2000 bytes) = %q (%d bytes), want at most ~%d valid bytes saying the length", got, len(got), MaxValue)
	}
}

func TestLimited(t *testing.T) {
	var buf bytes.Buffer
	l := NewLimited(slog.New(slog.NewTextHandler(&buf, nil)), 1e-9, 3)
	for range 100 {
		l.Info("refused", "k", "v")
	}
	if n := strings.Count(buf.String(), "msg=refused"); n != 3 {
		t.Fatalf("%d lines for 100 events with a burst of 3, want 3", n)
	}
	l.lim = rate.NewLimiter(rate.Inf, 1)
	l.Warn("refused")
	if !strings.Contains(buf.String(), "suppressed=97") {
		t.Errorf("the line after the drops does not count them:\n%s", buf.String())
	}
}
