package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/internal/testutil"
)

// The official openai npm package drives the server: chat and
// completions, streamed and not, usage, stop, logprobs, n, typed errors
// (testdata/node/openai.mjs). CI installs it with
// "npm ci --prefix serve/testdata/node".
func TestOpenAINodeClient(t *testing.T) {
	node := needTool(t, "node", "apt-get install -y nodejs")
	dir, err := filepath.Abs(filepath.Join("testdata", "node"))
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		missing(t, "the openai npm package is not installed (npm ci --prefix serve/testdata/node)")
	}
	_, base := storiesServer(t, Options{APIKey: "test-key"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "openai.mjs", base)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "all 8 checks passed")
}

// curl, the other client the issue names: a plain and a streamed request.
func TestCurl(t *testing.T) {
	curl := needTool(t, "curl", "apt-get install -y curl")
	_, base := storiesServer(t, Options{})
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, curl, append([]string{"-sS", "--fail-with-body"}, args...)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	var cc ChatCompletion
	require.NoError(t, json.Unmarshal([]byte(run(base+chatURL, "-H", "Content-Type: application/json",
		"-d", `{"model":"stories260k","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":10,"seed":1}`)), &cc))
	assert.Equal(t, 10, cc.Usage.CompletionTokens)
	streamed := run("-N", base+cmplURL, "-d", `{"model":"stories260k","prompt":"Once upon a time","max_tokens":10,"temperature":0,"stream":true}`)
	text, finish := completionText(t, []byte(streamed), true)
	assert.Equal(t, "length", finish)
	var c Completion
	require.NoError(t, json.Unmarshal([]byte(run(base+cmplURL, "-d", `{"model":"stories260k","prompt":"Once upon a time","max_tokens":10,"temperature":0}`)), &c))
	assert.Equal(t, c.Choices[0].Text, text)
	// An error keeps its status through curl.
	out, err := exec.Command(curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", base+chatURL, "-d", `{"model":"x"`).Output()
	require.NoError(t, err)
	assert.Equal(t, "400", string(out))
}

// A real Prometheus server (Debian's prometheus package) scrapes /metrics
// and a PromQL query returns the number of requests served.
func TestPrometheusScrape(t *testing.T) {
	prom := needTool(t, "prometheus", "apt-get install -y prometheus")
	_, base := storiesServer(t, Options{})
	const requests = 7
	for range requests {
		status, _, b := post(t, base+cmplURL, `{"model":"stories260k","prompt":"Once upon a time","max_tokens":3}`)
		require.Equal(t, 200, status, "%s", b)
	}
	dir := t.TempDir()
	target := strings.TrimPrefix(base, "http://")
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: deepseek\n    static_configs:\n      - targets: [%q]\n", target)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644))
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	var logs testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	q := url.Values{"query": {`sum(deepseek_requests_total{model="stories260k"})`}}
	var got float64
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		got = promQuery(t, "http://"+addr+"/api/v1/query?"+q.Encode())
		if got == requests {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	require.Equal(t, float64(requests), got, "PromQL over the scraped metrics; prometheus log:\n%s", logs.String())
}

// promQuery runs an instant query and returns its single value (-1 when
// Prometheus is not up yet or has no sample).
func promQuery(t *testing.T, u string) float64 {
	resp, err := http.Get(u)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	b, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(b, &r) != nil || r.Status != "success" || len(r.Data.Result) != 1 {
		return -1
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return v
}

// freeAddr returns a loopback address with a port free just now.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// Load: 1,000 requests from 64 concurrent clients against the embedded
// model with 0 errors; every streamed text equals the non-streamed text of
// the same seed; the server's RSS stays within ±10% between the first and
// the last quarter. The measured run follows a warm-up that runs until RSS
// stops growing: the engine's prefix cache keeps freed KV blocks, so the
// KV pool's pages are first touched over the first few thousand requests
// (about 40 MiB here, then flat). -short runs 200 requests and no warm-up.
func TestLoad(t *testing.T) {
	total := 1000
	if testing.Short() {
		total = 200
	}
	const clients = 64
	_, base := storiesServer(t, Options{MaxRunning: 64})
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	lt := &loadTest{t: t, base: base, client: client, clients: clients}
	if !testing.Short() {
		prev := 0.0
		for i := range 40 {
			r := lt.run(500, 1_000_000*(i+1))
			require.Empty(t, r.errs, "warm-up errors")
			m := mean(r.rss[len(r.rss)/2:])
			if prev > 0 && m < prev*1.02 {
				t.Logf("warm-up: %d requests, RSS %.1f MiB", (i+1)*500, m/(1<<20))
				break
			}
			prev = m
		}
	}
	t0 := time.Now()
	r := lt.run(total, 0)
	elapsed := time.Since(t0)
	require.Empty(t, r.errs, "%d errors", len(r.errs))
	require.Len(t, r.rss, total/2)
	q := len(r.rss) / 4
	first, last := mean(r.rss[:q]), mean(r.rss[len(r.rss)-q:])
	t.Logf("%d requests at %d clients in %s (%.0f req/s, %d tokens); RSS first quarter %.1f MiB, last quarter %.1f MiB",
		total, clients, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), r.tokens, first/(1<<20), last/(1<<20))
	if !testing.Short() {
		assert.InEpsilon(t, first, last, 0.10, "RSS must stay flat (±10%%) between the first and last quarter")
	}
}

// loadTest sends pairs of requests (streamed and not, one seed) from
// concurrent clients.
type loadTest struct {
	t       *testing.T
	base    string
	client  *http.Client
	clients int
}

type loadResult struct {
	errs   []string
	rss    []float64 // sampled after each pair, in completion order
	tokens int
}

// run sends n requests (n/2 pairs) with seeds from seed0 on.
func (lt *loadTest) run(n, seed0 int) loadResult {
	var (
		mu  sync.Mutex
		res loadResult
		wg  sync.WaitGroup
	)
	work := make(chan int)
	for range lt.clients / 2 { // each worker holds two requests at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range work {
				var sText, wText string
				var sN, wN int
				var sErr, wErr error
				var inner sync.WaitGroup
				inner.Add(2)
				go func() { defer inner.Done(); sText, sN, sErr = lt.do(seed, true) }()
				go func() { defer inner.Done(); wText, wN, wErr = lt.do(seed, false) }()
				inner.Wait()
				r := rssBytes(lt.t)
				mu.Lock()
				switch {
				case sErr != nil || wErr != nil:
					res.errs = append(res.errs, fmt.Sprint(sErr, wErr))
				case sText != wText || sN != wN:
					res.errs = append(res.errs, fmt.Sprintf("seed %d: streamed %q (%d tokens) != whole %q (%d tokens)", seed, sText, sN, wText, wN))
				}
				res.rss = append(res.rss, r)
				res.tokens += sN + wN
				mu.Unlock()
			}
		}()
	}
	for i := range n / 2 {
		work <- seed0 + i
	}
	close(work)
	wg.Wait()
	return res
}

