package main

import (
	"fmt"
	"strconv"

	"github.com/pulumi/pulumi-gcp/sdk/v7/go/gcp/iam"
	"github.com/pulumi/pulumi-gcp/sdk/v7/go/gcp/serviceaccount"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// WorkloadIdentityUserRole lets a federated principal act as a service
// account (get access tokens for it). It is the only predefined role the
// program binds, and only on the relay's account, only for the app.
const WorkloadIdentityUserRole = "roles/iam.workloadIdentityUser"

// flyIssuer is the OIDC issuer of a Fly organisation's machine tokens.
func flyIssuer(org string) string { return "https://oidc.fly.io/" + org }

// flyCondition admits only tokens of machines of this app in this org.
// The issuer is already per org; the org check says so again, so the
// condition reads as what it allows. Fly app names are global, and the
// issuer ties them to the org, so a deleted name taken up elsewhere
// cannot get in.
func flyCondition(org, app string) string {
	return "assertion.org_name == " + strconv.Quote(org) + " && assertion.app_name == " + strconv.Quote(app)
}

// federate is the keyless path: a workload identity pool whose OIDC
// provider trusts the Fly org's issuer for this app's machines only, and
// roles/iam.workloadIdentityUser on the relay's account for the app's
// principals only. It returns the audience the relay asks Fly and STS for.
//
// The relay's token never grants Pub/Sub access by itself: the federated
// principal may only impersonate the account, whose roles are the
// least-privilege ones above (docs/iam.md).
func federate(ctx *pulumi.Context, args RelayAccessArgs, account *serviceaccount.Account, child []pulumi.ResourceOption) (pulumi.StringOutput, error) {
	project := pulumi.String(args.Project)
	pool, err := iam.NewWorkloadIdentityPool(ctx, "fly-pool", &iam.WorkloadIdentityPoolArgs{
		Project:                project,
		WorkloadIdentityPoolId: pulumi.String(args.PoolID),
		DisplayName:            pulumi.String("Skywatch on Fly"),
		Description:            pulumi.String("Fly Machines of app " + args.FlyApp + " (org " + args.FlyOrg + "); managed by Pulumi."),
	}, child...)
	if err != nil {
		return pulumi.StringOutput{}, fmt.Errorf("workload identity pool: %w", err)
	}

	provider, err := iam.NewWorkloadIdentityPoolProvider(ctx, "fly-provider", &iam.WorkloadIdentityPoolProviderArgs{
		Project:                        project,
		WorkloadIdentityPoolId:         pool.WorkloadIdentityPoolId,
		WorkloadIdentityPoolProviderId: pulumi.String("fly-oidc"),
		DisplayName:                    pulumi.String("Fly.io OIDC (" + args.FlyOrg + ")"),
		Oidc: &iam.WorkloadIdentityPoolProviderOidcArgs{
			IssuerUri: pulumi.String(flyIssuer(args.FlyOrg)),
			// No allowed audiences: Google then accepts exactly the
			// provider's own name, which is what the relay asks Fly for.
		},
		// google.subject is the machine (org:app:machine, under Google's
		// 127-byte limit); the attributes are what the condition and the
		// grant below test.
		AttributeMapping: pulumi.StringMap{
			"google.subject":     pulumi.String("assertion.sub"),
			"attribute.app_name": pulumi.String("assertion.app_name"),
			"attribute.org_name": pulumi.String("assertion.org_name"),
		},
		AttributeCondition: pulumi.String(flyCondition(args.FlyOrg, args.FlyApp)),
	}, child...)
	if err != nil {
		return pulumi.StringOutput{}, fmt.Errorf("workload identity provider: %w", err)
	}

	// pool.Name is projects/NUMBER/locations/global/workloadIdentityPools/ID.
	// The grant names the app's principal set, not the whole pool.
	member := pulumi.Sprintf("principalSet://iam.googleapis.com/%s/attribute.app_name/%s", pool.Name, args.FlyApp)
	if _, err := serviceaccount.NewIAMMember(ctx, "fly-workload-identity", &serviceaccount.IAMMemberArgs{
		ServiceAccountId: account.Name,
		Role:             pulumi.String(WorkloadIdentityUserRole),
		Member:           member,
	}, child...); err != nil {
		return pulumi.StringOutput{}, fmt.Errorf("workload identity grant: %w", err)
	}
	return pulumi.Sprintf("//iam.googleapis.com/%s", provider.Name), nil
}
