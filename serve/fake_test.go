package serve

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/third_party/stories260k"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// storiesTokenizer is the embedded model's tokenizer, optionally with a
// chat template (stories260K has none).
func storiesTokenizer(t testing.TB, chatTemplate string) *tokenizer.Tokenizer {
	t.Helper()
	tj, err := fs.ReadFile(stories260k.FS(), "tokenizer.json")
	require.NoError(t, err)
	cj, err := fs.ReadFile(stories260k.FS(), "tokenizer_config.json")
	require.NoError(t, err)
	if chatTemplate != "" {
		var cfg map[string]any
		require.NoError(t, json.Unmarshal(cj, &cfg))
		cfg["chat_template"] = chatTemplate
		cj, err = json.Marshal(cfg)
		require.NoError(t, err)
	}
	tok, err := tokenizer.FromBytes(tj, cj)
	require.NoError(t, err)
	return tok
}

// fakeGen is a Generator that yields a fixed token sequence, one token per
// delay, and counts what it runs.
type fakeGen struct {
	ids       []int         // yielded in order; then it finishes with "stop"
	delay     time.Duration // before each token
	block     chan struct{} // when set, Tokens waits for it to close first
	panicMsg  string        // Submit panics with it
	submitErr error         // Submit fails with it
	running   atomic.Int64
	submits   atomic.Int64
	closed    atomic.Bool
	mu        sync.Mutex
	reqs      []engine.Request
}

func (g *fakeGen) Submit(ctx context.Context, r engine.Request) (Stream, error) {
	if g.panicMsg != "" {
		panic(g.panicMsg)
	}
	if g.submitErr != nil {
		return nil, g.submitErr
	}
	if g.closed.Load() {
		return nil, engine.ErrClosed
	}
	g.submits.Add(1)
	g.mu.Lock()
	g.reqs = append(g.reqs, r)
	g.mu.Unlock()
	return &fakeStream{g: g, ctx: ctx, r: r}, nil
}

func (g *fakeGen) Stats() engine.SchedulerStats {
	n := int(g.running.Load())
	return engine.SchedulerStats{Running: n, KVBlocksUsed: n, KVBlocksTotal: 8}
}

func (g *fakeGen) Close() error { g.closed.Store(true); return nil }

type fakeStream struct {
	g   *fakeGen
	ctx context.Context
	r   engine.Request
	res engine.Result
}

func (s *fakeStream) Tokens() iter.Seq2[engine.Token, error] {
	return func(yield func(engine.Token, error) bool) {
		s.g.running.Add(1)
		defer s.g.running.Add(-1)
		s.res.PromptTokens = len(s.r.Prompt)
		if s.g.block != nil {
			select {
			case <-s.g.block:
			case <-s.ctx.Done():
				yield(engine.Token{ID: -1}, s.ctx.Err())
				return
			}
		}
		for i, id := range s.g.ids {
			if s.r.MaxTokens > 0 && i == s.r.MaxTokens {
				s.res.Finish = engine.FinishLength
				return
			}
			select {
			case <-time.After(s.g.delay):
			case <-s.ctx.Done():
				yield(engine.Token{ID: -1}, s.ctx.Err())
				return
			}
			s.res.GeneratedTokens++
			t := engine.Token{ID: id, Logprob: -0.25, Top: []engine.Logprob{{ID: id, Logprob: -0.25}, {ID: 3, Logprob: -2}}}
			if !yield(t, nil) {
				return
			}
		}
		s.res.Finish = engine.FinishStop
	}
}

func (s *fakeStream) Result() engine.Result { return s.res }

// fakeOpener serves every model with gen and the stories260K tokenizer.
func fakeOpener(gen Generator, tok *tokenizer.Tokenizer) Opener {
	return func(ctx context.Context, src Source, i int) (*Replica, error) {
		return &Replica{Gen: gen, Tokenizer: tok, ContextLen: 512, VocabSize: 512}, nil
	}
}

// testServer runs s on a loopback port until the test ends.
func testServer(t testing.TB, o Options) (*Server, string) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(o)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("server did not shut down")
		}
	})
	require.NoError(t, s.Preload(ctx))
	return s, "http://" + ln.Addr().String()
}

// storiesServer serves the embedded model with the real engine.
func storiesServer(t testing.TB, o Options) (*Server, string) {
	o.Models = []Source{{Name: "stories260k", FS: stories260k.FS()}}
	if o.Open == nil {
		o.Open = EngineOpener(EngineOptions{Devices: []string{"cpu"}, Threads: 1})
	}
	return testServer(t, o)
}

// post sends a JSON body and returns the status, headers and body.
func post(t testing.TB, url, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// apiErr decodes an OpenAI error body.
func apiErr(t testing.TB, b []byte) errorDetail {
	t.Helper()
	var e struct {
		Error *errorDetail `json:"error"`
	}
	require.NoError(t, json.Unmarshal(b, &e), "body %s", b)
	require.NotNil(t, e.Error, "body %s", b)
	return *e.Error
}

// sseEvents splits a server-sent-events body into its data payloads.
func sseEvents(t testing.TB, b []byte) []string {
	t.Helper()
	var out []string
	for _, block := range strings.Split(string(b), "\n\n") {
		block = strings.TrimSpace(block)
		if block == "" {
			continue
		}
		data, ok := strings.CutPrefix(block, "data: ")
		require.True(t, ok, "event %q", block)
		out = append(out, data)
	}
	return out
}

// metricValue reads one sample from /metrics text ("" labels = any).
func metricValue(t testing.TB, base, name, labels string) float64 {
	t.Helper()
	_, b := get(t, base+"/metrics")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, labels) {
			var v float64
			f := strings.Fields(line)
			require.NoError(t, json.Unmarshal([]byte(f[len(f)-1]), &v), line)
			return v
		}
	}
	return -1
}

// needTool finds an external program; missing, the test skips, except
// under DEEPSEEK_CI=1 where it fails.
func needTool(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, name+" is not installed ("+install+")")
	}
	return p
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("DEEPSEEK_CI") == "1" {
		t.Fatal(why + "; DEEPSEEK_CI=1 requires it")
	}
	t.Skip(why)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func jsonLog(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// httpServer serves h on a loopback port until the test ends.
func httpServer(t testing.TB, h http.Handler) string {
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}
