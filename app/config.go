package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/hub"
	"github.com/skywatch-dev/skywatch/internal/names"
)

// config is everything the relay reads from its environment.
type config struct {
	Port           string
	AllocID        string
	Region         string
	Project        string
	EmulatorHost   string
	Topic          string
	SubPrefix      string
	Credentials    []byte // service-account key JSON; never logged
	AllowedOrigins []string
	RateLimit      rate.Limit
	RateBurst      int
	// PublishTimeout bounds one publish, in the hub and in the Pub/Sub
	// client alike (which needs it up front).
	PublishTimeout time.Duration
	LogFormat      string
	// History bounds and resume margin (zero: the hub's defaults).
	HistorySize  int
	HistoryAge   time.Duration
	ResumeMargin time.Duration

	allocGenerated bool
}

// defaultProject names the project on an emulator, which accepts any.
const defaultProject = "skywatch-local"

// loadConfig reads the environment through getenv. Unset values get their
// documented defaults; values that are set but wrong are errors, because
// a relay that quietly ignores its configuration is harder to debug than
// one that will not start.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		Port:         or(getenv(names.EnvPort), "8080"),
		AllocID:      getenv(names.EnvAllocID),
		Region:       or(getenv(names.EnvRegion), hub.DefaultRegion),
		Project:      getenv(names.EnvProject),
		EmulatorHost: getenv(names.EnvEmulatorHost),
		Topic:        or(getenv(names.EnvTopic), names.DefaultTopic),
		SubPrefix:    or(getenv(names.EnvSubscriptionPrefix), names.DefaultSubscriptionPrefix),
		LogFormat:    or(getenv(names.EnvLogFormat), "text"),

		PublishTimeout: hub.DefaultPublishTimeout,
	}
	var errs []error
	if p, err := strconv.Atoi(c.Port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("%s %q: want a port number", names.EnvPort, c.Port))
	}
	if c.AllocID == "" {
		c.AllocID = randomID()
		c.allocGenerated = true
	}
	if c.EmulatorHost != "" && c.Project == "" {
		c.Project = defaultProject
	}
	if key := getenv(names.EnvServiceAccountKey); key != "" {
		creds, err := decodeKey(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", names.EnvServiceAccountKey, err))
		}
		c.Credentials = creds
	}
	for _, o := range strings.Split(getenv(names.EnvAllowedOrigins), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, strings.TrimRight(o, "/"))
		}
	}
	if v := getenv(names.EnvAlertRate); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			errs = append(errs, fmt.Errorf("%s %q: want alerts per second > 0", names.EnvAlertRate, v))
		}
		c.RateLimit = rate.Limit(f)
	}
	if v := getenv(names.EnvAlertBurst); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("%s %q: want an integer >= 1", names.EnvAlertBurst, v))
		}
		c.RateBurst = n
	}
	if v := getenv(names.EnvHistorySize); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("%s %q: want an integer >= 1", names.EnvHistorySize, v))
		}
		c.HistorySize = n
	}
	c.HistoryAge = duration(getenv, names.EnvHistoryAge, &errs)
	c.ResumeMargin = duration(getenv, names.EnvResumeMargin, &errs)
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("%s %q: want text or json", names.EnvLogFormat, c.LogFormat))
	}
	return c, errors.Join(errs...)
}

// brokerKind says which broker the configuration selects.
func (c config) brokerKind() string {
	switch {
	case c.EmulatorHost != "":
		return "emulator"
	case c.Project != "":
		return "gcp"
	default:
		return "embedded"
	}
}

// decodeKey accepts the service-account key as raw JSON or as base64 of
// it (the infra program stores base64, which survives `flyctl secrets
// import`'s one-line format). The key is checked to be a JSON object so a
// truncated secret fails at start, not at the first publish.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	b := []byte(s)
	if !strings.HasPrefix(s, "{") {
		var err error
		b, err = base64.StdEncoding.DecodeString(s)
		if err != nil {
			// Never quote the value: it is a secret.
			return nil, errors.New("neither JSON nor base64")
		}
	}
	var probe struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, errors.New("not a JSON key")
	}
	return b, nil
}

// duration reads a positive Go duration ("10m", "5s"); unset is zero.
func duration(getenv func(string) string, name string, errs *[]error) time.Duration {
	v := getenv(name)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		*errs = append(*errs, fmt.Errorf("%s %q: want a duration > 0 such as 10m or 5s", name, v))
	}
	return d
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func randomID() string {
	b := make([]byte, 7)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}
