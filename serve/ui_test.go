package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"io/fs"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/third_party/stories260k"
)

// fetchUI gets path with method and no credentials.
func fetchUI(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

// The page and its assets are served from the binary with their content
// types, without the API key, while the API keeps asking for it.
func TestUIServed(t *testing.T) {
	gen := &fakeGen{ids: []int{1}}
	_, base := testServer(t, Options{Models: []Source{{Name: "m", Dir: "unused"}}, Open: fakeOpener(gen, storiesTokenizer(t, "")), APIKey: "k"})
	for _, tc := range []struct {
		method, path string
		status       int
		ctype        string
		contains     string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", `<script type="module" src="/ui/app.js"></script>`},
		{"HEAD", "/", 200, "text/html; charset=utf-8", ""},
		{"GET", "/ui/app.js", 200, "text/javascript; charset=utf-8", `from "./markdown.js"`},
		{"GET", "/ui/markdown.js", 200, "text/javascript; charset=utf-8", "export function renderMarkdown"},
		{"GET", "/ui/metrics.js", 200, "text/javascript; charset=utf-8", "export function parseMetrics"},
		{"GET", "/ui/style.css", 200, "text/css; charset=utf-8", ":root"},
		{"GET", "/ui/icon.svg", 200, "image/svg+xml", "<svg"},
		{"GET", "/ui/config.json", 200, "application/json", `{"auth_required":true}`},
		{"GET", "/ui/", 404, "", ""},
		{"GET", "/ui/nothing.js", 404, "", ""},
		{"GET", "/ui/README.md", 404, "", ""}, // not embedded
		{"GET", "/metrics", 200, "", "deepseek_requests_running"},
		{"GET", "/v1/models", 401, "application/json", "invalid_api_key"},
		{"POST", "/", 401, "application/json", "invalid_api_key"}, // only GET reaches the page
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, b := fetchUI(t, tc.method, base+tc.path)
			assert.Equal(t, tc.status, resp.StatusCode, "%s", b)
			if tc.ctype != "" {
				assert.Equal(t, tc.ctype, resp.Header.Get("Content-Type"))
			}
			assert.Contains(t, string(b), tc.contains)
			if tc.status == 200 && (strings.HasPrefix(tc.path, "/ui/") || tc.path == "/") {
				assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
			}
		})
	}
	resp, _ := fetchUI(t, "GET", base+"/")
	assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
}

// Every file the page refers to is embedded and served byte for byte.
func TestUIAssetsEmbedded(t *testing.T) {
	gen := &fakeGen{ids: []int{1}}
	_, base := testServer(t, Options{Models: []Source{{Name: "m", Dir: "unused"}}, Open: fakeOpener(gen, storiesTokenizer(t, ""))})
	_, page := fetchUI(t, "GET", base+"/")
	refs := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?:src|href)="(/ui/[^"]+)"`).FindAllStringSubmatch(string(page), -1) {
		refs[m[1]] = true
	}
	js, err := fs.Glob(uiFiles, "ui/*.js")
	require.NoError(t, err)
	for _, f := range js {
		b, err := fs.ReadFile(uiFiles, f)
		require.NoError(t, err)
		for _, m := range regexp.MustCompile(`from "\./([^"]+)"`).FindAllStringSubmatch(string(b), -1) {
			refs["/ui/"+m[1]] = true
		}
	}
	for _, want := range []string{"/ui/app.js", "/ui/style.css", "/ui/icon.svg", "/ui/markdown.js", "/ui/metrics.js"} {
		assert.True(t, refs[want], "the page refers to %s", want)
	}
	for ref := range refs {
		want, err := fs.ReadFile(uiFiles, strings.TrimPrefix(ref, "/"))
		require.NoError(t, err, "%s is embedded", ref)
		resp, got := fetchUI(t, "GET", base+ref)
		assert.Equal(t, 200, resp.StatusCode, ref)
		assert.Equal(t, want, got, ref)
	}
	_, cfg := fetchUI(t, "GET", base+"/ui/config.json")
	assert.JSONEq(t, `{"auth_required":false}`, string(cfg))
}

// fakeR1Reply is what the fake reasoning model of the browser test says:
// thinking, then an answer with HTML that must be shown as text, Markdown,
// a safe and an unsafe link, a code block, and a long tail to stop.
var fakeR1Reply = "Let me think about <b>tags</b>.</think>\n\n" +
	"Here is <script>window.__xss=1</script> and <img src=x onerror=\"window.__xss=2\"> with **bold**, `code`, " +
	"[docs](https://example.com/docs) and [evil](javascript:alert(1)).\n\n" +
	"```html\n<script>alert(\"code\")</script>\n<b>not bold</b>\n```\n\n" +
	strings.Repeat("The quick brown fox jumps over the lazy dog. ", 300)

