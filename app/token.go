package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/token"
)

// mintToken is `skywatch token [-ttl 10m]`: a browser token for
// BROWSER_PUBLISH=signed, signed with PUBLISH_SIGNING_KEY from the
// environment, for development. In production the site's backend mints
// them (package token documents the format).
func mintToken(_ context.Context, args []string, getenv func(string) string, _ io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("skywatch token", flag.ContinueOnError)
	fs.SetOutput(stdout)
	ttl := fs.Duration("ttl", 10*time.Minute, "how long the token lets a page connect with publishing rights")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	key := getenv(names.EnvSigningKey)
	if key == "" {
		return fmt.Errorf("token: %s is not set", names.EnvSigningKey)
	}
	tok, err := token.Mint([]byte(key), time.Now(), *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
