package main

import (
	"testing"
	"time"
)

func TestConfigSlowClientPolicy(t *testing.T) {
	c, err := loadConfig(env(map[string]string{"SLOW_CLIENT_BYTES": "2097152", "SLOW_CLIENT_AGE": "30s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.SlowBytes != 2<<20 || c.SlowAge != 30*time.Second {
		t.Errorf("slow policy = %d bytes, %v; want 2097152, 30s", c.SlowBytes, c.SlowAge)
	}
	if c, _ := loadConfig(env(nil)); c.SlowBytes != 0 || c.SlowAge != 0 {
		t.Errorf("unset slow policy = %d, %v; want zero (the hub's defaults)", c.SlowBytes, c.SlowAge)
	}
	for _, bad := range []map[string]string{
		{"SLOW_CLIENT_BYTES": "0"}, {"SLOW_CLIENT_BYTES": "1MiB"},
		{"SLOW_CLIENT_AGE": "10"}, {"SLOW_CLIENT_AGE": "-1s"},
	} {
		if _, err := loadConfig(env(bad)); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
