package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// openAIStub streams three completion chunks and a usage chunk per request
// and lists one model.
func openAIStub(t *testing.T) (url string, requests *atomic.Int32) {
	t.Helper()
	requests = new(atomic.Int32)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[{"id":"stub-model","object":"model"}]}`)
	})
	mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		var body struct {
			Model     string `json:"model"`
			Prompt    []int  `json:"prompt"`
			IgnoreEOS bool   `json:"ignore_eos"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Model != "stub-model" || len(body.Prompt) != 4 || !body.IgnoreEOS {
			http.Error(w, fmt.Sprintf("unexpected request %+v %v", body, err), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"text\":\"t%d\"}]}\n\n", i)
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, requests
}

func TestBenchServeSweep(t *testing.T) {
	url, requests := openAIStub(t)
	dir := t.TempDir()
	jsonPath, plotPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.png")
	code, stdout, stderr := cli(t, "", "bench", "serve", "--url", url, "--num-prompts", "5", "--input-len", "4",
		"--output-len", "3", "--request-rate", "100,inf", "--max-concurrency", "2", "--quiet",
		"--json", jsonPath, "--plot", plotPath, "--slo", "ttft=10s")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, int32(10), requests.Load())
	assert.Equal(t, 2, strings.Count(stdout, "Successful requests:                    5\n"), stdout)
	assert.Contains(t, stdout, "Request goodput (req/s):")
	assert.Regexp(t, `(?m)^\s+rate\s+req/s\s+out tok/s`, stdout, "sweep table")
	assert.Regexp(t, `(?m)^\s+inf\s+\d`, stdout)

	var rep struct {
		Command []string
		Runs    []struct {
			RequestRate       any `json:"request_rate"`
			Completed         int
			TotalOutputTokens int `json:"total_output_tokens"`
			Requests          []any
		}
	}
	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Len(t, rep.Runs, 2)
	assert.Equal(t, 100.0, rep.Runs[0].RequestRate)
	assert.Equal(t, "inf", rep.Runs[1].RequestRate)
	assert.Equal(t, 15, rep.Runs[1].TotalOutputTokens)
	assert.Empty(t, rep.Runs[0].Requests, "per-request timings only with --json-requests")
	assert.Contains(t, rep.Command, "--num-prompts")

	f, err := os.Open(plotPath)
	require.NoError(t, err)
	defer f.Close()
	_, err = png.DecodeConfig(f)
	assert.NoError(t, err)
}

// An interrupted sweep still writes the rates measured so far to --json,
// so a run under `timeout -s INT` keeps its results.
func TestBenchServeInterruptedWritesJSON(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stubURL, requests := openAIStub(t)
	// The proxy cancels the benchmark when the second rate's first request
	// arrives, before forwarding it.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && requests.Load() >= 3 {
			cancel()
			http.Error(w, "interrupted", http.StatusServiceUnavailable)
			return
		}
		u, _ := neturl.Parse(stubURL)
		httputil.NewSingleHostReverseProxy(u).ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	var stdout, stderr bytes.Buffer
	err := runBenchServe(ctx, []string{"--url", proxy.URL, "--num-prompts", "3", "--input-len", "4",
		"--output-len", "3", "--request-rate", "100,inf,50", "--max-concurrency", "1", "--quiet", "--json", jsonPath}, &stdout, &stderr)
	require.ErrorIs(t, err, context.Canceled)
	var rep struct {
		Runs []struct {
			RequestRate any `json:"request_rate"`
			Completed   int
		}
	}
	b, rerr := os.ReadFile(jsonPath)
	require.NoError(t, rerr)
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Len(t, rep.Runs, 2, "the finished rate and the interrupted one; the third never ran")
	assert.Equal(t, 3, rep.Runs[0].Completed)
	assert.Equal(t, "inf", rep.Runs[1].RequestRate)
	assert.Equal(t, 0, rep.Runs[1].Completed)
}

