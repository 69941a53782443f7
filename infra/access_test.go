package main

import (
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/internals"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// Type tokens as the SDKs register them.
const (
	tService       = "gcp:projects/service:Service"
	tTopic         = "gcp:pubsub/topic:Topic"
	tAccount       = "gcp:serviceaccount/account:Account"
	tCustomRole    = "gcp:projects/iAMCustomRole:IAMCustomRole"
	tTopicMember   = "gcp:pubsub/topicIAMMember:TopicIAMMember"
	tProjectMember = "gcp:projects/iAMMember:IAMMember"
	tKey           = "gcp:serviceaccount/key:Key"
	tCommand       = "command:local:Command"
	tComponent     = "skywatch:infra:RelayAccess"
)

// registered is one resource as the mock engine saw it.
type registered struct {
	typ, name string
	inputs    resource.PropertyMap
	rpc       *pulumirpc.RegisterResourceRequest
}

// engine is a pulumi.MockResourceMonitor that records every registration
// and answers with the inputs plus the outputs a real provider computes.
type engine struct {
	mu  sync.Mutex
	all []registered
}

// fakeKey stands in for Google's privateKey output: base64 of a JSON key
// file, different for each key version so rotation is visible.
func fakeKey(version string) string {
	return base64.StdEncoding.EncodeToString([]byte(
		`{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nFAKE-KEY-v` + version + `\n-----END PRIVATE KEY-----\n"}`))
}

func (e *engine) NewResource(args pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	e.mu.Lock()
	e.all = append(e.all, registered{typ: args.TypeToken, name: args.Name, inputs: args.Inputs, rpc: args.RegisterRPC})
	e.mu.Unlock()

	state := args.Inputs.Copy()
	str := func(k string) string {
		if v, ok := args.Inputs[resource.PropertyKey(k)]; ok && v.IsString() {
			return v.StringValue()
		}
		return ""
	}
	id := args.Name + "-id"
	switch args.TypeToken {
	case tTopic:
		id = "projects/" + str("project") + "/topics/" + str("name")
	case tAccount:
		email := str("accountId") + "@" + str("project") + ".iam.gserviceaccount.com"
		state["email"] = resource.NewStringProperty(email)
		state["name"] = resource.NewStringProperty("projects/" + str("project") + "/serviceAccounts/" + email)
		state["member"] = resource.NewStringProperty("serviceAccount:" + email)
	case tCustomRole:
		state["name"] = resource.NewStringProperty("projects/" + str("project") + "/roles/" + str("roleId"))
	case tKey:
		version := args.Inputs["keepers"].ObjectValue()["keyVersion"].StringValue()
		// Plain, not secret: a real provider marks privateKey secret, but
		// the program must not rely on that, and a plain value here makes
		// any leak visible to the tests below.
		state["privateKey"] = resource.NewStringProperty(fakeKey(version))
		id = "key-v" + version
	case tPool:
		state["name"] = resource.NewStringProperty("projects/" + projectNumber + "/locations/global/workloadIdentityPools/" + str("workloadIdentityPoolId"))
	case tProvider:
		state["name"] = resource.NewStringProperty("projects/" + projectNumber + "/locations/global/workloadIdentityPools/" + str("workloadIdentityPoolId") + "/providers/" + str("workloadIdentityPoolProviderId"))
	case tCommand:
		state["stdout"] = resource.NewStringProperty("")
		state["stderr"] = resource.NewStringProperty("")
	}
	return id, state, nil
}

func (e *engine) Call(args pulumi.MockCallArgs) (resource.PropertyMap, error) {
	return args.Args, nil
}

// of returns the resources of one type.
func (e *engine) of(typ string) []registered {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []registered
	for _, r := range e.all {
		if r.typ == typ {
			out = append(out, r)
		}
	}
	return out
}

// one returns the single resource of a type and name.
func (e *engine) one(t *testing.T, typ, name string) registered {
	t.Helper()
	for _, r := range e.of(typ) {
		if r.name == name {
			return r
		}
	}
	t.Fatalf("no %s named %q was registered", typ, name)
	return registered{}
}

// withConfig sets stack config the way the engine would pass it.
func withConfig(cfg map[string]string) pulumi.RunOption {
	return func(info *pulumi.RunInfo) { info.Config = cfg }
}

// baseConfig is the least a key stack must set. The tests in this file
// cover the key path, which must stay exactly as it was before keyless
// became the default (keyless_test.go covers keyless).
func baseConfig() map[string]string {
	return map[string]string{
		"gcp:project":     "proj-1",
		"skywatch:flyApp": "skywatch-test",
		"skywatch:auth":   "key",
	}
}

// deployment is the result of running the program under mocks.
type deployment struct {
	engine  *engine
	outputs map[string]internals.UnsafeAwaitOutputResult
}

// runProgram runs the program against the mock engine and resolves the
// stack outputs.
func runProgram(t *testing.T, cfg map[string]string) (deployment, error) {
	t.Helper()
	d := deployment{engine: &engine{}, outputs: map[string]internals.UnsafeAwaitOutputResult{}}
	err := pulumi.RunErr(func(ctx *pulumi.Context) error {
		relay, err := deploy(ctx)
		if err != nil {
			return err
		}
		for name, out := range relay.Outputs() {
			res, err := internals.UnsafeAwaitOutput(ctx.Context(), pulumi.ToOutput(out))
			if err != nil {
				return fmt.Errorf("await output %s: %w", name, err)
			}
			d.outputs[name] = res
		}
		return nil
	}, pulumi.WithMocks("skywatch", "test", d.engine), withConfig(cfg))
	return d, err
}

func mustRun(t *testing.T, cfg map[string]string) deployment {
	t.Helper()
	d, err := runProgram(t, cfg)
	if err != nil {
		t.Fatalf("program: %v", err)
	}
	return d
}

// str reads a plain string input, failing on secrets so that a test
// never compares against a value it did not expect to be plain.
func str(t *testing.T, r registered, key string) string {
	t.Helper()
	v, ok := r.inputs[resource.PropertyKey(key)]
	if !ok {
		t.Fatalf("%s %q: no input %q", r.typ, r.name, key)
	}
	if !v.IsString() {
		t.Fatalf("%s %q: input %q is %v, want a plain string", r.typ, r.name, key, v)
	}
	return v.StringValue()
}

// wantStrs checks plain string inputs of r (see str).
func wantStrs(t *testing.T, r registered, want map[string]string) {
	t.Helper()
	for _, key := range slices.Sorted(maps.Keys(want)) {
		if got := str(t, r, key); got != want[key] {
			t.Errorf("%s %q: %s %q, want %q", r.typ, r.name, key, got, want[key])
		}
	}
}

func sortedStrings(v resource.PropertyValue) []string {
	var out []string
	for _, e := range v.ArrayValue() {
		out = append(out, e.StringValue())
	}
	slices.Sort(out)
	return out
}

func TestResourcesFromConfig(t *testing.T) {
	cfg := baseConfig()
	cfg["skywatch:topic"] = "SIGHTINGS"
	cfg["skywatch:subscriptionPrefix"] = "VM_"
	cfg["skywatch:serviceAccountId"] = "ufo-relay"
	cfg["skywatch:keyVersion"] = "7"
	d := mustRun(t, cfg)
	e := d.engine

	if n := len(e.of(tComponent)); n != 1 {
		t.Fatalf("%d RelayAccess components, want 1", n)
	}
	var services []string
	for _, s := range e.of(tService) {
		services = append(services, str(t, s, "service"))
		wantStrs(t, s, map[string]string{"project": "proj-1"})
		if v := s.inputs["disableOnDestroy"]; !v.IsBool() || v.BoolValue() {
			t.Errorf("service %s: disableOnDestroy %v, want false", s.name, v)
		}
	}
	slices.Sort(services)
	wantServices := []string{"cloudresourcemanager.googleapis.com", "iam.googleapis.com", "pubsub.googleapis.com"}
	if !slices.Equal(services, wantServices) {
		t.Errorf("enabled APIs %v, want %v", services, wantServices)
	}

	topic := e.one(t, tTopic, "topic")
	wantStrs(t, topic, map[string]string{
		"name":    "SIGHTINGS",
		"project": "proj-1",
	})

	account := e.one(t, tAccount, "relay")
	wantStrs(t, account, map[string]string{"accountId": "ufo-relay"})

	key := e.one(t, tKey, "key")
	wantStrs(t, key, map[string]string{"serviceAccountId": "projects/proj-1/serviceAccounts/ufo-relay@proj-1.iam.gserviceaccount.com"})
	if got := key.inputs["keepers"].ObjectValue()["keyVersion"].StringValue(); got != "7" {
		t.Errorf("key keepers keyVersion %q, want 7", got)
	}

	cmd := e.one(t, tCommand, "fly-secret")
	if got := cmd.inputs["environment"].ObjectValue()["FLY_APP"].StringValue(); got != "skywatch-test" {
		t.Errorf("command FLY_APP %q, want skywatch-test", got)
	}
	imp := `flyctl secrets import --app "$FLY_APP"`
	wantStrs(t, cmd, map[string]string{
		"create": imp,
		"update": imp,
		"delete": `flyctl secrets unset --app "$FLY_APP" GCP_SERVICE_ACCOUNT_KEY GOOGLE_CLOUD_PROJECT`,
	})

	// Every resource is a child of the component, so `pulumi stack` shows
	// one tree and aliases move together.
	component := e.of(tComponent)[0]
	for _, r := range e.all {
		if r.typ == tComponent {
			continue
		}
		if p := resource.URN(r.rpc.GetParent()); p.Type() != tComponent || p.Name() != component.name {
			t.Errorf("%s %q: parent %q, want the RelayAccess component", r.typ, r.name, p)
		}
	}

	wantOut := map[string]any{
		"topic":               "SIGHTINGS",
		"topicId":             "projects/proj-1/topics/SIGHTINGS",
		"serviceAccountEmail": "ufo-relay@proj-1.iam.gserviceaccount.com",
		"subscriptionPrefix":  "VM_",
		"keyVersion":          7,
	}
	if len(d.outputs) != len(wantOut) {
		t.Errorf("outputs %v, want exactly %v", keys(d.outputs), wantOut)
	}
	for name, want := range wantOut {
		if got := d.outputs[name].Value; got != want {
			t.Errorf("output %s = %v, want %v", name, got, want)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestDefaults(t *testing.T) {
	d := mustRun(t, baseConfig())
	e := d.engine
	wantStrs(t, e.one(t, tTopic, "topic"), map[string]string{"name": "ALIEN_NOTIFICATIONS"})
	if got := d.outputs["subscriptionPrefix"].Value; got != "ID_" {
		t.Errorf("default subscription prefix %v, want ID_", got)
	}
	wantStrs(t, e.one(t, tAccount, "relay"), map[string]string{"accountId": "skywatch-relay"})
	if got := e.one(t, tKey, "key").inputs["keepers"].ObjectValue()["keyVersion"].StringValue(); got != "1" {
		t.Errorf("default key version %q, want 1", got)
	}
}

// badConfig is stack config that must fail before any resource exists:
// base config with unset removed and set applied, failing with want.
type badConfig struct {
	set   map[string]string
	unset string
	want  string
}

// checkBadConfig runs each case on base and checks it fails with its want
// and registers nothing.
func checkBadConfig(t *testing.T, base func() map[string]string, cases map[string]badConfig) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := base()
			delete(cfg, tc.unset)
			for k, v := range tc.set {
				cfg[k] = v
			}
			d, err := runProgram(t, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			if n := len(d.engine.all); n != 0 {
				t.Errorf("%d resources registered despite bad config, want 0", n)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	checkBadConfig(t, baseConfig, map[string]badConfig{
		"no project":        {unset: "gcp:project", want: "project: required"},
		"no fly app":        {unset: "skywatch:flyApp", want: "fly app"},
		"fly app shell":     {set: map[string]string{"skywatch:flyApp": `x"; rm -rf ~; "`}, want: "fly app"},
		"key version text":  {set: map[string]string{"skywatch:keyVersion": "two"}, want: "keyVersion"},
		"key version below": {set: map[string]string{"skywatch:keyVersion": "-1"}, want: "key version"},
		"topic digit":       {set: map[string]string{"skywatch:topic": "9lives"}, want: "topic"},
		"topic goog":        {set: map[string]string{"skywatch:topic": "google-alerts"}, want: "topic"},
		"prefix space":      {set: map[string]string{"skywatch:subscriptionPrefix": "ID "}, want: "subscription prefix"},
		"account upper":     {set: map[string]string{"skywatch:serviceAccountId": "Relay-Account"}, want: "account ID"},
	})
}

func TestLeastPrivilege(t *testing.T) {
	d := mustRun(t, baseConfig())
	e := d.engine

	// Only additive, non-authoritative grants: an IAMBinding or IAMPolicy
	// would also remove everyone else's access.
	for _, r := range e.all {
		if strings.Contains(strings.ToLower(r.typ), "iam") && r.typ != tCustomRole && r.typ != tTopicMember && r.typ != tProjectMember {
			t.Errorf("unexpected IAM resource %s %q", r.typ, r.name)
		}
	}

	roles := map[string][]string{} // role name -> permissions
	for _, r := range e.of(tCustomRole) {
		roles["projects/proj-1/roles/"+str(t, r, "roleId")] = sortedStrings(r.inputs["permissions"])
		wantStrs(t, r, map[string]string{"project": "proj-1"})
	}
	wantRoles := map[string][]string{
		"projects/proj-1/roles/skywatch_relay_topic": {
			"pubsub.topics.attachSubscription",
			"pubsub.topics.get",
			"pubsub.topics.publish",
		},
		"projects/proj-1/roles/skywatch_relay_subscriptions": {
			"pubsub.subscriptions.consume",
			"pubsub.subscriptions.create",
			"pubsub.subscriptions.delete",
			"pubsub.subscriptions.get",
		},
	}
	if len(roles) != len(wantRoles) {
		t.Fatalf("custom roles %v, want %v", keys(roles), keys(wantRoles))
	}
	for name, want := range wantRoles {
		if got := roles[name]; !slices.Equal(got, want) {
			t.Errorf("role %s permissions %v, want exactly %v", name, got, want)
		}
		// The janitor lists the topic's subscriptions with
		// ListTopicSubscriptions, which needs pubsub.topics.get on the
		// topic (above); listing every subscription of the project would
		// be broader and is not needed.
		if slices.Contains(roles[name], "pubsub.subscriptions.list") {
			t.Errorf("role %s has pubsub.subscriptions.list; the topic's own listing needs only pubsub.topics.get", name)
		}
	}

	// The bindings: topic permissions on the topic, subscription
	// permissions on the project, both to the relay account, unconditional.
	member := "serviceAccount:skywatch-relay@proj-1.iam.gserviceaccount.com"
	topicGrants := e.of(tTopicMember)
	if len(topicGrants) != 1 {
		t.Fatalf("%d topic grants, want 1", len(topicGrants))
	}
	tg := topicGrants[0]
	wantStrs(t, tg, map[string]string{
		"topic":  "ALIEN_NOTIFICATIONS",
		"role":   "projects/proj-1/roles/skywatch_relay_topic",
		"member": member,
	})
	projectGrants := e.of(tProjectMember)
	if len(projectGrants) != 1 {
		t.Fatalf("%d project grants, want 1", len(projectGrants))
	}
	pg := projectGrants[0]
	wantStrs(t, pg, map[string]string{
		"project": "proj-1",
		"role":    "projects/proj-1/roles/skywatch_relay_subscriptions",
		"member":  member,
	})
	for _, g := range []registered{tg, pg} {
		if c, ok := g.inputs["condition"]; ok && !c.IsNull() {
			t.Errorf("%s has condition %v; Pub/Sub ignores resource conditions (docs/iam.md)", g.name, c)
		}
	}

	// Nothing anywhere names a broad role, and no predefined role is
	// bound at all (project-wide publisher included).
	for _, r := range append(topicGrants, projectGrants...) {
		if role := str(t, r, "role"); strings.HasPrefix(role, "roles/") {
			t.Errorf("%s binds predefined role %s", r.name, role)
		}
	}
	for _, r := range e.all {
		for _, bad := range []string{"roles/pubsub.admin", "roles/owner", "roles/editor", "roles/pubsub.publisher", "roles/pubsub.editor"} {
			if s := fmt.Sprint(r.inputs); strings.Contains(s, bad) {
				t.Errorf("%s %q mentions %s", r.typ, r.name, bad)
			}
		}
	}
}

// walkStrings calls f for every string inside v, saying whether it sits
// under a secret.
func walkStrings(v resource.PropertyValue, secret bool, f func(s string, secret bool)) {
	switch {
	case v.IsSecret():
		walkStrings(v.SecretValue().Element, true, f)
	case v.IsString():
		f(v.StringValue(), secret)
	case v.IsArray():
		for _, e := range v.ArrayValue() {
			walkStrings(e, secret, f)
		}
	case v.IsObject():
		for _, e := range v.ObjectValue() {
			walkStrings(e, secret, f)
		}
	case v.IsOutput():
		walkStrings(v.OutputValue().Element, secret || v.OutputValue().Secret, f)
	}
}

func TestKeyReachesFlyOnlyAsSecretStdin(t *testing.T) {
	d := mustRun(t, baseConfig())
	e := d.engine
	key := fakeKey("1")
	decoded, _ := base64.StdEncoding.DecodeString(key)
	needles := []string{key, "FAKE-KEY-v1", string(decoded)}

	cmd := e.one(t, tCommand, "fly-secret")
	stdin := cmd.inputs["stdin"]
	if !stdin.IsSecret() {
		t.Fatalf("command stdin is %v, want a secret", stdin.TypeString())
	}
	want := "GCP_SERVICE_ACCOUNT_KEY=" + key + "\nGOOGLE_CLOUD_PROJECT=proj-1\n"
	if got := stdin.SecretValue().Element.StringValue(); got != want {
		t.Errorf("stdin %q, want %q", got, want)
	}

	// The key appears nowhere in plain: not in the command line, its
	// environment, triggers or any other resource's inputs.
	for _, r := range e.all {
		for k, v := range r.inputs {
			walkStrings(v, false, func(s string, secret bool) {
				for _, n := range needles {
					if strings.Contains(s, n) && !(secret && r.typ == tCommand && k == "stdin") {
						t.Errorf("%s %q input %q holds the key (secret=%v)", r.typ, r.name, k, secret)
					}
				}
			})
		}
	}

	// No trigger may carry it either, and there are none: see access.go.
	if tr, ok := cmd.inputs["triggers"]; ok && !tr.IsNull() && len(tr.ArrayValue()) > 0 {
		t.Errorf("command has triggers %v; a trigger change replaces the command and its delete unsets the new key", tr)
	}
	if aso := cmd.rpc.GetAdditionalSecretOutputs(); !slices.Contains(aso, "stdout") || !slices.Contains(aso, "stderr") {
		t.Errorf("command additionalSecretOutputs %v, want stdout and stderr", aso)
	}

	// The stack outputs hold no key, secret or not.
	for name, out := range d.outputs {
		if s := fmt.Sprint(out.Value); slices.ContainsFunc(needles, func(n string) bool { return strings.Contains(s, n) }) {
			t.Errorf("output %s holds the key", name)
		}
		if out.Secret {
			t.Errorf("output %s is secret; none of the outputs should need to be", name)
		}
	}
}

func TestEverythingDependsOnTheAPIs(t *testing.T) {
	e := mustRun(t, baseConfig()).engine
	var apiURNs []string
	for _, r := range e.all {
		if r.typ != tService {
			continue
		}
		if deps := r.rpc.GetDependencies(); len(deps) != 0 {
			t.Errorf("API %s depends on %v, want nothing", r.name, deps)
		}
		apiURNs = append(apiURNs, r.name)
	}
	if !slices.Contains(apiURNs, "pubsub-api") {
		t.Fatalf("no pubsub-api service among %v", apiURNs)
	}
	depNames := func(r registered) []string {
		var out []string
		for _, u := range r.rpc.GetDependencies() {
			out = append(out, resource.URN(u).Name())
		}
		return out
	}
	checked := 0
	for _, r := range e.all {
		if r.typ == tService || r.typ == tComponent {
			continue
		}
		checked++
		deps := depNames(r)
		for _, api := range apiURNs {
			if !slices.Contains(deps, api) {
				t.Errorf("%s %q does not depend on %s (deps %v)", r.typ, r.name, api, deps)
			}
		}
	}
	if checked != 8 { // topic, account, 2 roles, 2 grants, key, command
		t.Errorf("checked %d resources, want 8", checked)
	}
	// The secret lands only once the grants exist, since setting it
	// restarts machines that use them at once.
	cmdDeps := depNames(e.one(t, tCommand, "fly-secret"))
	for _, grant := range []string{"topic-access", "subscriptions-access", "key"} {
		if !slices.Contains(cmdDeps, grant) {
			t.Errorf("fly-secret does not depend on %s (deps %v)", grant, cmdDeps)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	stdinAndKeeper := func(version string) (stdin, keeper string, cmd registered) {
		t.Helper()
		cfg := baseConfig()
		cfg["skywatch:keyVersion"] = version
		e := mustRun(t, cfg).engine
		cmd = e.one(t, tCommand, "fly-secret")
		stdin = cmd.inputs["stdin"].SecretValue().Element.StringValue()
		keeper = e.one(t, tKey, "key").inputs["keepers"].ObjectValue()["keyVersion"].StringValue()
		return stdin, keeper, cmd
	}
	stdin1, keeper1, _ := stdinAndKeeper("1")
	stdin1again, _, _ := stdinAndKeeper("1")
	stdin2, keeper2, cmd2 := stdinAndKeeper("2")

	// keepers is a replace-on-change field of the Google key: bumping the
	// version is what makes the provider mint a new key.
	if keeper1 != "1" || keeper2 != "2" {
		t.Errorf("keepers %q then %q, want 1 then 2", keeper1, keeper2)
	}
	if stdin1 != stdin1again {
		t.Error("same key version gave different secret input; the command would rerun on every up")
	}
	if stdin1 == stdin2 {
		t.Error("bumping the key version did not change what the command sends to Fly")
	}
	if !strings.Contains(stdin2, fakeKey("2")) {
		t.Error("after rotation the command does not send the new key")
	}
	// The changed stdin must update the command in place (import the new
	// key) rather than replace it, whose old delete would unset the key.
	if roc := cmd2.rpc.GetReplaceOnChanges(); slices.Contains(roc, "stdin") || slices.Contains(roc, "*") {
		t.Errorf("command replaceOnChanges %v includes stdin", roc)
	}
	if dbr := cmd2.rpc.GetDeleteBeforeReplace(); dbr {
		t.Error("command is delete-before-replace; on an app change it would unset before setting")
	}
}
