# syntax=docker/dockerfile:1
# The relay's image. Pinned to go.mod's Go version (1.26.6): a newer
# go.mod would otherwise make the toolchain download another Go at build
# time, and an older image could not build at all. Keep the two in step.
FROM golang:1.26.6-bookworm AS build
WORKDIR /src
# No `go mod download`: it would fetch every module in go.mod, including
# Pulumi's, testcontainers' and chromedp's, which only infra/ and e2e/ use.
# `go build ./app` fetches only the modules the relay imports (Go's pruned
# module graph). The cache mounts keep modules and compiled packages across
# builds without putting them in a layer.
COPY go.mod go.sum ./
COPY app ./app
COPY internal ./internal
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local \
    go build -trimpath -ldflags="-s -w" -o /skywatch ./app

# distroless static: CA certificates for Google's APIs, no shell, non-root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /skywatch /skywatch
EXPOSE 8080
ENTRYPOINT ["/skywatch"]
