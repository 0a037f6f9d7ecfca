package serve

import (
	"bytes"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// The page is plain HTML, CSS and JavaScript modules with no build step;
// README.md and testdata/ stay out of the binary.
//
//go:embed ui/*.html ui/*.css ui/*.js ui/*.svg
var uiFiles embed.FS

// uiCSP confines the page to its own origin: no inline script, no
// third-party hosts, no framing. It backs up the renderer, which never
// turns model output into HTML.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// registerUI serves the chat page at / and its assets under /ui/ on mux,
// outside the API-key check (the page asks for the key and sends it to
// the API itself). authRequired tells the page to ask before its first
// API call, so a correct key never costs a 401.
func registerUI(mux *http.ServeMux, authRequired bool) {
	h := &uiHandler{files: uiFiles}
	cfg, _ := json.Marshal(map[string]bool{"auth_required": authRequired})
	h.config = cfg
	mux.Handle("GET /{$}", h)
	mux.Handle("GET /ui/", h)
}

type uiHandler struct {
	files  fs.FS
	config []byte // GET /ui/config.json
}

func (h *uiHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	// Assets change with the binary and have no modification time:
	// revalidate rather than mix versions after an upgrade.
	hdr.Set("Cache-Control", "no-cache")
	name := "ui/index.html"
	if r.URL.Path != "/" {
		name = path.Clean(r.URL.Path[1:])
	}
	if name == "ui/config.json" {
		hdr.Set("Content-Type", "application/json")
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(h.config))
		return
	}
	b, err := fs.ReadFile(h.files, name)
	if err != nil || path.Dir(name) != "ui" {
		http.NotFound(w, r)
		return
	}
	if path.Ext(name) == ".html" {
		hdr.Set("Content-Security-Policy", uiCSP)
		hdr.Set("Referrer-Policy", "no-referrer")
	}
	// ServeContent picks the type from the extension (Go's built-in
	// table covers .html, .css, .js and .svg on every system) and
	// answers HEAD and Range.
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}
