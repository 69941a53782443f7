package main

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/api"
	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/broker/gcppubsub"
	"github.com/skywatch-dev/skywatch/internal/fleet"
	"github.com/skywatch-dev/skywatch/internal/hub"
	"github.com/skywatch-dev/skywatch/internal/iplimit"
	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/token"
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
	// FallbackRelays are other relays' WebSocket URLs the page may fail
	// over to (several relays on one machine; unset on Fly).
	FallbackRelays []string
	RateLimit      rate.Limit
	RateBurst      int
	// SlowBytes and SlowAge are the too-slow policy (hub.Config's
	// MaxQueueBytes and MaxQueueAge); zero means the hub's default.
	SlowBytes int
	SlowAge   time.Duration
	// WriteDelay is hub.Config.WriteDelay.
	WriteDelay time.Duration
	// PublishTimeout bounds one publish, in the hub and in the Pub/Sub
	// client alike (which needs it up front).
	PublishTimeout time.Duration
	// PullStreams is gcppubsub.Config.Streams; zero means its default.
	PullStreams int
	LogFormat   string
	// HeartbeatInterval and OrphanAfter tune the fleet; zero means its
	// defaults.
	HeartbeatInterval time.Duration
	OrphanAfter       time.Duration

	// Who may publish and how much (loadPublish).
	BrowserPublish hub.BrowserPublish
	PublishTokens  *api.Tokens // never logged
	SigningKey     []byte      // never logged
	APIRate        rate.Limit
	APIBurst       int
	PerIP          iplimit.Config
	RelayRate      rate.Limit
	RelayBurst     int

	// WorkloadAudience and ServiceAccountEmail select keyless credentials:
	// the Fly Machine's OIDC token exchanged through workload identity
	// federation (internal/flyoidc). Not secret.
	WorkloadAudience    string
	ServiceAccountEmail string

	// History bounds and resume margin (zero: the hub's defaults).
	HistorySize  int
	HistoryAge   time.Duration
	ResumeMargin time.Duration

	allocGenerated bool
}

