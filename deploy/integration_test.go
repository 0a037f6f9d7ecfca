package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/bench/serving"
)

// needTool finds a program, skipping without it unless DEEPSEEK_CI=1.
func needTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("DEEPSEEK_CI") == "1" {
			t.Fatalf("%s not found with DEEPSEEK_CI=1: %s (%v)", name, install, err)
		}
		t.Skipf("%s not installed (%s); skipping", name, install)
	}
	return p
}

// freeAddr returns a 127.0.0.1 address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// startProcess starts a command that the test stops at cleanup; its
// output goes to a log file shown when the test fails.
func startProcess(t *testing.T, name string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(name)+".log")
	log, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s output:\n%s", filepath.Base(name), lastLines(string(b), 30))
		}
	})
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// waitFor polls until ok returns true, for at most d.
func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func httpOK(u string) bool {
	resp, err := http.Get(u)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// promQuery runs an instant query and returns the single result's value
// (NaN when the result is empty).
func promQuery(t *testing.T, base, q string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	require.NoError(t, err)
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value []any
			}
		}
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	require.Equal(t, "success", r.Status, q)
	if len(r.Data.Result) == 0 {
		return math.NaN()
	}
	require.Len(t, r.Data.Result, 1, q)
	v, err := strconv.ParseFloat(fmt.Sprint(r.Data.Result[0].Value[1]), 64)
	require.NoError(t, err)
	return v
}

// TestPrometheusAgreesWithBench starts deepseek-run serve with the
// embedded model and a real Prometheus scraping it with deploy's rules,
// runs the benchmark (500 requests, 32 concurrent), and checks that the
// server's TTFT histogram as Prometheus reports it agrees with the
// benchmark's own TTFT within 10%, and the token counters exactly.
func TestPrometheusAgreesWithBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and Prometheus (-short)")
	}
	prom := needTool(t, "prometheus", "apt-get install -y prometheus")
	bin := filepath.Join(t.TempDir(), "deepseek-run")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../cmd/deepseek-run")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building deepseek-run:\n%s", out)

	serverAddr, promAddr := freeAddr(t), freeAddr(t)
	startProcess(t, bin, "serve", "--addr", serverAddr)
	server := "http://" + serverAddr
	waitFor(t, 60*time.Second, "deepseek-run serve /ready", func() bool { return httpOK(server + "/ready") })

	dir := t.TempDir()
	rules, err := os.ReadFile("prometheus/rules.yml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644))
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [rules.yml]
scrape_configs:
  - job_name: deepseek
    static_configs: [{targets: ["%s"]}]
`, serverAddr)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644))
	startProcess(t, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	promURL := "http://" + promAddr
	waitFor(t, 60*time.Second, "Prometheus /-/ready", func() bool { return httpOK(promURL + "/-/ready") })
	waitFor(t, 30*time.Second, "a first scrape", func() bool { return promQuery(t, promURL, `up{job="deepseek"}`) == 1 })

	// 128-token prompts make TTFT (prefill and queueing) large against
	// what only the client sees (HTTP and scheduling, ~1-3 ms here).
	prompts, err := serving.Synthetic(serving.SyntheticOptions{NumPrompts: 500, InputLen: 128, OutputLen: 32,
		TokenLo: 100, TokenHi: 500, Seed: 1})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	model, err := serving.FirstModel(ctx, nil, server, "")
	require.NoError(t, err)
	res, err := serving.Run(ctx, serving.Options{URL: server, Model: model, Prompts: prompts,
		RequestRate: math.Inf(1), MaxConcurrency: 32, IgnoreEOS: true})
	require.NoError(t, err)
	require.Equal(t, 500, res.Completed, "errors: %v", res.Errors)
	var summary bytes.Buffer
	require.NoError(t, res.Format(&summary))
	t.Logf("bench:\n%s", summary.String())

	// Wait for a scrape after the server has accounted for the last
	// request (its counters move after the client sees [DONE]).
	waitFor(t, 30*time.Second, "the scrape of all 500 requests", func() bool {
		return promQuery(t, promURL, `sum(deepseek_time_to_first_token_seconds_count)`) == 500 &&
			promQuery(t, promURL, `sum(deepseek_requests_total)`) == 500
	})
	serverMean := 1000 * promQuery(t, promURL, `sum(deepseek_time_to_first_token_seconds_sum) / sum(deepseek_time_to_first_token_seconds_count)`)
	t.Logf("mean TTFT: bench %.2f ms, Prometheus %.2f ms", res.TTFT.Mean, serverMean)
	assert.InDelta(t, res.TTFT.Mean, serverMean, 0.10*res.TTFT.Mean, "mean TTFT: bench %.2f ms, Prometheus %.2f ms", res.TTFT.Mean, serverMean)
	assert.Equal(t, float64(res.TotalOutputTokens), promQuery(t, promURL, `sum(deepseek_generation_tokens_total)`))
	assert.Equal(t, float64(res.TotalInputTokens), promQuery(t, promURL, `sum(deepseek_prompt_tokens_total)`))
	assert.Equal(t, 500.0, promQuery(t, promURL, `sum(deepseek_requests_total{finish_reason="length"})`))
	// The recording rules evaluate over the real series.
	waitFor(t, 30*time.Second, "the recording rules", func() bool {
		return !math.IsNaN(promQuery(t, promURL, `deepseek:ttft_seconds:p99_5m`))
	})
	assert.Positive(t, promQuery(t, promURL, `deepseek:generation_tokens:rate5m`))
}
