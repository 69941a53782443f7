// Package mempubsub is the embedded, in-memory broker.Broker: the default
// when no Pub/Sub is configured, so `make run` needs nothing else running.
//
// It keeps Pub/Sub's shape rather than being a simpler channel fan-out, so
// code developed against it behaves the same on Google Cloud: every
// subscription gets every message published after it was created, and a
// subscription keeps its backlog while nobody is receiving. It lives in one
// process, so it only fans out between subscriptions of that process.
package mempubsub
