# syntax=docker/dockerfile:1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY app ./app
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /skywatch ./app

# distroless static: CA certificates for Google's APIs, no shell, non-root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /skywatch /skywatch
EXPOSE 8080
ENTRYPOINT ["/skywatch"]
