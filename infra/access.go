package main

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pulumi/pulumi-command/sdk/go/command/local"
	"github.com/pulumi/pulumi-gcp/sdk/v7/go/gcp/projects"
	"github.com/pulumi/pulumi-gcp/sdk/v7/go/gcp/pubsub"
	"github.com/pulumi/pulumi-gcp/sdk/v7/go/gcp/serviceaccount"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/skywatch-dev/skywatch/internal/names"
)

// Defaults for the zero values of RelayAccessArgs. The topic and prefix
// come from the vocabulary the relay uses (internal/names).
const (
	DefaultAccountID  = "skywatch-relay"
	DefaultKeyVersion = 1
	DefaultAuth       = AuthKeyless
	DefaultPoolID     = "skywatch-fly"
)

// How the relay authenticates to Google Cloud (stack config skywatch:auth).
const (
	// AuthKeyless: the relay exchanges its Fly Machine's OIDC token for
	// the service account's access token (workload identity federation).
	// No key exists. The default, and the only path in organisations that
	// enforce iam.disableServiceAccountKeyCreation (Google's default for
	// organisations created since 3 May 2024).
	AuthKeyless = "keyless"
	// AuthKey: a service-account key handed to Fly as a secret, for hosts
	// without OIDC. Rotated with skywatch:keyVersion.
	AuthKey = "key"
)

// Names of the Fly secrets the relay reads. The key is stored as Google's
// privateKey output, which is base64 of the JSON key file: one line, so
// it survives flyctl's NAME=VALUE import format, and the relay accepts
// base64 as well as raw JSON.
const (
	KeySecretName     = names.EnvServiceAccountKey
	ProjectSecretName = names.EnvProject
)

// topicPermissions are checked by Pub/Sub on the topic, so they are
// granted on the topic alone (docs/iam.md maps each to the relay's calls).
var topicPermissions = []string{
	"pubsub.topics.attachSubscription", // CreateSubscription, on the topic
	"pubsub.topics.get",                // GetTopic: check it exists, never create it; ListTopicSubscriptions (the janitor)
	"pubsub.topics.publish",            // Publish
}

// subscriptionPermissions are checked on the project (create) or on
// subscriptions the relay makes at boot, which do not exist when `pulumi up`
// runs, so they can only be granted on the project. Pub/Sub does not
// recognise IAM Conditions on resource.name, so the ID_ prefix cannot
// narrow them; docs/iam.md explains and suggests a dedicated project.
var subscriptionPermissions = []string{
	"pubsub.subscriptions.consume", // StreamingPull, Acknowledge, ModifyAckDeadline, Seek to a time
	"pubsub.subscriptions.create",  // CreateSubscription, on the project
	"pubsub.subscriptions.delete",  // DeleteSubscription at shutdown or before recreating
	"pubsub.subscriptions.get",     // GetSubscription polling
}

type api struct{ name, service string }

// requiredAPIs are enabled before anything else: Pub/Sub for the topic,
// IAM for the account, key, custom roles and (keyless) the workload
// identity pool, Resource Manager for the project-level role binding.
var requiredAPIs = []api{
	{"pubsub-api", "pubsub.googleapis.com"},
	{"iam-api", "iam.googleapis.com"},
	{"resourcemanager-api", "cloudresourcemanager.googleapis.com"},
}

// keylessAPIs are what the relay calls to trade its Fly token: the
// Security Token Service, then IAM Credentials to act as its account.
var keylessAPIs = []api{
	{"sts-api", "sts.googleapis.com"},
	{"iamcredentials-api", "iamcredentials.googleapis.com"},
}

// RelayAccessArgs configures NewRelayAccess. Zero values mean the defaults
// above; Project and FlyApp are required.
type RelayAccessArgs struct {
	Project            string // Google Cloud project ID
	FlyApp             string // Fly app that receives the key as a secret
	Topic              string // topic ID, default ALIEN_NOTIFICATIONS
	SubscriptionPrefix string // what the relay puts before FLY_ALLOC_ID, default ID_
	AccountID          string // service account ID, default skywatch-relay
	Auth               string // AuthKeyless (default) or AuthKey
	KeyVersion         int    // key path: bump to rotate the key, default 1
	FlyOrg             string // keyless: the Fly org slug that owns FlyApp; required
	PoolID             string // keyless: workload identity pool ID, default skywatch-fly
}

