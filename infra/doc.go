// Command infra is Skywatch's Pulumi program. `pulumi up` (run from the
// repository root, where Pulumi.yaml says `main: infra/`) does what the
// original article did by hand in the Google Cloud console, with least
// privilege and without a key file on anyone's disk:
//
//   - enables the Pub/Sub API (and the IAM and Resource Manager APIs the
//     program itself needs) on the project;
//   - creates the topic the relays publish to;
//   - creates a service account for the relay and grants it two custom
//     roles: publish/get/attach on the topic, and create/get/consume/delete
//     subscriptions on the project (docs/iam.md says why each is needed and
//     why the subscription grant cannot be narrowed to the ID_ prefix);
//   - lets the relay's Fly Machines act as that account, as the stack
//     config skywatch:auth says.
//
// With auth "keyless" (the default) the program creates a workload identity
// pool whose OIDC provider trusts the Fly org's issuer for this app's
// machines only, grants roles/iam.workloadIdentityUser on the account to the
// app's principals only, and enables the STS and IAM Credentials APIs. No key
// and no secret exist; the stack output relayEnv is the non-secret
// configuration for fly.toml's [env] (keyless.go).
//
// With auth "key", for hosts without OIDC, it creates a key for the account
// and hands it to the Fly app as the secret GCP_SERVICE_ACCOUNT_KEY through
// `flyctl secrets import` on stdin, so the key never reaches a file, an
// argument or a log; bumping skywatch:keyVersion rotates it.
//
// main.go reads stack config and exports outputs; access.go builds the
// resources as the RelayAccess component so tests can drive it with
// Pulumi's mock engine.
package main
