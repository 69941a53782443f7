package hub

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestBucket(t *testing.T) {
	var b bucket
	for i := range 3 {
		if !b.allow(rate.Every(time.Hour), 3) {
			t.Fatalf("token %d of a full bucket of 3 refused", i+1)
		}
	}
	if b.allow(rate.Every(time.Hour), 3) {
		t.Fatal("a fourth token within the hour allowed")
	}
	// Refills at the rate: pretend a second has passed.
	b.last -= int64(time.Second)
	if !b.allow(rate.Limit(1), 3) {
		t.Fatal("no token a second later at 1/s")
	}
	if b.allow(rate.Limit(1), 3) {
		t.Fatal("two tokens a second later at 1/s")
	}
	// Never above the burst, however long it waited.
	b.last -= int64(time.Hour)
	n := 0
	for b.allow(rate.Limit(1), 3) {
		n++
	}
	if n != 3 {
		t.Errorf("after an hour %d tokens, want the burst of 3", n)
	}

	var inf, none bucket
	for range 1000 {
		if !inf.allow(rate.Inf, 0) {
			t.Fatal("rate.Inf refused a token")
		}
	}
	if none.allow(rate.Limit(5), 0) {
		t.Error("a burst of 0 allowed a token")
	}
}