// RelayAccess is everything a relay on Fly needs from Google Cloud: the
// topic, an account that may use it and nothing else, and a way for the
// Fly app's machines to act as that account: workload identity federation
// (keyless) or a key delivered to the app as a secret.
type RelayAccess struct {
	pulumi.ResourceState

	TopicName           pulumi.StringOutput
	TopicID             pulumi.StringOutput // projects/P/topics/T
	ServiceAccountEmail pulumi.StringOutput
	SubscriptionPrefix  pulumi.StringOutput

	auth string
	// Key path only.
	KeyVersion pulumi.IntOutput
	// Keyless only: the provider's audience, and the non-secret
	// environment the relay needs (names.Env*), for fly.toml's [env].
	WorkloadIdentityAudience pulumi.StringOutput
	RelayEnv                 pulumi.StringMapOutput
}

// Outputs are what the component registers and what the stack exports.
// The key is deliberately absent: it exists only as the Fly secret. A key
// stack exports exactly what it did before keyless existed.
func (r *RelayAccess) Outputs() pulumi.Map {
	out := pulumi.Map{
		"topic":               r.TopicName,
		"topicId":             r.TopicID,
		"serviceAccountEmail": r.ServiceAccountEmail,
		"subscriptionPrefix":  r.SubscriptionPrefix,
	}
	if r.auth == AuthKey {
		out["keyVersion"] = r.KeyVersion
	} else {
		out["workloadIdentityAudience"] = r.WorkloadIdentityAudience
		out["relayEnv"] = r.RelayEnv
	}
	return out
}

// Resource names accepted by Google, checked here so that a typo in stack
// config fails at preview instead of halfway through `pulumi up`.
var (
	// Service account IDs: 6 to 30 lowercase letters, digits and hyphens,
	// starting with a letter and not ending with a hyphen.
	accountIDRe = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	// Fly app names and org slugs: lowercase letters, digits and hyphens.
	flyAppRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	// Workload identity pool IDs: 4 to 32 lowercase letters, digits and
	// hyphens; Google reserves the gcp- prefix.
	poolIDRe = regexp.MustCompile(`^[a-z0-9-]{4,32}$`)
)

// withDefaults fills zero values and validates the result.
func (a RelayAccessArgs) withDefaults() (RelayAccessArgs, error) {
	if a.Topic == "" {
		a.Topic = names.DefaultTopic
	}
	if a.SubscriptionPrefix == "" {
		a.SubscriptionPrefix = names.DefaultSubscriptionPrefix
	}
	if a.AccountID == "" {
		a.AccountID = DefaultAccountID
	}
	if a.KeyVersion == 0 {
		a.KeyVersion = DefaultKeyVersion
	}
	if a.Auth == "" {
		a.Auth = DefaultAuth
	}
	if a.PoolID == "" {
		a.PoolID = DefaultPoolID
	}
	var errs []error
	if a.Project == "" {
		errs = append(errs, errors.New("project: required (pulumi config set gcp:project ...)"))
	}
	if !flyAppRe.MatchString(a.FlyApp) {
		errs = append(errs, fmt.Errorf("fly app %q: want lowercase letters, digits and hyphens (pulumi config set flyApp ...)", a.FlyApp))
	}
	if !names.ValidID(a.Topic) {
		errs = append(errs, fmt.Errorf("topic %q: not a valid Pub/Sub topic ID", a.Topic))
	}
	if !names.ValidPrefix(a.SubscriptionPrefix) {
		errs = append(errs, fmt.Errorf("subscription prefix %q: not a valid start of a Pub/Sub subscription ID", a.SubscriptionPrefix))
	}
	if !accountIDRe.MatchString(a.AccountID) {
		errs = append(errs, fmt.Errorf("account ID %q: want 6-30 lowercase letters, digits and hyphens", a.AccountID))
	}
	if a.KeyVersion < 1 {
		errs = append(errs, fmt.Errorf("key version %d: want 1 or more", a.KeyVersion))
	}
	switch a.Auth {
	case AuthKey:
	case AuthKeyless:
		if !flyAppRe.MatchString(a.FlyOrg) {
			errs = append(errs, fmt.Errorf("fly org %q: want the org slug that owns the app, as in `fly orgs list` (pulumi config set flyOrg ...)", a.FlyOrg))
		}
		if !poolIDRe.MatchString(a.PoolID) || strings.HasPrefix(a.PoolID, "gcp-") {
			errs = append(errs, fmt.Errorf("workload identity pool ID %q: want 4-32 lowercase letters, digits and hyphens, not starting with gcp-", a.PoolID))
		}
	default:
		errs = append(errs, fmt.Errorf("auth %q: want %s or %s", a.Auth, AuthKeyless, AuthKey))
	}
	return a, errors.Join(errs...)
}

