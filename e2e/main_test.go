//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// projectID is the Google Cloud project the relays and the admin client use
// on the emulator; any name works there.
const projectID = "skywatch-e2e"

// artifactsDir receives logs and screenshots; CI uploads it. Tests run in
// the package directory, so this is e2e/artifacts.
const artifactsDir = "artifacts"

// The shared fixtures are made on first use and freed after every test ran,
// so that "-run TestBrokerConformance" neither builds the relay nor needs
// Chromium.
var (
	shared struct {
		emuOnce sync.Once
		emu     emulator
		emuLog  *os.File
		emuErr  error

		binOnce sync.Once
		binDir  string
		bin     string
		binErr  error
	}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.emu != nil {
		if err := shared.emu.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: close emulator: %v\n", err)
		}
	}
	if shared.emuLog != nil {
		shared.emuLog.Close()
	}
	if shared.binDir != "" {
		os.RemoveAll(shared.binDir)
	}
	os.Exit(code)
}

// sharedEmulator returns the emulator that most tests share; each test uses
// a topic of its own on it, so tests do not see each other's alerts.
func sharedEmulator(t *testing.T) emulator {
	t.Helper()
	shared.emuOnce.Do(func() {
		f, err := createArtifact("emulator-shared.log")
		if err != nil {
			shared.emuErr = err
			return
		}
		shared.emuLog = f
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		shared.emu, shared.emuErr = startEmulator(ctx, f)
		if shared.emuErr == nil {
			fmt.Fprintf(os.Stderr, "e2e: Pub/Sub emulator: %s at %s (ready in %s)\n",
				shared.emu.Kind(), shared.emu.Host(), time.Since(start).Round(time.Millisecond))
		}
	})
	if shared.emuErr != nil {
		t.Fatalf("start the Pub/Sub emulator: %v", shared.emuErr)
	}
	return shared.emu
}

// newEmulator starts an emulator for one test alone (the outage test stops
// it), stopped when the test ends.
func newEmulator(t *testing.T) emulator {
	t.Helper()
	f, err := createArtifact(logName(t) + "-emulator.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	emu, err := startEmulator(ctx, f)
	if err != nil {
		t.Fatalf("start a Pub/Sub emulator: %v", err)
	}
	t.Cleanup(func() {
		if err := emu.Close(); err != nil {
			t.Errorf("close emulator: %v", err)
		}
	})
	t.Logf("own Pub/Sub emulator: %s at %s", emu.Kind(), emu.Host())
	return emu
}

// relayBinary builds ./app once per run and returns the path of the binary.
func relayBinary(t *testing.T) string {
	t.Helper()
	shared.binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "skywatch-e2e-bin-")
		if err != nil {
			shared.binErr = err
			return
		}
		shared.binDir = dir
		bin := filepath.Join(dir, "skywatch")
		start := time.Now()
		// The package path works from any directory inside the module.
		cmd := exec.Command("go", "build", "-o", bin, "github.com/skywatch-dev/skywatch/app")
		out, err := cmd.CombinedOutput()
		if err != nil {
			shared.binErr = fmt.Errorf("go build ./app: %w\n%s", err, out)
			return
		}
		shared.bin = bin
		fmt.Fprintf(os.Stderr, "e2e: built the relay in %s\n", time.Since(start).Round(time.Millisecond))
	})
	if shared.binErr != nil {
		t.Fatalf("build the relay: %v", shared.binErr)
	}
	return shared.bin
}

// createArtifact creates (or truncates) a file in e2e/artifacts.
func createArtifact(name string) (*os.File, error) {
	path := filepath.Join(artifactsDir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	return f, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// logName turns a test name into a file name.
func logName(t *testing.T) string {
	return unsafeChars.ReplaceAllString(t.Name(), "_")
}

// randomHex returns n random bytes as hex, like Fly's alloc ids.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// topicFor gives each test a topic of its own on a shared emulator.
func topicFor(t *testing.T) string {
	name := strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "-"))
	if len(name) > 60 {
		name = name[:60]
	}
	return "e2e-" + name + "-" + randomHex(3)
}
