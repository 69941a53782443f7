package main

import (
	"strings"
	"testing"
)

// FALLBACK_RELAYS takes ws:// and wss:// URLs only: they end up in the
// hello and in the page's content security policy.
func TestFallbackRelays(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "FALLBACK_RELAYS" {
				return v
			}
			return ""
		}
	}
	c, err := loadConfig(env(" ws://localhost:8082/ws, wss://relay.example/ws ,"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.FallbackRelays, " "); got != "ws://localhost:8082/ws wss://relay.example/ws" {
		t.Errorf("FallbackRelays = %q", got)
	}
	if c, err := loadConfig(env("")); err != nil || c.FallbackRelays != nil {
		t.Errorf("unset: got %v, %v; want none", c.FallbackRelays, err)
	}
	for _, bad := range []string{"http://localhost:8082/ws", "localhost:8082", "ws:///ws", "javascript:alert(1)"} {
		if _, err := loadConfig(env(bad)); err == nil || !strings.Contains(err.Error(), "FALLBACK_RELAYS") {
			t.Errorf("FALLBACK_RELAYS=%s: got %v, want an error naming the variable", bad, err)
		}
	}
}