// Each rate of a sweep sends its own synthetic prompts (seed+i); the first
// rate's are those of a single run with the same seed.
func TestBenchServeFreshPromptsPerRate(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	take := func() []string { // the prompts received since the last call
		mu.Lock()
		defer mu.Unlock()
		s := seen
		seen = nil
		return s
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Prompt []int `json:"prompt"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen = append(seen, fmt.Sprint(body.Prompt))
		mu.Unlock()
		fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"x\"}],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	bench := func(counts, rates string) string {
		t.Helper()
		code, stdout, stderr := cli(t, "", "bench", "serve", "--url", srv.URL, "--model", "m", "--num-prompts", counts,
			"--input-len", "8", "--output-len", "1", "--max-concurrency", "1", "--seed", "7", "--quiet", "--request-rate", rates)
		require.Equal(t, 0, code, stderr)
		return stdout
	}

	bench("2", "inf,inf")
	sweep := take()
	require.Len(t, sweep, 4)
	assert.Len(t, slices.Compact(slices.Sorted(slices.Values(sweep))), 4, "no prompt is sent twice")
	// Rate 0 uses --seed itself: a single run sends the sweep's first
	// prompts (a rate's requests may arrive in either order).
	bench("2", "inf")
	assert.ElementsMatch(t, sweep[:2], take())

	// A count per rate; the table lists the rates in order, inf last.
	stdout := bench("3,1", "inf,50")
	assert.Len(t, take(), 4)
	assert.Contains(t, stdout, "Successful requests:                    3\n")
	assert.Contains(t, stdout, "Successful requests:                    1\n")
	assert.Regexp(t, `(?s)\n\s+50\s.*\n\s+inf\s`, stdout, "sweep table by rate")
}

func TestParseCounts(t *testing.T) {
	for _, tc := range []struct {
		in    string
		rates int
		want  []int
		err   string
	}{
		{"5", 3, []int{5, 5, 5}, ""},
		{"1000, 200", 2, []int{1000, 200}, ""},
		{"1,2", 3, nil, "2 counts for 3 rates"},
		{"0", 1, nil, "positive"},
		{"x", 1, nil, "positive"},
	} {
		got, err := parseCounts(tc.in, tc.rates)
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}

func TestBenchServeDataset(t *testing.T) {
	url, requests := openAIStub(t)
	ds := filepath.Join(t.TempDir(), "p.jsonl")
	require.NoError(t, os.WriteFile(ds, []byte(`{"prompt": [1, 2, 3, 4], "max_tokens": 3}`+"\n"), 0o644))
	// The stub wants ignore_eos, which --dataset turns off unless asked.
	code, stdout, _ := cli(t, "", "bench", "serve", "--url", url, "--dataset", ds, "--num-prompts", "3", "--quiet")
	assert.Equal(t, 1, code, "every request fails without ignore_eos")
	assert.Contains(t, stdout, "http 400:")
	code, stdout, stderr := cli(t, "", "bench", "serve", "--url", url, "--dataset", ds, "--num-prompts", "3", "--quiet", "--ignore-eos")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "Successful requests:                    3\n")
	assert.Equal(t, int32(6), requests.Load())
}

func TestBenchServeUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench"}, "want the subcommand serve"},
		{[]string{"bench", "serve"}, "give prompts"},
		{[]string{"bench", "serve", "--input-len", "4", "--request-rate", "0"}, "--request-rate"},
		{[]string{"bench", "serve", "--input-len", "4", "--plot", "x.png"}, "two or more"},
		{[]string{"bench", "serve", "--input-len", "4", "--slo", "ttft"}, "--slo"},
		{[]string{"bench", "serve", "--input-len", "4", "--dataset", "x"}, "not both"},
		{[]string{"bench", "serve", "--input-len", "4", "--token-range", "9"}, "LO:HI"},
	} {
		code, _, stderr := cli(t, "", tc.args...)
		assert.Equal(t, exitUsage, code, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}
