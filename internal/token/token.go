// Package token mints and verifies the short-lived signed tokens that let a
// browser publish when the relay runs with BROWSER_PUBLISH=signed. The site's
// backend holds the signing key (PUBLISH_SIGNING_KEY) and gives a page a
// token; the page passes it when it connects (/ws?token=...). A token is
//
//	v1.<expiry, Unix seconds>.<base64url HMAC-SHA256(key, "v1.<expiry>")>
//
// so any backend can mint one with a few lines of code in any language, and
// the relay checks it without state: no database, no call back to the site.
package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MinKeyLen is the shortest signing key accepted, in bytes: shorter keys
// can be guessed offline from one token.
const MinKeyLen = 32

// MaxTTL is the longest life Mint gives a token. Tokens are bearer
// credentials that may end up in a URL; a short life limits a leaked one.
const MaxTTL = 24 * time.Hour

const version = "v1"

// Errors from Verify. They say what is wrong for logs and tests; a client
// is only told it may not publish.
var (
	ErrMalformed = errors.New("token: malformed")
	ErrSignature = errors.New("token: bad signature")
	ErrExpired   = errors.New("token: expired")
)

// Mint returns a token signed with key that expires ttl after now
// (truncated to the second).
func Mint(key []byte, now time.Time, ttl time.Duration) (string, error) {
	if len(key) < MinKeyLen {
		return "", fmt.Errorf("token: signing key is %d bytes, want at least %d", len(key), MinKeyLen)
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", fmt.Errorf("token: ttl %s: want more than 0 and at most %s", ttl, MaxTTL)
	}
	payload := version + "." + strconv.FormatInt(now.Add(ttl).Unix(), 10)
	return payload + "." + sign(key, payload), nil
}

// Verify checks tok's signature with key and that it has not expired at
// now. It returns the expiry.
func Verify(key []byte, tok string, now time.Time) (time.Time, error) {
	// At most 3 parts, so a token of many dots costs nothing to reject.
	parts := strings.SplitN(tok, ".", 3)
	if len(parts) != 3 || parts[0] != version || len(tok) > 128 {
		return time.Time{}, ErrMalformed
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || exp <= 0 {
		return time.Time{}, ErrMalformed
	}
	want := sign(key, parts[0]+"."+parts[1])
	// hmac.Equal is constant time: the comparison tells an attacker nothing
	// about how much of a forged signature was right.
	if !hmac.Equal([]byte(parts[2]), []byte(want)) {
		return time.Time{}, ErrSignature
	}
	expiry := time.Unix(exp, 0)
	if !now.Before(expiry) {
		return expiry, ErrExpired
	}
	return expiry, nil
}

func sign(key []byte, payload string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
