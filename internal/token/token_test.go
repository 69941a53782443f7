package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func TestMintVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok, err := Mint(key, now, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := Verify(key, tok, now.Add(9*time.Minute))
	if err != nil {
		t.Fatalf("Verify of a fresh token: %v", err)
	}
	if !exp.Equal(now.Add(10 * time.Minute)) {
		t.Errorf("expiry = %v, want %v", exp, now.Add(10*time.Minute))
	}
	if _, err := Verify(key, tok, now.Add(10*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Errorf("Verify at expiry: %v, want ErrExpired", err)
	}
	other := []byte(strings.Repeat("k", 32))
	if _, err := Verify(other, tok, now); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify with another key: %v, want ErrSignature", err)
	}
}

func TestTampered(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok, _ := Mint(key, now, time.Minute)
	parts := strings.Split(tok, ".")
	later := "v1." + "1900000000" + "." + parts[2] // a longer life, same signature
	flipped := tok[:len(tok)-1] + "A"
	if strings.HasSuffix(tok, "A") {
		flipped = tok[:len(tok)-1] + "B"
	}
	for name, tc := range map[string]struct {
		tok  string
		want error
	}{
		"extended expiry":   {later, ErrSignature},
		"last char changed": {flipped, ErrSignature},
		"empty":             {"", ErrMalformed},
		"no signature":      {parts[0] + "." + parts[1], ErrMalformed},
		"other version":     {"v2." + parts[1] + "." + parts[2], ErrMalformed},
		"expiry not number": {"v1.x." + parts[2], ErrMalformed},
		"negative expiry":   {"v1.-5." + parts[2], ErrMalformed},
		"very long":         {tok + strings.Repeat("A", 200), ErrMalformed},
	} {
		if _, err := Verify(key, tc.tok, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify(%q) = %v, want %v", name, tc.tok, err, tc.want)
		}
	}
}

func TestMintRefuses(t *testing.T) {
	now := time.Now()
	if _, err := Mint(key[:31], now, time.Minute); err == nil {
		t.Error("Mint with a 31-byte key: want an error")
	}
	for _, ttl := range []time.Duration{0, -time.Second, MaxTTL + time.Second} {
		if _, err := Mint(key, now, ttl); err == nil {
			t.Errorf("Mint with ttl %s: want an error", ttl)
		}
	}
}