// NewRelayAccess creates the relay's Google Cloud resources and puts its
// key into the Fly app.
func NewRelayAccess(ctx *pulumi.Context, name string, args RelayAccessArgs, opts ...pulumi.ResourceOption) (*RelayAccess, error) {
	args, err := args.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("relay access config: %w", err)
	}
	r := &RelayAccess{auth: args.Auth}
	if err := ctx.RegisterComponentResource("skywatch:infra:RelayAccess", name, r, opts...); err != nil {
		return nil, fmt.Errorf("register component: %w", err)
	}
	project := pulumi.String(args.Project)

	// 1. The APIs. Everything below depends on them, so nothing races the
	// asynchronous enablement.
	var apis []pulumi.Resource
	enable := requiredAPIs
	if args.Auth == AuthKeyless {
		enable = append(slices.Clip(enable), keylessAPIs...)
	}
	for _, api := range enable {
		svc, err := projects.NewService(ctx, api.name, &projects.ServiceArgs{
			Project: project,
			Service: pulumi.String(api.service),
			// Leave the API on at `pulumi destroy`: other things in the
			// project may use it, and turning it off would break them.
			DisableOnDestroy: pulumi.Bool(false),
		}, pulumi.Parent(r))
		if err != nil {
			return nil, fmt.Errorf("enable %s: %w", api.service, err)
		}
		apis = append(apis, svc)
	}
	child := []pulumi.ResourceOption{pulumi.Parent(r), pulumi.DependsOn(apis)}

	// 2. The topic. Only Pulumi creates or deletes it; the relay may not.
	topic, err := pubsub.NewTopic(ctx, "topic", &pubsub.TopicArgs{
		Project: project,
		Name:    pulumi.String(args.Topic),
	}, child...)
	if err != nil {
		return nil, fmt.Errorf("topic: %w", err)
	}

	// 3. The relay's own identity.
	account, err := serviceaccount.NewAccount(ctx, "relay", &serviceaccount.AccountArgs{
		Project:     project,
		AccountId:   pulumi.String(args.AccountID),
		DisplayName: pulumi.String("Skywatch relay"),
		Description: pulumi.String("Used by the Skywatch relays on Fly app " + args.FlyApp + "; managed by Pulumi."),
	}, child...)
	if err != nil {
		return nil, fmt.Errorf("service account: %w", err)
	}
	member := pulumi.Sprintf("serviceAccount:%s", account.Email)

	// 4. Least privilege: two custom roles, because no predefined role is
	// exactly this set (roles/pubsub.publisher lacks get and attach;
	// roles/pubsub.subscriber lacks create and delete, roles/pubsub.editor
	// adds topic creation and deletion), and because Google may add
	// permissions to predefined roles later, while a custom role stays put.
	// Role IDs derive from the account ID so two stacks with different
	// accounts can share a project.
	roleBase := strings.ReplaceAll(args.AccountID, "-", "_")
	topicRole, err := projects.NewIAMCustomRole(ctx, "topic-role", &projects.IAMCustomRoleArgs{
		Project:     project,
		RoleId:      pulumi.String(roleBase + "_topic"),
		Title:       pulumi.String("Skywatch relay: topic"),
		Description: pulumi.String("Publish to, read and attach subscriptions to the Skywatch topic. Granted on the topic only."),
		Permissions: pulumi.ToStringArray(topicPermissions),
	}, child...)
	if err != nil {
		return nil, fmt.Errorf("topic role: %w", err)
	}
	subsRole, err := projects.NewIAMCustomRole(ctx, "subscriptions-role", &projects.IAMCustomRoleArgs{
		Project:     project,
		RoleId:      pulumi.String(roleBase + "_subscriptions"),
		Title:       pulumi.String("Skywatch relay: subscriptions"),
		Description: pulumi.String("Create, read, consume and delete the relay's " + args.SubscriptionPrefix + "* subscriptions. IAM cannot enforce the prefix for Pub/Sub; see docs/iam.md."),
		Permissions: pulumi.ToStringArray(subscriptionPermissions),
	}, child...)
	if err != nil {
		return nil, fmt.Errorf("subscriptions role: %w", err)
	}

	// Bound on the topic, not the project: the relay may publish to and
	// attach subscriptions to this topic and no other.
	topicGrant, err := pubsub.NewTopicIAMMember(ctx, "topic-access", &pubsub.TopicIAMMemberArgs{
		Project: project,
		Topic:   topic.Name,
		Role:    topicRole.Name,
		Member:  member,
	}, child...)
	if err != nil {
		return nil, fmt.Errorf("topic grant: %w", err)
	}
	// Bound on the project because subscriptions.create is checked there
	// and the relay's subscriptions do not exist yet. Creating one also
	// needs attachSubscription on the topic, so the relay can only create
	// subscriptions to this topic. No condition: see docs/iam.md.
	subsGrant, err := projects.NewIAMMember(ctx, "subscriptions-access", &projects.IAMMemberArgs{
		Project: project,
		Role:    subsRole.Name,
		Member:  member,
	}, child...)
	if err != nil {
		return nil, fmt.Errorf("subscriptions grant: %w", err)
	}

	// 5. How the relay's machines act as the account.
	grants := []pulumi.Resource{topicGrant, subsGrant}
	if args.Auth == AuthKey {
		if err := keyToFly(ctx, args, account, grants, child); err != nil {
			return nil, err
		}
		r.KeyVersion = pulumi.Int(args.KeyVersion).ToIntOutput()
	} else {
		aud, err := federate(ctx, args, account, child)
		if err != nil {
			return nil, err
		}
		r.WorkloadIdentityAudience = aud
		r.RelayEnv = pulumi.StringMap{
			names.EnvProject:                  project,
			names.EnvWorkloadIdentityAudience: aud,
			names.EnvServiceAccountEmail:      account.Email,
		}.ToStringMapOutput()
	}

	r.TopicName = topic.Name
	r.TopicID = topic.ID().ToStringOutput()
	r.ServiceAccountEmail = account.Email
	r.SubscriptionPrefix = pulumi.String(args.SubscriptionPrefix).ToStringOutput()
	if err := ctx.RegisterResourceOutputs(r, r.Outputs()); err != nil {
		return nil, fmt.Errorf("register outputs: %w", err)
	}
	return r, nil
}

