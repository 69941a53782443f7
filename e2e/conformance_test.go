//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// conformancePkg holds TestConformanceEmulator, which runs the broker
// conformance suite (brokertest.Run, unchanged) through gcppubsub against
// the emulator named by SKYWATCH_E2E_EMULATOR_HOST, and skips without it.
// It has to live there: e2e/ may not import app/internal/... (Go's internal
// rule), so this test starts the emulator and runs that test against it.
const (
	conformancePkg  = "github.com/skywatch-dev/skywatch/app/internal/broker/gcppubsub"
	conformanceTest = "TestConformanceEmulator"
)

// TestBrokerConformance proves that gcppubsub passes the broker
// conformance suite against Google's official emulator, not only against
// the in-process pstest fake that `make test` uses.
func TestBrokerConformance(t *testing.T) {
	emu := sharedEmulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "-run", "^"+conformanceTest+"$", conformancePkg)
	cmd.Env = append(os.Environ(),
		"SKYWATCH_E2E_EMULATOR_HOST="+emu.Host(),
		"SKYWATCH_E2E_PROJECT="+projectID,
	)
	out, err := cmd.CombinedOutput()
	if f, ferr := createArtifact(logName(t) + ".log"); ferr == nil {
		_, _ = f.Write(out)
		f.Close()
	}
	switch {
	case err != nil:
		t.Fatalf("go test -run %s %s against the %s emulator: %v\n%s", conformanceTest, conformancePkg, emu.Kind(), err, out)
	case !strings.Contains(string(out), "--- PASS: "+conformanceTest):
		t.Fatalf("%s did not run and pass in %s (missing, or skipped without SKYWATCH_E2E_EMULATOR_HOST):\n%s",
			conformanceTest, conformancePkg, out)
	}
	t.Logf("conformance suite passed on the %s emulator:\n%s", emu.Kind(), passLines(string(out)))
}

// passLines keeps the "--- PASS" lines of go test -v output.
func passLines(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "--- ") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	return strings.Join(keep, "\n")
}
