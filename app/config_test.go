package main

import (
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/time/rate"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDefaults(t *testing.T) {
	c, err := loadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "8080" || c.Region != "local" || c.Topic != "ALIEN_NOTIFICATIONS" || c.SubPrefix != "ID_" {
		t.Errorf("defaults: %+v", c)
	}
	if c.AllocID == "" || !c.allocGenerated {
		t.Errorf("no random alloc id: %+v", c)
	}
	if other, _ := loadConfig(env(nil)); other.AllocID == c.AllocID {
		t.Errorf("two random alloc ids are both %q", c.AllocID)
	}
	if c.brokerKind() != "embedded" {
		t.Errorf("broker = %s, want embedded", c.brokerKind())
	}
}

func TestConfigBrokerChoice(t *testing.T) {
	for _, tc := range []struct {
		env        map[string]string
		kind, proj string
	}{
		{map[string]string{}, "embedded", ""},
		{map[string]string{"PUBSUB_EMULATOR_HOST": "localhost:8085"}, "emulator", defaultProject},
		{map[string]string{"PUBSUB_EMULATOR_HOST": "localhost:8085", "GOOGLE_CLOUD_PROJECT": "p"}, "emulator", "p"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p"}, "gcp", "p"},
	} {
		c, err := loadConfig(env(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		if c.brokerKind() != tc.kind || c.Project != tc.proj {
			t.Errorf("%v: kind %s project %q, want %s %q", tc.env, c.brokerKind(), c.Project, tc.kind, tc.proj)
		}
	}
}

func TestConfigValues(t *testing.T) {
	c, err := loadConfig(env(map[string]string{
		"PORT": "9000", "FLY_ALLOC_ID": "abc", "FLY_REGION": "ams", "PUBSUB_TOPIC": "T",
		"ALLOWED_ORIGINS": " https://a.example/ , https://b.example", "ALERT_RATE": "2.5", "ALERT_BURST": "4",
		"LOG_FORMAT": "json", "PUBSUB_STREAMS": "2",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "9000" || c.AllocID != "abc" || c.allocGenerated || c.Region != "ams" || c.Topic != "T" {
		t.Errorf("values: %+v", c)
	}
	if strings.Join(c.AllowedOrigins, "|") != "https://a.example|https://b.example" {
		t.Errorf("origins = %q", c.AllowedOrigins)
	}
	if c.RateLimit != rate.Limit(2.5) || c.RateBurst != 4 || c.LogFormat != "json" || c.PullStreams != 2 {
		t.Errorf("rate %v burst %d log %s streams %d", c.RateLimit, c.RateBurst, c.LogFormat, c.PullStreams)
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	for name, val := range map[string]string{
		"PORT": "http", "ALERT_RATE": "-1", "ALERT_BURST": "0", "LOG_FORMAT": "xml", "GCP_SERVICE_ACCOUNT_KEY": "not a key!",
		"PUBSUB_STREAMS": "17",
	} {
		_, err := loadConfig(env(map[string]string{name: val}))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: err = %v, want one naming %s", name, val, err, name)
		}
	}
}

const fakeKey = `{"type":"service_account","project_id":"p","private_key":"-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n"}`

func TestServiceAccountKeyRawOrBase64(t *testing.T) {
	for name, v := range map[string]string{
		"raw":    fakeKey,
		"base64": base64.StdEncoding.EncodeToString([]byte(fakeKey)),
		"padded": "\n" + base64.StdEncoding.EncodeToString([]byte(fakeKey)) + "\n",
	} {
		c, err := loadConfig(env(map[string]string{"GCP_SERVICE_ACCOUNT_KEY": v}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(c.Credentials) != fakeKey {
			t.Errorf("%s: credentials = %q", name, c.Credentials)
		}
	}
	// A broken key is an error that never quotes the secret.
	bad := base64.StdEncoding.EncodeToString([]byte(`{"type":"service_account","private_key":"SECRET`))
	_, err := loadConfig(env(map[string]string{"GCP_SERVICE_ACCOUNT_KEY": bad}))
	if err == nil {
		t.Fatal("truncated key accepted")
	}
	if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), bad) {
		t.Fatalf("error reveals the key: %v", err)
	}
}
