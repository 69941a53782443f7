// Package web serves the browser page: a red button that sends an alert,
// the list of alerts as they arrive, which VM the page is connected to, and
// the fleet (fleet.js).
// The files are embedded, so the relay is one binary.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

//go:embed static
var static embed.FS

// Handler serves "/" (the page) and "/static/..." (its script and styles).
// relays are the other relays' WebSocket URLs the relay lists in its hello
// (hub.Config.Relays): the content security policy lets the page connect to
// its own origin and to those, and to nothing else, so a crafted link or an
// injected script cannot move the page to someone else's relay.
func Handler(relays ...string) http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// The path is a constant checked by the embed directive above.
		panic(err)
	}
	files := http.FileServerFS(sub)
	connect := connectSources(relays)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page is tiny; always revalidate so a deploy shows at once.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; connect-src "+connect+
			"; script-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, sub, "index.html")
			return
		}
		http.StripPrefix("/static", files).ServeHTTP(w, r)
	})
}

// connectSources is the connect-src list: 'self', which CSP Level 3 makes
// match the page's own ws: and wss: origin too (Chromium, Firefox, Safari
// 15.4+), and each fallback relay's origin. A URL that is not a plain
// ws:// or wss:// host[:port] is left out rather than passed into the
// header.
func connectSources(relays []string) string {
	srcs := []string{"'self'"}
	for _, r := range relays {
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || !hostRE.MatchString(u.Host) {
			continue
		}
		srcs = append(srcs, u.Scheme+"://"+u.Host)
	}
	return strings.Join(srcs, " ")
}

// hostRE is a host[:port] with nothing that could end a CSP source.
var hostRE = regexp.MustCompile(`^[A-Za-z0-9.\-]+(:[0-9]+)?$|^\[[0-9A-Fa-f:.]+\](:[0-9]+)?$`)
