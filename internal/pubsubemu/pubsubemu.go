// Package pubsubemu finds Google's Pub/Sub emulator on this machine, for the
// e2e suite and the load tool, which both start one of their own.
package pubsubemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Find returns the path of Google's launcher script cloud-pubsub-emulator:
// on PATH, in the SDK that the gcloud on PATH belongs to, or where Debian's
// package (google-cloud-cli-pubsub-emulator) puts it. The launcher runs
// $JAVA_HOME/bin/java or java from PATH, so Find checks for one of those
// too. Start the launcher itself, not `gcloud beta emulators pubsub start`,
// which leaves its Java child running when stopped.
func Find() (string, error) {
	if _, err := exec.LookPath("java"); err != nil {
		if home := os.Getenv("JAVA_HOME"); home == "" || !isFile(filepath.Join(home, "bin", "java")) {
			return "", errors.New("java not found (neither on PATH nor in $JAVA_HOME/bin)")
		}
	}
	const rel = "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
	var candidates []string
	if p, err := exec.LookPath("cloud-pubsub-emulator"); err == nil {
		candidates = append(candidates, p)
	}
	if p, err := exec.LookPath("gcloud"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			// gcloud lives in <sdk root>/bin.
			candidates = append(candidates, filepath.Join(filepath.Dir(filepath.Dir(real)), rel))
		}
	}
	candidates = append(candidates, "/usr/lib/google-cloud-sdk/"+rel)
	for _, c := range candidates {
		if isFile(c) {
			return c, nil
		}
	}
	return "", fmt.Errorf("cloud-pubsub-emulator not found (looked in %s); install google-cloud-cli-pubsub-emulator", strings.Join(candidates, ", "))
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}