// keyToFly is the key path: a key for the account, handed to the Fly app
// as a secret once the grants exist.
func keyToFly(ctx *pulumi.Context, args RelayAccessArgs, account *serviceaccount.Account, grants []pulumi.Resource, child []pulumi.ResourceOption) error {
	// The key. Keepers force a new key when the version is bumped.
	// Pulumi replaces create-before-delete, so the new key exists, the Fly
	// secret is updated to it, and only then is the old key deleted.
	key, err := serviceaccount.NewKey(ctx, "key", &serviceaccount.KeyArgs{
		ServiceAccountId: account.Name,
		Keepers:          pulumi.StringMap{"keyVersion": pulumi.String(strconv.Itoa(args.KeyVersion))},
	}, child...)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}

	// The key reaches flyctl on stdin, as a secret: Pulumi encrypts it in
	// state and masks it in diffs, and it never appears in the command
	// line (visible in ps), the environment or a file. ToSecret is
	// explicit rather than trusting the provider's additionalSecretOutputs.
	stdin := pulumi.ToSecret(key.PrivateKey.ApplyT(func(k string) string {
		return secretLines(k, args.Project)
	})).(pulumi.StringOutput)

	// `flyctl secrets import` without --stage: it rolls the running
	// machines onto the new key and waits, so on rotation they hold the
	// new key before Pulumi deletes the old one. Before the first
	// `fly deploy` there are no machines and flyctl only stores it.
	// The app name travels in the environment, not spliced into the shell
	// string, so config cannot inject shell syntax.
	importCmd := `flyctl secrets import --app "$FLY_APP"`
	_, err = local.NewCommand(ctx, "fly-secret", &local.CommandArgs{
		Create: pulumi.String(importCmd),
		// An in-place update (new key on stdin) runs import again. There
		// are deliberately no Triggers: the SDK marks triggers
		// replace-on-change, and a replacement runs the old resource's
		// delete (unset) after the new one's create, wiping the new key.
		Update: pulumi.String(importCmd),
		Delete: pulumi.String(`flyctl secrets unset --app "$FLY_APP" ` + KeySecretName + " " + ProjectSecretName),
		Stdin:  stdin,
		// FLY_API_TOKEN is not here: flyctl reads it from the operator's
		// shell, which the command inherits, so it stays out of state.
		Environment: pulumi.StringMap{"FLY_APP": pulumi.String(args.FlyApp)},
	}, append(child,
		// Machines restart with the key as soon as it is set; let them
		// find their permissions already granted.
		pulumi.DependsOn(grants),
		// Moving to another app replaces the command: import into the new
		// app, then unset in the old one (delete runs with the old inputs).
		pulumi.ReplaceOnChanges([]string{"environment"}),
		// flyctl prints digests, never values; keep its output encrypted
		// in state all the same.
		pulumi.AdditionalSecretOutputs([]string{"stdout", "stderr"}),
	)...)
	if err != nil {
		return fmt.Errorf("fly secret: %w", err)
	}

	return nil
}

// secretLines is what `flyctl secrets import` reads: NAME=VALUE lines.
// The key is base64: no newline, quote or #, none of which the import
// format would pass through unchanged, so no quoting is needed.
func secretLines(key, project string) string {
	return KeySecretName + "=" + key + "\n" + ProjectSecretName + "=" + project + "\n"
}
