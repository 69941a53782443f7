package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Keyless type tokens, and the project number the mock engine puts in
// the pool's and provider's names (Google uses the number, not the ID).
const (
	tPool          = "gcp:iam/workloadIdentityPool:WorkloadIdentityPool"
	tProvider      = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
	tAccountMember = "gcp:serviceaccount/iAMMember:IAMMember"
	projectNumber  = "123456"
)

// keylessConfig is the least a keyless stack (the default) must set.
func keylessConfig() map[string]string {
	return map[string]string{
		"gcp:project":     "proj-1",
		"skywatch:flyApp": "skywatch-test",
		"skywatch:flyOrg": "ufo-org",
	}
}

func TestKeylessResources(t *testing.T) {
	d := mustRun(t, keylessConfig())
	e := d.engine

	// No key, no secret, nothing run on the operator's machine.
	for _, typ := range []string{tKey, tCommand} {
		if n := len(e.of(typ)); n != 0 {
			t.Errorf("%d %s resources in a keyless stack, want none", n, typ)
		}
	}

	var services []string
	for _, s := range e.of(tService) {
		services = append(services, str(t, s, "service"))
	}
	slices.Sort(services)
	want := []string{"cloudresourcemanager.googleapis.com", "iam.googleapis.com", "iamcredentials.googleapis.com", "pubsub.googleapis.com", "sts.googleapis.com"}
	if !slices.Equal(services, want) {
		t.Errorf("enabled APIs %v, want %v", services, want)
	}

	pool := e.one(t, tPool, "fly-pool")
	wantStrs(t, pool, map[string]string{
		"workloadIdentityPoolId": "skywatch-fly",
		"project":                "proj-1",
	})

	provider := e.one(t, tProvider, "fly-provider")
	wantStrs(t, provider, map[string]string{"workloadIdentityPoolId": "skywatch-fly"})
	oidc := provider.inputs["oidc"].ObjectValue()
	if got := oidc["issuerUri"].StringValue(); got != "https://oidc.fly.io/ufo-org" {
		t.Errorf("issuer %q, want the Fly org's", got)
	}
	if aud, ok := oidc["allowedAudiences"]; ok && !aud.IsNull() && len(aud.ArrayValue()) > 0 {
		t.Errorf("allowed audiences %v, want none (the provider's own name)", aud)
	}
	if got, want := str(t, provider, "attributeCondition"), `assertion.org_name == "ufo-org" && assertion.app_name == "skywatch-test"`; got != want {
		t.Errorf("attribute condition %q, want %q", got, want)
	}
	mapping := provider.inputs["attributeMapping"].ObjectValue()
	for attr, claim := range map[string]string{
		"google.subject":     "assertion.sub",
		"attribute.app_name": "assertion.app_name",
		"attribute.org_name": "assertion.org_name",
	} {
		if got := mapping[resource.PropertyKey(attr)]; !got.IsString() || got.StringValue() != claim {
			t.Errorf("attribute mapping %s = %v, want %s", attr, got, claim)
		}
	}

	// The grant: workloadIdentityUser on the relay's account, for this
	// app's machines only; not for the whole pool.
	grants := e.of(tAccountMember)
	if len(grants) != 1 {
		t.Fatalf("%d service-account grants, want 1", len(grants))
	}
	g := grants[0]
	wantStrs(t, g, map[string]string{
		"serviceAccountId": "projects/proj-1/serviceAccounts/skywatch-relay@proj-1.iam.gserviceaccount.com",
		"role":             "roles/iam.workloadIdentityUser",
	})
	wantMember := "principalSet://iam.googleapis.com/projects/" + projectNumber + "/locations/global/workloadIdentityPools/skywatch-fly/attribute.app_name/skywatch-test"
	wantStrs(t, g, map[string]string{"member": wantMember})

	audience := "//iam.googleapis.com/projects/" + projectNumber + "/locations/global/workloadIdentityPools/skywatch-fly/providers/fly-oidc"
	wantOut := map[string]any{
		"topic":                    "ALIEN_NOTIFICATIONS",
		"topicId":                  "projects/proj-1/topics/ALIEN_NOTIFICATIONS",
		"serviceAccountEmail":      "skywatch-relay@proj-1.iam.gserviceaccount.com",
		"subscriptionPrefix":       "ID_",
		"workloadIdentityAudience": audience,
		"relayEnv": map[string]any{
			"GOOGLE_CLOUD_PROJECT":           "proj-1",
			"GCP_WORKLOAD_IDENTITY_AUDIENCE": audience,
			"GCP_SERVICE_ACCOUNT_EMAIL":      "skywatch-relay@proj-1.iam.gserviceaccount.com",
		},
	}
	if len(d.outputs) != len(wantOut) {
		t.Errorf("outputs %v, want exactly %v", keys(d.outputs), keys(wantOut))
	}
	for name, want := range wantOut {
		out := d.outputs[name]
		if fmt.Sprint(out.Value) != fmt.Sprint(want) {
			t.Errorf("output %s = %v, want %v", name, out.Value, want)
		}
		if out.Secret {
			t.Errorf("output %s is secret; it is configuration, not a credential", name)
		}
	}
}

