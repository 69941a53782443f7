# The Makefile is Skywatch's interface: the README, .ci/run and GitHub
# Actions call these targets and nothing else.

GO          ?= go
PKGS        := ./...
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
ACTIONLINT  := github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
# RACE=1 adds the race detector to `make test` (GitHub Actions does).
TESTFLAGS   := -count=1 $(if $(RACE),-race,)
BIN         := bin/skywatch

.DEFAULT_GOAL := help
.PHONY: help run dev test e2e bench load fuzz lint build docker clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## one relay on :8080 with the embedded broker (open http://localhost:8080)
	$(GO) run ./app

dev: ## three relays on :8081-8083 sharing one embedded broker
	$(GO) run ./app -dev

test: ## unit and integration tests; needs nothing but Go
	$(GO) test $(TESTFLAGS) -timeout 10m $(PKGS)

e2e: ## several relay processes on Google's Pub/Sub emulator, real clients, Chromium
	$(GO) test -tags e2e -count=1 -timeout 20m -v ./e2e/...

# COUNT=5 repeats each benchmark, for medians as in docs/performance.md.
COUNT ?= 1
bench: ## hub fan-out and per-connection memory (figures in docs/performance.md)
	$(GO) test -run '^$$' -bench . -count=$(COUNT) -timeout 20m ./internal/hub/

# Fuzz targets, as package:Target. `make test` runs their seed corpora as
# unit tests; `make fuzz` explores each for FUZZTIME.
FUZZTIME    ?= 1m
FUZZTARGETS := ./internal/protocol:FuzzParseRequest ./internal/protocol:FuzzParsePublish \
               ./internal/protocol:FuzzDecodeAlert ./internal/hub:FuzzFrameGuard
fuzz: ## each fuzz target for FUZZTIME (default 1m): frame decoder, API body parser, frame guard
	@set -e; for t in $(FUZZTARGETS); do \
		echo "fuzz $${t#*:} ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}"; \
	done

# LOADFLAGS are the load tool's flags (go run ./load -h), e.g.
#   make load LOADFLAGS='-clients 200 -rates 50,100'
#   make load LOADFLAGS='-url wss://skywatch.fly.dev/ws -remote -rates 5'
LOADFLAGS ?=
load: ## relays on the emulator under load: latency, loss, CPU and memory per client (docs/performance.md)
	$(GO) run ./load $(LOADFLAGS)

lint: ## gofmt, go vet, staticcheck and actionlint, all pinned
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./e2e/...
	$(GO) run $(STATICCHECK) $(PKGS)
	$(GO) run $(STATICCHECK) -tags e2e ./e2e/...
	$(GO) run $(ACTIONLINT)

build: ## the relay binary in bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./app

docker: ## the container image Fly deploys
	docker build -t skywatch .

clean: ## remove build output
	rm -rf bin e2e/artifacts
