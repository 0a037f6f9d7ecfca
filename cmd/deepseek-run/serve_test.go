package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/internal/testutil"
)

// With no model flags, serve serves the embedded stories260K as
// "stories260k", says so in one line, and stops cleanly when its context
// ends (as on SIGTERM).
func TestServeDefault(t *testing.T) {
	var out, errb testutil.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, []string{"--addr", "127.0.0.1:0"}, &out, &errb) }()
	addrRe := regexp.MustCompile(`^deepseek-run: serving stories260k on (http://127\.0\.0\.1:\d+) `)
	var base string
	require.Eventually(t, func() bool {
		m := addrRe.FindStringSubmatch(out.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	}, 10*time.Second, 5*time.Millisecond, "stdout: %q", out.String())
	assert.Equal(t, 1, strings.Count(out.String(), "\n"), "one line")
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, 10*time.Second, 10*time.Millisecond)
	resp, err := http.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"stories260k","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":5}`))
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	var cc struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal(b, &cc))
	assert.Equal(t, 5, cc.Usage.CompletionTokens)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	assert.Contains(t, errb.String(), "request_id=")
}

func TestServeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{}`), 0o644))
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--replicas", "0"}, "--replicas must be at least 1"},
		{[]string{"--token-budget", "-1"}, "--token-budget at least 0"},
		{[]string{"-m", "x=" + filepath.Join(dir, "missing")}, "no config.json"},
		{[]string{"-m", "=" + dir}, "want name=DIR"},
		{[]string{"--max-body", "lots"}, "want a size"},
		{[]string{"--log-format", "xml"}, "text or json"},
		{[]string{"--models-dir", filepath.Join(dir, "nope")}, "not a readable directory"},
		{[]string{"-m", "a=" + dir, "-m", "a=" + dir}, `model "a" is given twice`},
		{[]string{"extra"}, "unexpected argument"},
	} {
		code, _, stderr := cli(t, "", append([]string{"serve"}, tc.args...)...)
		assert.Equal(t, exitUsage, code, "%v: %s", tc.args, stderr)
		assert.Contains(t, stderr, tc.msg, "%v", tc.args)
	}
	code, stdout, _ := cli(t, "", "serve", "-h")
	assert.Equal(t, exitOK, code)
	assert.Contains(t, stdout, "--models-dir")
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4MiB": 4 << 20, "8GiB": 8 << 30, "512MB": 512e6, "1.5KiB": 1536, "100": 100, "0": 0} {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1MiB", "x", "1e30GiB"} {
		_, err := parseSize(in)
		assert.Error(t, err, in)
	}
}