// TestKeylessLeastPrivilege: the relay's Pub/Sub roles are the key path's,
// and the only predefined role anywhere is workloadIdentityUser, on the
// relay's account.
func TestKeylessLeastPrivilege(t *testing.T) {
	keyless := mustRun(t, keylessConfig()).engine
	key := mustRun(t, baseConfig()).engine

	perms := func(e *engine) map[string][]string {
		out := map[string][]string{}
		for _, r := range e.of(tCustomRole) {
			out[str(t, r, "roleId")] = sortedStrings(r.inputs["permissions"])
		}
		return out
	}
	if a, b := perms(keyless), perms(key); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("keyless custom roles %v, want the key path's %v", a, b)
	}
	for _, typ := range []string{tTopicMember, tProjectMember} {
		for _, r := range keyless.of(typ) {
			wantStrs(t, r, map[string]string{"member": "serviceAccount:skywatch-relay@proj-1.iam.gserviceaccount.com"})
		}
	}

	// Every role named anywhere, in any input.
	for _, r := range keyless.all {
		for k, v := range r.inputs {
			walkStrings(v, false, func(s string, _ bool) {
				if strings.HasPrefix(s, "roles/") && !(r.typ == tAccountMember && k == "role" && s == WorkloadIdentityUserRole) {
					t.Errorf("%s %q input %q names predefined role %s", r.typ, r.name, k, s)
				}
				if strings.HasPrefix(s, "principalSet://") && !strings.Contains(s, "/attribute.app_name/skywatch-test") {
					t.Errorf("%s %q grants a principal set wider than the app: %s", r.typ, r.name, s)
				}
				if strings.HasPrefix(s, "principal://") || strings.HasSuffix(s, "/*") {
					t.Errorf("%s %q names %s; want only the app's principal set", r.typ, r.name, s)
				}
			})
		}
	}
	// Only additive grants, never a policy or binding that replaces others.
	for _, r := range keyless.all {
		if strings.Contains(r.typ, "IAMBinding") || strings.Contains(r.typ, "IAMPolicy") {
			t.Errorf("authoritative IAM resource %s %q", r.typ, r.name)
		}
	}
}

func TestKeylessDependsOnTheAPIs(t *testing.T) {
	e := mustRun(t, keylessConfig()).engine
	for _, r := range e.all {
		if r.typ == tService || r.typ == tComponent {
			continue
		}
		var deps []string
		for _, u := range r.rpc.GetDependencies() {
			deps = append(deps, resource.URN(u).Name())
		}
		for _, api := range []string{"pubsub-api", "iam-api", "sts-api", "iamcredentials-api"} {
			if !slices.Contains(deps, api) {
				t.Errorf("%s %q does not depend on %s (deps %v)", r.typ, r.name, api, deps)
			}
		}
		if p := resource.URN(r.rpc.GetParent()); p.Type() != tComponent {
			t.Errorf("%s %q: parent %q, want the RelayAccess component", r.typ, r.name, p)
		}
	}
}

func TestKeylessConfigErrors(t *testing.T) {
	checkBadConfig(t, keylessConfig, map[string]badConfig{
		"no fly org":    {unset: "skywatch:flyOrg", want: "fly org"},
		"fly org shell": {set: map[string]string{"skywatch:flyOrg": `a" || true || "`}, want: "fly org"},
		"unknown auth":  {set: map[string]string{"skywatch:auth": "password"}, want: "auth"},
		"pool gcp-":     {set: map[string]string{"skywatch:workloadIdentityPoolId": "gcp-fly"}, want: "pool ID"},
		"pool short":    {set: map[string]string{"skywatch:workloadIdentityPoolId": "fly"}, want: "pool ID"},
	})
}

// TestKeyStackHasNoFederation: choosing the key path adds nothing of the
// keyless path (the key path's own tests are in access_test.go).
func TestKeyStackHasNoFederation(t *testing.T) {
	e := mustRun(t, baseConfig()).engine
	for _, typ := range []string{tPool, tProvider, tAccountMember} {
		if n := len(e.of(typ)); n != 0 {
			t.Errorf("%d %s in a key stack, want none", n, typ)
		}
	}
}
