package history

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The tests run on synctest's fake clock: ages and coverage are exact, and
// "now" moves only when a test sleeps.

func TestCountBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New[string](Config{Size: 3})
		h.Cover()
		t0 := time.Now()
		time.Sleep(time.Second)
		for i := range 5 {
			h.Add(t0.Add(time.Duration(i)*time.Second), fmt.Sprint(i))
		}
		if n := h.Len(); n != 3 {
			t.Fatalf("Len = %d, want 3", n)
		}
		got, v := h.Since(t0)
		if want := []string{"2", "3", "4"}; !slices.Equal(got, want) {
			t.Errorf("Since(t0) = %v, want %v: the two oldest are pushed out", got, want)
		}
		// "1" (sent at t0+1s) was pushed out: nothing at or before it is vouched for.
		if v.Recovered || !v.From.Equal(t0.Add(time.Second)) {
			t.Errorf("Since(t0) vouch %+v, want not recovered, from t0+1s", v)
		}
		if _, v := h.Since(t0.Add(time.Second)); v.Recovered {
			t.Errorf("Since(sent_at of the last pushed out) recovered, want false: it is missing")
		}
		if got, v := h.Since(t0.Add(time.Second + time.Millisecond)); !v.Recovered || !slices.Equal(got, []string{"2", "3", "4"}) {
			t.Errorf("Since(just after the last pushed out) = %v, %+v; want 2 3 4, recovered", got, v)
		}
	})
}

func TestAgeBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New[string](Config{Age: time.Minute})
		h.Cover()
		start := time.Now()
		h.Add(start, "old")
		time.Sleep(30 * time.Second)
		h.Add(time.Now(), "newer")
		time.Sleep(30*time.Second + time.Nanosecond) // "old" is now past its age
		got, v := h.Since(start)
		if !slices.Equal(got, []string{"newer"}) {
			t.Errorf("after a minute: %v, want only newer", got)
		}
		if v.Recovered || !v.From.Equal(start) {
			t.Errorf("vouch %+v: want not recovered, from the sent_at of the expired entry", v)
		}
		if n := h.Len(); n != 1 {
			t.Errorf("Len = %d, want 1", n)
		}
		time.Sleep(time.Minute)
		if got, _ := h.Since(start); len(got) != 0 || h.Len() != 0 {
			t.Errorf("after two minutes: %v (Len %d), want empty", got, h.Len())
		}
	})
}

func TestDefaults(t *testing.T) {
	c := New[int](Config{}).Config()
	if c.Size != DefaultSize || c.Age != DefaultAge {
		t.Fatalf("defaults %+v, want %d and %v", c, DefaultSize, DefaultAge)
	}
}

// TestCoverage: nothing is vouched for before the subscription receives;
// after boot, a since at or after coverage start is recovered and one before
// it is not; a recreation moves coverage start.
func TestCoverage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New[string](Config{})
		before := time.Now().Add(-time.Second)
		if _, v := h.Since(before); v.Recovered || !v.From.Equal(time.Now()) {
			t.Errorf("before coverage: %+v, want not recovered, from now", v)
		}
		if !h.Coverage().IsZero() {
			t.Errorf("Coverage = %v before Cover, want zero", h.Coverage())
		}

		time.Sleep(time.Second)
		boot := time.Now()
		h.Cover() // boot: the subscription starts receiving
		if !h.Coverage().Equal(boot) {
			t.Errorf("Coverage = %v, want %v", h.Coverage(), boot)
		}
		time.Sleep(time.Second)
		h.Add(time.Now(), "a")
		for _, tc := range []struct {
			name string
			at   time.Time
			want bool
		}{
			{"a nanosecond before coverage", boot.Add(-time.Nanosecond), false},
			{"at coverage start", boot, true},
			{"after coverage start", boot.Add(time.Millisecond), true},
			{"in the future", time.Now().Add(time.Hour), true},
		} {
			if _, v := h.Since(tc.at); v.Recovered != tc.want || !v.From.Equal(boot) {
				t.Errorf("%s: %+v, want recovered %v from %v", tc.name, v, tc.want, boot)
			}
		}

		// The subscription vanished and was recreated: alerts sent while it
		// was gone never arrived, so coverage starts over. What was held
		// stays and is still replayed.
		time.Sleep(time.Second)
		recreated := time.Now()
		h.Cover()
		got, v := h.Since(boot)
		if v.Recovered || !v.From.Equal(recreated) || !slices.Equal(got, []string{"a"}) {
			t.Errorf("after a recreation, since boot: %v %+v; want [a], not recovered, from %v", got, v, recreated)
		}
		if _, v := h.Since(recreated); !v.Recovered {
			t.Errorf("after a recreation, since then: %+v, want recovered", v)
		}
	})
}

// TestOrder: entries are kept in receive order but replayed oldest sent
// first, and the filter is by sent_at, inclusive.
func TestOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New[string](Config{})
		h.Cover()
		t0 := time.Now()
		time.Sleep(time.Minute)
		h.Add(t0.Add(3*time.Second), "c")
		h.Add(t0.Add(1*time.Second), "a")
		h.Add(t0.Add(2*time.Second), "b")
		h.Add(t0.Add(2*time.Second), "b2")
		got, v := h.Since(t0.Add(2 * time.Second))
		if !slices.Equal(got, []string{"b", "b2", "c"}) || !v.Recovered {
			t.Errorf("Since(t0+2s) = %v %+v, want [b b2 c], recovered", got, v)
		}
	})
}

// TestConcurrent is for the race detector: adds and reads at once.
func TestConcurrent(t *testing.T) {
	h := New[int](Config{Size: 100})
	h.Cover()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				h.Add(time.Now(), g*1000+i)
				if i%50 == 0 {
					got, _ := h.Since(time.Now().Add(-time.Hour))
					if len(got) > 100 {
						t.Errorf("%d entries, want at most 100", len(got))
					}
					_ = h.Len()
				}
			}
		})
	}
	wg.Wait()
	if h.Len() != 100 {
		t.Errorf("Len = %d, want 100", h.Len())
	}
}

// BenchmarkSince is the cost of one resume against a full default history
// (one alert every 50 ms, 20 alerts/s): replaying all of it, and the usual
// case of a client away for a moment (the last 100, the 5 s margin's worth).
func BenchmarkSince(b *testing.B) {
	h := New[*int](Config{})
	h.Cover()
	now := time.Now()
	const every = 50 * time.Millisecond
	for i := range DefaultSize {
		v := i
		h.Add(now.Add(time.Duration(i)*every), &v)
	}
	for _, tc := range []struct {
		name string
		n    int
	}{{"all-1000", DefaultSize}, {"last-100", 100}} {
		b.Run(tc.name, func(b *testing.B) {
			since := now.Add(time.Duration(DefaultSize-tc.n) * every)
			b.ReportAllocs()
			for b.Loop() {
				if got, _ := h.Since(since); len(got) != tc.n {
					b.Fatalf("%d replayed, want %d", len(got), tc.n)
				}
			}
		})
	}
}
