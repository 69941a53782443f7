// Package names is the vocabulary every part of Skywatch agrees on: the
// topic's default name, the per-VM subscription prefix and naming rule, and
// the names of the environment variables and secrets that carry the relay's
// configuration. The relay (app/), the Pulumi program (infra/) and the e2e
// suite import it, so nobody types these strings twice.
package names

import (
	"regexp"
	"strings"
)

// Pub/Sub defaults.
const (
	// DefaultTopic is the topic every relay publishes to and subscribes on.
	DefaultTopic = "ALIEN_NOTIFICATIONS"
	// DefaultSubscriptionPrefix goes before a VM's alloc id to name its
	// subscription: ID_<FLY_ALLOC_ID>.
	DefaultSubscriptionPrefix = "ID_"
)

// Environment variables the relay reads. The secret ones are set by the
// infra program (`pulumi up`) on the Fly app and never logged.
const (
	EnvPort               = "PORT"
	EnvAllocID            = "FLY_ALLOC_ID"
	EnvRegion             = "FLY_REGION"
	EnvProject            = "GOOGLE_CLOUD_PROJECT"
	EnvEmulatorHost       = "PUBSUB_EMULATOR_HOST"
	EnvTopic              = "PUBSUB_TOPIC"
	EnvSubscriptionPrefix = "PUBSUB_SUBSCRIPTION_PREFIX"
	EnvPullStreams        = "PUBSUB_STREAMS"          // pull streams per subscription
	EnvServiceAccountKey  = "GCP_SERVICE_ACCOUNT_KEY" // secret
	EnvAllowedOrigins     = "ALLOWED_ORIGINS"
	EnvAlertRate          = "ALERT_RATE"
	EnvAlertBurst         = "ALERT_BURST"
	EnvSlowClientBytes    = "SLOW_CLIENT_BYTES" // hub.Config.MaxQueueBytes
	EnvSlowClientAge      = "SLOW_CLIENT_AGE"   // hub.Config.MaxQueueAge, a Go duration
	EnvLogFormat          = "LOG_FORMAT"
	EnvHeartbeatInterval  = "HEARTBEAT_INTERVAL" // a Go duration, e.g. 10s
	EnvOrphanAfter        = "ORPHAN_AFTER"       // a Go duration, e.g. 10m
	// EnvFallbackRelays lists other relays' WebSocket URLs the page may fail
	// over to, for several relays on one machine (on Fly leave it unset).
	EnvFallbackRelays = "FALLBACK_RELAYS"

	// Resuming clients (docs/protocol.md): the history's bounds and the
	// margin subtracted from a client's since.
	EnvWriteDelay   = "WRITE_DELAY"
	EnvHistorySize  = "HISTORY_SIZE"
	EnvHistoryAge   = "HISTORY_AGE"
	EnvResumeMargin = "RESUME_MARGIN"

	// Who may publish (docs/protocol.md, README "Publishing").
	EnvBrowserPublish   = "BROWSER_PUBLISH"     // open, off or signed
	EnvPublishTokens    = "PUBLISH_TOKENS"      // secret: bearer tokens of POST /api/alerts
	EnvSigningKey       = "PUBLISH_SIGNING_KEY" // secret: signs browser tokens
	EnvAPIRate          = "API_RATE"            // alerts/s per API token
	EnvAPIBurst         = "API_BURST"
	EnvIPConnections    = "IP_MAX_CONNECTIONS" // WebSockets per client address
	EnvIPAlertRate      = "IP_ALERT_RATE"      // alerts/s per client address
	EnvIPAlertBurst     = "IP_ALERT_BURST"
	EnvRelayAlertRate   = "RELAY_ALERT_RATE" // alerts/s from all of a relay's browsers
	EnvRelayAlertBurst  = "RELAY_ALERT_BURST"
	EnvTrustFlyClientIP = "TRUST_FLY_CLIENT_IP" // "true" behind Fly's proxy only
)

// Environment variables of the CLI (`skywatch publish`).
const (
	EnvURL   = "SKYWATCH_URL"   // the deployment, e.g. https://my-skywatch.fly.dev
	EnvToken = "SKYWATCH_TOKEN" // secret: one of the deployment's PUBLISH_TOKENS
)

// Keyless credentials (Fly OIDC token -> Google workload identity
// federation, internal/flyoidc). Not secret: they name a provider and an
// account, and grant nothing without the Fly Machine's own token. infra/
// exports them and they go into fly.toml's [env].
const (
	EnvWorkloadIdentityAudience = "GCP_WORKLOAD_IDENTITY_AUDIENCE"
	EnvServiceAccountEmail      = "GCP_SERVICE_ACCOUNT_EMAIL"
)

// Pub/Sub's rules for topic and subscription IDs: a letter first, then
// letters, digits and - _ . ~ + %, 3 to 255 characters in all, and not
// starting with "goog".
var (
	idRe     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$`)
	prefixRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_.~+%]{0,254}$`)
)

// ValidID reports whether id is a valid Pub/Sub topic or subscription ID.
func ValidID(id string) bool { return idRe.MatchString(id) && !isGoog(id) }

// ValidPrefix reports whether p can start a subscription ID: the rest is
// the alloc id, which Subscription makes valid.
func ValidPrefix(p string) bool { return prefixRe.MatchString(p) && !isGoog(p) }

func isGoog(s string) bool { return strings.HasPrefix(strings.ToLower(s), "goog") }

// Subscription builds a VM's subscription name from a prefix and its alloc
// id. Characters outside Pub/Sub's set are replaced with '_', and an empty or
// non-letter start (or one Pub/Sub reserves) gets DefaultSubscriptionPrefix
// in front, so the result is always a valid ID.
func Subscription(prefix, allocID string) string {
	clean := func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		case strings.ContainsRune("-_.~+%", r):
			return r
		}
		return '_'
	}
	name := strings.Map(clean, prefix+allocID)
	if name == "" || !isLetter(name[0]) || isGoog(name) {
		name = DefaultSubscriptionPrefix + name
	}
	for len(name) < 3 {
		name += "_"
	}
	if len(name) > 255 {
		name = name[:255]
	}
	return name
}

func isLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }
