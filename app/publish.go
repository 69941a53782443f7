package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/skywatch-dev/skywatch/internal/api"
	"github.com/skywatch-dev/skywatch/internal/names"
)

// publish is `skywatch publish [-url URL] [-nonce KEY] text...`: one alert
// through a deployment's POST /api/alerts. The token comes from
// SKYWATCH_TOKEN only, never from an argument, which `ps` would show to
// every user of the machine. It prints the alert's id.
func publish(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("skywatch publish", flag.ContinueOnError)
	fs.SetOutput(stdout)
	base := fs.String("url", or(getenv(names.EnvURL), "http://localhost:8080"), "the relay or deployment (default $"+names.EnvURL+")")
	nonce := fs.String("nonce", "", "idempotency key: a retry with the same key publishes the same alert id, which relays drop")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s publish [flags] text...\n\nThe token comes from $%s.\n\n", "skywatch", names.EnvToken)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	text := strings.Join(fs.Args(), " ")
	if text == "" {
		fs.Usage()
		return errors.New("publish: no text")
	}
	tok := getenv(names.EnvToken)
	if tok == "" {
		return fmt.Errorf("publish: %s is not set (one of the deployment's %s)", names.EnvToken, names.EnvPublishTokens)
	}
	body, _ := json.Marshal(struct {
		Text  string `json:"text"`
		Nonce string `json:"nonce,omitempty"`
	}{text, *nonce})

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*base, "/")+"/api/alerts", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusAccepted {
		var ok struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(raw, &ok); err != nil || ok.ID == "" {
			return fmt.Errorf("publish: %s with an unexpected body", resp.Status)
		}
		fmt.Fprintln(stdout, ok.ID)
		return nil
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(raw, &e) != nil || e.Error.Code == "" {
		return fmt.Errorf("publish: %s", resp.Status)
	}
	err = fmt.Errorf("publish: %s: %s (%s)", resp.Status, e.Error.Message, e.Error.Code)
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		err = fmt.Errorf("%w; retry after %s s", err, ra)
	}
	if e.Error.Code == api.CodeNotFound {
		err = fmt.Errorf("%w; is %s set on the relay?", err, names.EnvPublishTokens)
	}
	return err
}