// minOrphanBeats is the least ORPHAN_AFTER allowed, in heartbeat intervals.
const minOrphanBeats = 5

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

		WorkloadAudience:    getenv(names.EnvWorkloadIdentityAudience),
		ServiceAccountEmail: getenv(names.EnvServiceAccountEmail),

		PublishTimeout: broker.DefaultPublishTimeout,
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
	switch {
	case c.WorkloadAudience != "" && len(c.Credentials) > 0:
		errs = append(errs, fmt.Errorf("%s and %s are both set: choose keyless or a key", names.EnvWorkloadIdentityAudience, names.EnvServiceAccountKey))
	case c.WorkloadAudience != "" && c.ServiceAccountEmail == "":
		errs = append(errs, fmt.Errorf("%s is set without %s", names.EnvWorkloadIdentityAudience, names.EnvServiceAccountEmail))
	case c.WorkloadAudience != "" && c.Project == "":
		// Without a project the relay would quietly use the embedded broker.
		errs = append(errs, fmt.Errorf("%s is set without %s", names.EnvWorkloadIdentityAudience, names.EnvProject))
	}
	if v := getenv(names.EnvAllowedOrigins); v != "" {
		for _, o := range strings.Split(v, ",") {
			// An empty entry ("/", or nothing between commas) would admit
			// the Origin "null" that sandboxed pages and file:// send.
			if o = strings.TrimRight(strings.TrimSpace(o), "/"); o == "" {
				errs = append(errs, fmt.Errorf("%s: an empty entry; list origins like https://example.com", names.EnvAllowedOrigins))
				continue
			}
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	for _, r := range strings.Split(getenv(names.EnvFallbackRelays), ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if u, err := url.Parse(r); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s %q: want a ws:// or wss:// URL such as ws://localhost:8082/ws", names.EnvFallbackRelays, r))
			continue
		}
		c.FallbackRelays = append(c.FallbackRelays, r)
	}
	c.RateLimit = perSecond(getenv, names.EnvAlertRate, &errs)
	c.RateBurst = count(getenv, names.EnvAlertBurst, &errs)
	errs = append(errs, loadPublish(getenv, &c)...)
	c.HeartbeatInterval = duration(getenv, names.EnvHeartbeatInterval, &errs)
	c.OrphanAfter = duration(getenv, names.EnvOrphanAfter, &errs)
	// A janitor that judges after a few lost heartbeats would delete live
	// relays' subscriptions: keep the silence it needs well above them.
	if iv, oa := cmp.Or(c.HeartbeatInterval, fleet.DefaultInterval), cmp.Or(c.OrphanAfter, fleet.DefaultOrphanAfter); oa < minOrphanBeats*iv {
		errs = append(errs, fmt.Errorf("%s %v: want at least %d × %s (%v)", names.EnvOrphanAfter, oa, minOrphanBeats, names.EnvHeartbeatInterval, iv))
	}
	c.SlowBytes = count(getenv, names.EnvSlowClientBytes, &errs)
	c.SlowAge = duration(getenv, names.EnvSlowClientAge, &errs)
	c.WriteDelay = duration(getenv, names.EnvWriteDelay, &errs)
	if c.PullStreams = count(getenv, names.EnvPullStreams, &errs); c.PullStreams > gcppubsub.MaxStreams {
		errs = append(errs, fmt.Errorf("%s %d: want at most %d", names.EnvPullStreams, c.PullStreams, gcppubsub.MaxStreams))
	}
	c.HistorySize = count(getenv, names.EnvHistorySize, &errs)
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

// loadPublish reads who may publish and how much. Unset values keep the
// defaults of the packages that apply them (zero values).
func loadPublish(getenv func(string) string, c *config) []error {
	var errs []error
	c.BrowserPublish = hub.BrowserPublish(or(getenv(names.EnvBrowserPublish), string(hub.PublishOpen)))
	switch c.BrowserPublish {
	case hub.PublishOpen, hub.PublishOff, hub.PublishSigned:
	default:
		errs = append(errs, fmt.Errorf("%s %q: want open, off or signed", names.EnvBrowserPublish, c.BrowserPublish))
	}
	toks, err := api.ParseTokens(getenv(names.EnvPublishTokens))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", names.EnvPublishTokens, err))
		toks = &api.Tokens{}
	}
	c.PublishTokens = toks
	if key := getenv(names.EnvSigningKey); key != "" {
		if len(key) < token.MinKeyLen {
			errs = append(errs, fmt.Errorf("%s: %d bytes, want at least %d", names.EnvSigningKey, len(key), token.MinKeyLen))
		}
		c.SigningKey = []byte(key)
	} else if c.BrowserPublish == hub.PublishSigned {
		errs = append(errs, fmt.Errorf("%s=signed needs %s", names.EnvBrowserPublish, names.EnvSigningKey))
	}
	c.APIRate = perSecond(getenv, names.EnvAPIRate, &errs)
	c.APIBurst = count(getenv, names.EnvAPIBurst, &errs)
	c.PerIP.Conns = count(getenv, names.EnvIPConnections, &errs)
	c.PerIP.Rate = perSecond(getenv, names.EnvIPAlertRate, &errs)
	c.PerIP.Burst = count(getenv, names.EnvIPAlertBurst, &errs)
	c.RelayRate = perSecond(getenv, names.EnvRelayAlertRate, &errs)
	c.RelayBurst = count(getenv, names.EnvRelayAlertBurst, &errs)
	switch v := getenv(names.EnvTrustFlyClientIP); v {
	case "", "false":
	case "true":
		c.PerIP.TrustFlyClientIP = true
	default:
		errs = append(errs, fmt.Errorf("%s %q: want true or false", names.EnvTrustFlyClientIP, v))
	}
	return errs
}

// count reads an integer >= 1; unset is zero (the default).
func count(getenv func(string) string, name string, errs *[]error) int {
	v := getenv(name)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		*errs = append(*errs, fmt.Errorf("%s %q: want an integer >= 1", name, v))
	}
	return n
}

// perSecond reads a rate > 0 per second; unset is zero (the default).
func perSecond(getenv func(string) string, name string, errs *[]error) rate.Limit {
	v := getenv(name)
	if v == "" {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		*errs = append(*errs, fmt.Errorf("%s %q: want a number per second > 0", name, v))
	}
	return rate.Limit(f)
}

// duration reads a Go duration such as 10s; unset is zero (the default).
func duration(getenv func(string) string, name string, errs *[]error) time.Duration {
	v := getenv(name)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		*errs = append(*errs, fmt.Errorf("%s %q: want a duration > 0 such as 10s", name, v))
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
