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
//   - creates a key for that account and hands it to the Fly app as the
//     secret GCP_SERVICE_ACCOUNT_KEY through `flyctl secrets import` on
//     stdin, so the key never reaches a file, an argument or a log.
//
// main.go reads stack config and exports outputs; access.go builds the
// resources as the RelayAccess component so tests can drive it with
// Pulumi's mock engine.
package main