// The page in headless Chromium (testdata/ui-e2e/e2e.mjs with
// playwright-core): the API key, the model picker, settings, a streamed
// reply from the real engine, history, a reasoning reply whose HTML shows
// as text, Stop (the server counts the request cancelled and its running
// gauge returns to 0), the status strip (also with /metrics behind a
// proxy that wants the key), no console errors, and a screenshot. CI
// installs Debian's chromium and "npm ci --prefix serve/testdata/ui-e2e".
// DEEPSEEK_UI_SCREENSHOT=PATH keeps the screenshot (serve/ui/testdata/
// chat.png is one).
func TestUIBrowser(t *testing.T) {
	node := needTool(t, "node", "apt-get install -y nodejs")
	browser := needTool(t, "chromium", "apt-get install -y chromium")
	dir, err := filepath.Abs(filepath.Join("testdata", "ui-e2e"))
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing(t, "playwright-core is not installed (npm ci --prefix serve/testdata/ui-e2e)")
	}

	tok := storiesTokenizer(t, "{% for m in messages %}{{ m.content }}\n{% endfor %}<think>\n")
	ids, err := tok.Encode(fakeR1Reply, false)
	require.NoError(t, err)
	require.Contains(t, tok.Decode(ids), "<script>window.__xss=1</script>", "the tokenizer keeps the markup")
	slow := &fakeGen{ids: ids, delay: 10 * time.Millisecond} // ~2,800 tokens: half a minute unless stopped
	engineOpen := EngineOpener(EngineOptions{Devices: []string{"cpu"}, Threads: 1})
	open := func(ctx context.Context, src Source, i int) (*Replica, error) {
		if src.Name == "fake-r1" {
			return &Replica{Gen: slow, Tokenizer: tok, ContextLen: 4096, VocabSize: 512}, nil
		}
		return engineOpen(ctx, src, i)
	}
	const key = "ui-test-key"
	_, keyed := testServer(t, Options{APIKey: key, Open: open,
		Models: []Source{{Name: "stories260k", FS: stories260k.FS()}, {Name: "fake-r1", Dir: "unused"}}})
	_, openBase := storiesServer(t, Options{})
	// A proxy in front that protects /metrics as well: the page must
	// send the key there too.
	target, err := url.Parse(keyed)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // stream the events as they come
	guarded := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" && r.Header.Get("Authorization") != "Bearer "+key {
			http.Error(w, "the key is needed", http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	}))

	shot := filepath.Join(t.ArtifactDir(), "chat.png")
	cfg, err := json.Marshal(map[string]string{"chromium": browser, "userDataDir": t.TempDir(), "screenshot": shot,
		"keyed": keyed, "key": key, "open": openBase, "guarded": guarded})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "e2e.mjs", string(cfg))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	t.Logf("e2e.mjs:\n%s", out)
	require.NoError(t, err, "e2e.mjs failed")
	assert.Regexp(t, `all \d+ checks passed`, string(out))

	// The server side of Stop, seen from here: the generation ended as
	// cancelled and holds nothing.
	assert.Equal(t, 1.0, metricValue(t, keyed, "deepseek_requests_total", `finish_reason="cancelled",model="fake-r1"`))
	assert.Equal(t, 0.0, metricValue(t, keyed, "deepseek_requests_running", `model="fake-r1"`))
	assert.Zero(t, slow.running.Load(), "the fake generation was cancelled")
	assert.Less(t, metricValue(t, keyed, "deepseek_generation_tokens_total", `model="fake-r1"`), float64(len(ids)))
	assert.Equal(t, 2.0, metricValue(t, keyed, "deepseek_requests_total", `finish_reason="length",model="stories260k"`))

	b, err := os.ReadFile(shot)
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(b))
	require.NoError(t, err, "the screenshot is a PNG")
	assert.Equal(t, 1280, img.Bounds().Dx())
	assert.Equal(t, 860, img.Bounds().Dy())
	if keep := os.Getenv("DEEPSEEK_UI_SCREENSHOT"); keep != "" {
		require.NoError(t, os.WriteFile(keep, b, 0o644))
	}
}
