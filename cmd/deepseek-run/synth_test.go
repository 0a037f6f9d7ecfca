package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSynthThenGenerate: a synthetic checkpoint is a checkpoint the rest
// of the CLI runs.
func TestSynthThenGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	code, stdout, stderr := cli(t, "", "synth", "--shape", "tiny-v3", "-o", dir, "--seed", "5", "--quiet", "--shard-size", "8MiB")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "wrote "+dir+": tiny-v3")
	assert.Contains(t, stdout, "3 shard(s)")
	for _, f := range []string{"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"} {
		_, err := os.Stat(filepath.Join(dir, f))
		assert.NoError(t, err, f)
	}
	code, stdout, stderr = cli(t, "", "-m", dir, "-p", "Hello", "-n", "3", "--device", "cpu")
	require.Equal(t, 0, code, stderr)
	assert.NotEmpty(t, stdout)

	code, _, stderr = cli(t, "", "synth", "--shape", "tiny-v3", "-o", dir, "--quiet")
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, stderr, "already holds a checkpoint")
}

func TestSynthUsage(t *testing.T) {
	code, stdout, _ := cli(t, "", "synth", "--list")
	require.Equal(t, 0, code)
	for _, s := range []string{"deepseek-coder-1.3b", "deepseek-llm-7b", "deepseek-v2-lite", "deepseek-v3-slice"} {
		assert.Contains(t, stdout, s)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"synth"}, "needs --shape"},
		{[]string{"synth", "--shape", "nope", "-o", "x"}, `unknown shape "nope"`},
		{[]string{"synth", "--shape", "tiny-llama", "-o", "x", "--dtype", "f16"}, "--dtype"},
		{[]string{"synth", "--shape", "tiny-llama", "-o", "x", "--layers", "-2"}, "--layers"},
		{[]string{"synth", "--shape", "tiny-llama", "-o", "x", "--shard-size", "lots"}, "shard-size"},
	} {
		code, _, stderr := cli(t, "", tc.args...)
		assert.Equal(t, exitUsage, code, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}
