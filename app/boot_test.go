package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// These tests boot a relay while Pub/Sub refuses it, as right after the
// first `pulumi up` (IAM grants take minutes to propagate) or during an
// outage: it must listen at once, say it is alive but not ready, answer
// alerts with `unavailable`, and become ready by itself once Pub/Sub
// answers, without a restart.

// bootWait bounds how long a relay may take to become ready once Pub/Sub
// answers: a connection attempt in flight (5 s), the broker's backoff
// (5 s) and the feed's (5 s), with room for a loaded machine.
const bootWait = 60 * time.Second

func TestBootWhilePermissionDenied(t *testing.T) {
	deny := &testkit.Refuser{}
	deny.On.Store(true)
	srv := pstest.NewServer(pstest.ServerReactorOption{FuncName: "GetTopic", Reactor: deny})
	t.Cleanup(func() { srv.Close() })
	v := startVM(t, emulatorEnv(srv, "boot-denied", "ams"))

	v.logs.WaitFor(t, bootWait, "grants can take minutes to propagate")
	expectUnready(t, v)

	deny.On.Store(false)
	waitReadyWithin(t, v, bootWait)
	expectAlertCrosses(t, v)
	if n := strings.Count(v.logs.String(), "grants can take minutes to propagate"); n != 1 {
		t.Errorf("the refusal was logged %d times, want once:\n%s", n, v.logs)
	}
}

func TestBootWhileUnreachable(t *testing.T) {
	addr := testkit.FreeAddr(t)
	v := startVM(t, map[string]string{
		"FLY_ALLOC_ID":         "boot-unreachable",
		"GOOGLE_CLOUD_PROJECT": testProject,
		"PUBSUB_EMULATOR_HOST": addr,
	})
	v.logs.WaitFor(t, bootWait, "pubsub unreachable")
	expectUnready(t, v)

	srv := pstest.NewServerWithAddress(addr)
	t.Cleanup(func() { srv.Close() })
	waitReadyWithin(t, v, bootWait)
	expectAlertCrosses(t, v)
}

// TestBadKeyFailsAtOnce: a key that is JSON but not a usable key fails at
// once, naming the variable and never quoting the value; the relay does
// not listen and testkit.Wait.
func TestBadKeyFailsAtOnce(t *testing.T) {
	env := map[string]string{
		"PORT":                    "0",
		"GOOGLE_CLOUD_PROJECT":    testProject,
		"GCP_SERVICE_ACCOUNT_KEY": `{"type":"service_account","client_email":"a@b","private_key":"SECRET-NOT-A-PEM"}`,
	}
	logs := &testkit.SyncBuffer{}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		done <- run(ctx, []string{"skywatch"}, func(k string) string { return env[k] }, nil, logs)
	}()
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err == nil || !strings.Contains(err.Error(), "GCP_SERVICE_ACCOUNT_KEY") {
			t.Fatalf("run: %v, want an error naming GCP_SERVICE_ACCOUNT_KEY", err)
		}
		if strings.Contains(err.Error()+logs.String(), "SECRET") {
			t.Errorf("the key's value leaked: %v\n%s", err, logs)
		}
		t.Logf("run: %v", err)
	case <-time.After(testkit.Wait):
		t.Fatalf("run still going with an unparseable key:\n%s", logs)
	}
}

func TestKeylessConfig(t *testing.T) {
	const aud = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/fly"
	base := func() map[string]string {
		return map[string]string{
			"GOOGLE_CLOUD_PROJECT":           "proj-1",
			"GCP_WORKLOAD_IDENTITY_AUDIENCE": aud,
			"GCP_SERVICE_ACCOUNT_EMAIL":      "relay@proj-1.iam.gserviceaccount.com",
		}
	}
	cfg, err := loadConfig(func(k string) string { return base()[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WorkloadAudience != aud || cfg.ServiceAccountEmail != "relay@proj-1.iam.gserviceaccount.com" || cfg.brokerKind() != "gcp" {
		t.Errorf("config %+v, want keyless on gcp", cfg)
	}
	for name, tc := range map[string]struct {
		set, unset string
		want       string
	}{
		"key too":    {set: "GCP_SERVICE_ACCOUNT_KEY", want: "both set"},
		"no email":   {unset: "GCP_SERVICE_ACCOUNT_EMAIL", want: "GCP_SERVICE_ACCOUNT_EMAIL"},
		"no project": {unset: "GOOGLE_CLOUD_PROJECT", want: "GOOGLE_CLOUD_PROJECT"},
	} {
		t.Run(name, func(t *testing.T) {
			env := base()
			delete(env, tc.unset)
			if tc.set != "" {
				env[tc.set] = `{"type":"service_account"}`
			}
			if _, err := loadConfig(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("loadConfig: %v, want an error mentioning %s", err, tc.want)
			}
		})
	}
}

// expectUnready checks what a relay without Pub/Sub serves: alive, not
// ready, and an alert answered `unavailable`.
func expectUnready(t *testing.T, v *vm) {
	t.Helper()
	if got := v.status(t, "/healthz"); got != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", got)
	}
	if got := v.status(t, "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503", got)
	}
	c := dial(t, v, "early client")
	if f := c.MustAnswer(t, "anyone there?", "early"); f.Type != "error" || f.Code != "unavailable" {
		t.Errorf("answer %s, want unavailable for nonce early", f)
	}
}

// expectAlertCrosses sends an alert through Pub/Sub and back.
func expectAlertCrosses(t *testing.T, v *vm) {
	t.Helper()
	c := dial(t, v, "late client")
	c.ExpectAlerts(t, testkit.Wait, []string{ack(t, c, "made it", "late")}, nil)
}

func waitReadyWithin(t *testing.T, v *vm, d time.Duration) {
	t.Helper()
	if err := v.WaitStatus("/readyz", http.StatusOK, d, nil); err != nil {
		t.Fatalf("VM %s not ready %v after Pub/Sub answered: %v\n%s", v.id, d, err, v.logs)
	}
}