// do sends one completion and returns its text and completion tokens.
func (lt *loadTest) do(seed int, stream bool) (string, int, error) {
	body := fmt.Sprintf(`{"model":"stories260k","prompt":"Once upon a time","max_tokens":32,"temperature":0.9,"seed":%d,"stream":%v,"stream_options":{"include_usage":true}}`, seed, stream)
	resp, err := lt.client.Post(lt.base+cmplURL, "application/json", strings.NewReader(body))
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != 200 {
		return "", 0, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if !stream {
		var c Completion
		if err := json.Unmarshal(b, &c); err != nil {
			return "", 0, err
		}
		return c.Choices[0].Text, c.Usage.CompletionTokens, nil
	}
	var sb strings.Builder
	n := 0
	for _, ev := range strings.Split(string(b), "\n\n") {
		data, ok := strings.CutPrefix(strings.TrimSpace(ev), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c Completion
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return "", 0, err
		}
		for _, ch := range c.Choices {
			sb.WriteString(ch.Text)
		}
		if c.Usage != nil {
			n = c.Usage.CompletionTokens
		}
	}
	return sb.String(), n, nil
}

// rssBytes reads this process's resident set size (the server runs
// in-process) from /proc.
func rssBytes(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm: RSS cannot be measured here")
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseFloat(f[1], 64)
	require.NoError(t, err)
	return pages * float64(os.Getpagesize())
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
