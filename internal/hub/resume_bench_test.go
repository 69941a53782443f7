package hub

import (
	"context"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// BenchmarkHistoryMemory reports what a full history costs at the default
// size: the heap held after DefaultHistorySize alerts were broadcast to one
// client (so each alert's prepared message holds its encoded frame, as in
// production), less the heap before. It includes the dedup ring's entries
// for those ids (about 50 bytes each). Run: go test -run '^$' -bench
// HistoryMemory ./internal/hub/
func BenchmarkHistoryMemory(b *testing.B) {
	for _, tc := range []struct{ name, text string }{
		{"typical-40-chars", strings.Repeat("x", 40)},
		{"longest-280-emoji", strings.Repeat("👽", protocol.MaxTextRunes)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var perHistory float64
			for b.Loop() {
				perHistory = historyHeap(b, tc.text)
			}
			b.ReportMetric(perHistory, "B/history")
			b.ReportMetric(perHistory/DefaultHistorySize, "B/alert")
		})
	}
}

func historyHeap(b *testing.B, text string) float64 {
	b.Helper()
	tr := New(Config{MaxQueueBytes: 16 << 20}, &loopback{}) // room for a whole replay of the longest texts
	tr.CoverageStarts()
	srv := httptest.NewServer(tr)
	defer srv.Close()
	defer tr.Close(context.Background())
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, _, err := conn.ReadMessage(); err != nil { // hello
		b.Fatal(err)
	}
	msgs := make([][]byte, DefaultHistorySize)
	for i := range msgs {
		msgs[i] = protocol.Encode(protocol.Alert{
			Type: protocol.TypeAlert, ID: testID(i), Text: text,
			Origin: protocol.Origin{VM: "148ed193b95e28", Region: "ams"},
			SentAt: time.Now().UTC().Format(protocol.SentAtLayout),
		})
	}
	before := heap()
	for _, m := range msgs {
		tr.Deliver(m)
	}
	// Read them all: each prepared message now holds its encoded frame.
	for range DefaultHistorySize {
		if _, _, err := conn.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
	after := heap()
	if n := tr.rs.history.Len(); n != DefaultHistorySize {
		b.Fatalf("history holds %d", n)
	}
	runtime.KeepAlive(msgs)
	return float64(after) - float64(before)
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
