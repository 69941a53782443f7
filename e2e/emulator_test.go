//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcpubsub "github.com/testcontainers/testcontainers-go/modules/gcloud/pubsub"

	"github.com/skywatch-dev/skywatch/internal/pubsubemu"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// emulatorImage is Google's official image with the Pub/Sub emulator. The
// tag is pinned to the same Cloud SDK release as the Debian package
// google-cloud-cli-pubsub-emulator on the development machines, so both
// paths run the same emulator.
const emulatorImage = "gcr.io/google.com/cloudsdktool/google-cloud-cli:528.0.0-emulators"

// emulatorEnv forces how the emulator runs: "docker", "local" or "" (auto).
const emulatorEnv = "SKYWATCH_EMULATOR"

// emulatorHelp says how to get an emulator when none is found.
const emulatorHelp = `no Pub/Sub emulator: start a Docker engine (the suite runs ` + emulatorImage + `),
or install Google's emulator and java: "gcloud components install pubsub-emulator",
or apt-get install google-cloud-cli-pubsub-emulator default-jre-headless
(` + emulatorEnv + `=docker|local forces one)`

// emulator is one running Pub/Sub emulator. Stop and Start make a broker
// outage: Start brings it back on the same address, with no state at all,
// as the official emulator forgets everything when it restarts.
type emulator interface {
	// Host is the host:port for PUBSUB_EMULATOR_HOST.
	Host() string
	// Kind says which one runs, for the logs.
	Kind() string
	Stop(ctx context.Context) error
	Start(ctx context.Context) error
	// Close stops it for good and frees everything it holds.
	Close() error
}

// startEmulator starts the emulator chosen by SKYWATCH_EMULATOR, or the
// container when a Docker engine answers and else the local install. Its
// output goes to logw.
func startEmulator(ctx context.Context, logw io.Writer) (emulator, error) {
	switch mode := os.Getenv(emulatorEnv); mode {
	case "docker":
		if err := dockerAnswers(ctx); err != nil {
			return nil, fmt.Errorf("%s=docker: %w\n%s", emulatorEnv, err, emulatorHelp)
		}
		return startDockerEmulator(ctx, logw)
	case "local":
		launcher, err := pubsubemu.Find()
		if err != nil {
			return nil, fmt.Errorf("%s=local: %w\n%s", emulatorEnv, err, emulatorHelp)
		}
		return startLocalEmulator(ctx, launcher, logw)
	case "", "auto":
		dockerErr := dockerAnswers(ctx)
		if dockerErr == nil {
			return startDockerEmulator(ctx, logw)
		}
		launcher, localErr := pubsubemu.Find()
		if localErr == nil {
			return startLocalEmulator(ctx, launcher, logw)
		}
		return nil, fmt.Errorf("%v; local emulator: %v\n%s", dockerErr, localErr, emulatorHelp)
	default:
		return nil, fmt.Errorf("%s=%q: want docker, local or nothing", emulatorEnv, mode)
	}
}

// dockerAnswers reports whether a Docker engine answers, quickly.
func dockerAnswers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	provider, err := testcontainers.NewDockerProvider()
	if err == nil {
		err = provider.Health(ctx)
	}
	if err != nil {
		return fmt.Errorf("no Docker engine answers (%w)", err)
	}
	return nil
}

// waitEmulator waits until the emulator at host answers HTTP (its REST and
// gRPC share the port), or exited is closed, or ctx ends.
func waitEmulator(ctx context.Context, host string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("emulator exited before it answered")
		case <-ctx.Done():
			return fmt.Errorf("emulator at %s did not answer: %w", host, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// --- the container (GitHub Actions) ---

type dockerEmulator struct {
	ctr  *tcpubsub.Container
	host string
}

func startDockerEmulator(ctx context.Context, logw io.Writer) (*dockerEmulator, error) {
	// A fixed host port, so that after Stop and Start (the outage test) the
	// emulator is back at the address the relays already know.
	port, err := testkit.FreePort()
	if err != nil {
		return nil, err
	}
	ctr, err := tcpubsub.Run(ctx, emulatorImage,
		tcpubsub.WithProjectID(projectID),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort("8085/tcp"): {{HostPort: strconv.Itoa(port)}},
			}
		}),
		testcontainers.WithLogConsumers(&logConsumer{w: logw}),
	)
	if err != nil {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("emulator container: %w", err)
	}
	e := &dockerEmulator{ctr: ctr, host: ctr.URI()}
	if err := waitEmulator(ctx, e.host, nil); err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

func (e *dockerEmulator) Host() string { return e.host }
func (e *dockerEmulator) Kind() string { return "docker " + emulatorImage }

func (e *dockerEmulator) Stop(ctx context.Context) error {
	timeout := 5 * time.Second
	return e.ctr.Stop(ctx, &timeout)
}

func (e *dockerEmulator) Start(ctx context.Context) error {
	if err := e.ctr.Start(ctx); err != nil {
		return err
	}
	// The module's wait strategy sees the log line of the first start, so
	// wait for the emulator itself.
	return waitEmulator(ctx, e.host, nil)
}

func (e *dockerEmulator) Close() error { return testcontainers.TerminateContainer(e.ctr) }

type logConsumer struct{ w io.Writer }

func (c *logConsumer) Accept(l testcontainers.Log) { _, _ = c.w.Write(l.Content) }

// --- the local install (development machines, the project's own CI) ---

type localEmulator struct {
	launcher string
	port     int
	logw     io.Writer

	mu   sync.Mutex
	proc *testkit.Group // nil while stopped
}

func startLocalEmulator(ctx context.Context, launcher string, logw io.Writer) (*localEmulator, error) {
	port, err := testkit.FreePort()
	if err != nil {
		return nil, err
	}
	e := &localEmulator{launcher: launcher, port: port, logw: logw}
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *localEmulator) Host() string { return "127.0.0.1:" + strconv.Itoa(e.port) }
func (e *localEmulator) Kind() string { return "local " + e.launcher }

// Start runs the launcher directly, not "gcloud beta emulators pubsub
// start", which leaves its java child behind when killed. It runs in a
// process group of its own, so that Stop ends the launcher and anything it
// started, and nothing else.
func (e *localEmulator) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil {
		return errors.New("emulator already running")
	}
	cmd := exec.Command(e.launcher, "--host=127.0.0.1", "--port="+strconv.Itoa(e.port))
	cmd.Stdout = e.logw
	cmd.Stderr = e.logw
	// The launcher execs java, so the group leader is the JVM.
	proc, err := testkit.StartGroup(cmd, nil)
	if err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	e.proc = proc
	if err := waitEmulator(ctx, e.Host(), proc.Exited()); err != nil {
		e.stopLocked()
		return err
	}
	return nil
}

func (e *localEmulator) Stop(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopLocked()
	return nil
}

// stopLocked ends the process group it started: SIGTERM, then SIGKILL.
func (e *localEmulator) stopLocked() {
	if e.proc == nil {
		return
	}
	e.proc.Stop(5 * time.Second)
	e.proc = nil
}

func (e *localEmulator) Close() error { return e.Stop(context.Background()) }
