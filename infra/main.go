package main

import (
	"fmt"
	"strconv"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

func main() {
	pulumi.Run(run)
}

func run(ctx *pulumi.Context) error {
	_, err := deploy(ctx)
	return err
}

// deploy reads stack config, builds the component and exports its
// outputs. It returns the component so tests can inspect what was exported.
func deploy(ctx *pulumi.Context) (*RelayAccess, error) {
	args, err := loadArgs(ctx)
	if err != nil {
		return nil, err
	}
	relay, err := NewRelayAccess(ctx, "skywatch", args)
	if err != nil {
		return nil, err
	}
	for name, value := range relay.Outputs() {
		ctx.Export(name, value)
	}
	return relay, nil
}

// loadArgs reads the stack's config. Keys without a namespace belong to
// this project (Pulumi.yaml's name); unset keys keep RelayAccessArgs'
// zero values, which mean "default". ctx.GetConfig is used rather than the
// config package to keep the program's dependencies to what go.mod has.
func loadArgs(ctx *pulumi.Context) (RelayAccessArgs, error) {
	own := func(key string) string {
		v, _ := ctx.GetConfig(ctx.Project() + ":" + key)
		return v
	}
	project, _ := ctx.GetConfig("gcp:project")
	args := RelayAccessArgs{
		Project:            project,
		FlyApp:             own("flyApp"),
		Topic:              own("topic"),
		SubscriptionPrefix: own("subscriptionPrefix"),
		AccountID:          own("serviceAccountId"),
		Auth:               own("auth"),
		FlyOrg:             own("flyOrg"),
		PoolID:             own("workloadIdentityPoolId"),
	}
	if v := own("keyVersion"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return RelayAccessArgs{}, fmt.Errorf("config keyVersion: %w", err)
		}
		args.KeyVersion = n
	}
	return args, nil
}
