// Package web serves the browser page: a red button that sends an alert,
// the list of alerts as they arrive, which VM the page is connected to, and
// the fleet (fleet.js).
// The files are embedded, so the relay is one binary.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Handler serves "/" (the page) and "/static/..." (its script and styles).
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		// The path is a constant checked by the embed directive above.
		panic(err)
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page is tiny; always revalidate so a deploy shows at once.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy",
			"default-src 'self'; connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, sub, "index.html")
			return
		}
		http.StripPrefix("/static", files).ServeHTTP(w, r)
	})
}
