package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cli runs the command in-process.
func cli(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errb)
	// Whatever happens, a user never sees a Go stack trace.
	for _, s := range []string{out.String(), errb.String()} {
		require.NotContains(t, s, "goroutine ")
		require.NotContains(t, s, "panic")
	}
	return code, out.String(), errb.String()
}

// greedyFromBOS returns the reference text and ids of
// testdata/stories260K/greedy_from_bos_256.txt (last line: the ids).
func greedyFromBOS(t *testing.T) (string, []int) {
	t.Helper()
	b, err := os.ReadFile("../../testdata/stories260K/greedy_from_bos_256.txt")
	require.NoError(t, err)
	s := strings.TrimRight(string(b), "\n")
	i := strings.LastIndex(s, "\n")
	require.Positive(t, i)
	var ids []int
	for _, f := range strings.Fields(strings.Trim(s[i+1:], "[]")) {
		id, err := strconv.Atoi(f)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.Len(t, ids, 256)
	return s[:i], ids
}

func decodeJSON(t *testing.T, stdout string) jsonResult {
	t.Helper()
	var r jsonResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &r), stdout)
	return r
}

func TestGreedyFromBOS(t *testing.T) {
	text, ids := greedyFromBOS(t)

	code, stdout, stderr := cli(t, "", "--temp", "0", "-p", "", "-n", "64", "--json")
	require.Equal(t, 0, code, stderr)
	r := decodeJSON(t, stdout)
	assert.Equal(t, ids[:64], r.IDs)
	assert.Equal(t, 1, r.PromptTokens, "an empty prompt is just BOS")
	assert.Equal(t, 64, r.GeneratedTokens)
	assert.Equal(t, "length", r.Stop)
	assert.True(t, strings.HasPrefix(text, r.Text), "text %q is not a prefix of the reference", r.Text)
	assert.Greater(t, len(r.Text), 150)

	// The streamed text is the same, followed by a newline and nothing else.
	code, stdout, stderr = cli(t, "", "--temp", "0", "-p", "", "-n", "64")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, r.Text+"\n", stdout)
	assert.Contains(t, stderr, "stories260K demo model", "the demo model announces itself")
	assert.Contains(t, stderr, "-m ", "and says how to use a real checkpoint")
	assert.Contains(t, stderr, "prompt eval")
	assert.Contains(t, stderr, "tokens per second")
	assert.Contains(t, stderr, "sampling       = greedy")

	// All 256 tokens: karpathy's printed story, byte for byte.
	code, stdout, stderr = cli(t, "", "--temp", "0", "-p", "", "-n", "256")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, text+"\n", stdout)
}

func TestSeedReproducible(t *testing.T) {
	gen := func(seed string) jsonResult {
		code, stdout, stderr := cli(t, "", "-p", "Once upon a time", "--temp", "1", "--top-p", "0.95", "--seed", seed, "-n", "48", "--json")
		require.Equal(t, 0, code, stderr)
		return decodeJSON(t, stdout)
	}
	a, b, c := gen("7"), gen("7"), gen("8")
	assert.Equal(t, a.IDs, b.IDs)
	assert.Equal(t, a.Text, b.Text)
	assert.EqualValues(t, 7, a.Seed)
	assert.NotEqual(t, a.IDs, c.IDs, "another seed should give another story")
	assert.Equal(t, "Once upon a time", a.Prompt)
	assert.Greater(t, a.PromptTokens, 1)
}

func TestPromptFromStdin(t *testing.T) {
	code, stdout, stderr := cli(t, "Once upon a time\n", "--temp", "0", "-n", "8")
	require.Equal(t, 0, code, stderr)
	assert.True(t, strings.HasPrefix(stdout, "Once upon a time"), stdout)
	assert.Greater(t, len(stdout), len("Once upon a time\n"))
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	notCkpt := filepath.Join(dir, "empty")
	require.NoError(t, os.Mkdir(notCkpt, 0o755))
	file := filepath.Join(dir, "file.txt")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	noWeights := filepath.Join(dir, "noweights")
	require.NoError(t, os.Mkdir(noWeights, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(noWeights, "config.json"), []byte(`{"model_type":"llama"}`), 0o644))
	brokenConfig := filepath.Join(dir, "broken")
	require.NoError(t, os.Mkdir(brokenConfig, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(brokenConfig, "config.json"), []byte(`{"model_type": "llama", "hidden_size": `), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(brokenConfig, "model.safetensors"), []byte("not a safetensors file"), 0o644))

	long := strings.Repeat("Once upon a time there was a little girl. ", 80)

	tests := []struct {
		name  string
		args  []string
		code  int
		msgs  []string // substrings of stderr
		stdin string
	}{
		{"wrong path", []string{"-m", filepath.Join(dir, "nope"), "-p", "hi"}, 1, []string{"does not exist", "nope"}, ""},
		{"directory without config.json", []string{"-m", notCkpt, "-p", "hi"}, 1, []string{"has no config.json", "not a Hugging Face checkpoint"}, ""},
		{"file instead of directory", []string{"-m", file, "-p", "hi"}, 1, []string{"is a file"}, ""},
		{"no weights", []string{"-m", noWeights, "-p", "hi"}, 1, []string{"no *.safetensors"}, ""},
		{"broken config", []string{"-m", brokenConfig, "-p", "hi"}, 1, []string{"config.json"}, ""},
		{"prompt longer than the context", []string{"-p", long}, 1, []string{"the prompt is", "context is 512 tokens"}, ""},
		{"prompt longer than --ctx", []string{"--ctx", "8", "-p", "Once upon a time there was a girl named Lily"}, 1, []string{"raise --ctx", "the model allows 512"}, ""},
		{"bad --ctx", []string{"--ctx", "0"}, 2, []string{"--ctx must be positive"}, ""},
		{"checkpoint without tokenizer", []string{"-m", "../../testdata/models/llama-mha", "-p", "hi"}, 1, []string{"no tokenizer.json", "text prompt"}, ""},
		{"top-p 2", []string{"--top-p", "2", "-p", "hi"}, 2, []string{"top-p must be in (0, 1]", "got 2"}, ""},
		{"negative temperature", []string{"--temp", "-1", "-p", "hi"}, 2, []string{"temperature must be >= 0"}, ""},
		{"min-p", []string{"--min-p", "3"}, 2, []string{"min-p"}, ""},
		{"unknown flag", []string{"--tempp", "1"}, 2, []string{"flag provided but not defined: -tempp"}, ""},
		{"bad number", []string{"-n", "many"}, 2, []string{"invalid value \"many\" for flag -n"}, ""},
		{"zero tokens", []string{"-n", "0"}, 2, []string{"-n must be positive"}, ""},
		{"stray argument", []string{"Once upon a time"}, 2, []string{"unexpected argument", "-p"}, ""},
		{"bad device", []string{"--device", "tpu"}, 2, []string{"--device must be auto, cpu or cuda"}, ""},
		{"chat with -p", []string{"--chat", "-p", "hi"}, 2, []string{"--chat reads the turns from stdin"}, ""},
		{"json chat", []string{"--chat", "--json"}, 2, []string{"--json cannot be combined with --chat"}, ""},
		{"chat without template", []string{"--chat"}, 1, []string{"chat template"}, "hello\n"},
		{"verify without ref", []string{"verify", "-m", "../../testdata/models/llama-mha"}, 2, []string{"--ref"}, ""},
		{"verify without model", []string{"verify", "--ref", "x"}, 2, []string{"-m"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, tc.stdin, tc.args...)
			assert.Equal(t, tc.code, code, "stdout: %s\nstderr: %s", stdout, stderr)
			for _, m := range tc.msgs {
				assert.Contains(t, stderr, m)
			}
			// The reason is one line (after the demo model's notice).
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			assert.True(t, strings.HasPrefix(lines[len(lines)-1], "deepseek-run: "), stderr)
		})
	}
}

func TestHelp(t *testing.T) {
	code, stdout, _ := cli(t, "", "-h")
	assert.Equal(t, 0, code)
	for _, s := range []string{"-temp", "-top-p", "-chat", "info -m DIR", "verify -m DIR"} {
		assert.Contains(t, stdout, s)
	}
}

// templateCheckpoint copies stories260K into a temporary directory with a
// chat template in its tokenizer_config.json.
func templateCheckpoint(t *testing.T, template string) string {
	t.Helper()
	return checkpointWith(t, map[string]any{"add_bos_token": true, "bos_token": "<s>", "eos_token": "</s>", "chat_template": template})
}

// checkpointWith copies stories260K with the given tokenizer_config.json.
func checkpointWith(t *testing.T, tokenizerConfig map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} {
		b, err := os.ReadFile(filepath.Join("../../testdata/stories260K", name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	cfg, err := json.Marshal(tokenizerConfig)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), cfg, 0o644))
	return dir
}

const plainTemplate = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" +
	"{% if add_generation_prompt %}assistant:{% endif %}"

func TestChatTemplatePrompt(t *testing.T) {
	dir := templateCheckpoint(t, plainTemplate)
	gen := func(args ...string) jsonResult {
		code, stdout, stderr := cli(t, "", append([]string{"-m", dir, "--temp", "0", "-n", "5", "--json"}, args...)...)
		require.Equal(t, 0, code, stderr)
		assert.NotContains(t, stderr, "demo model", "a checkpoint given with -m is not the demo")
		return decodeJSON(t, stdout)
	}
	// "user: Lily\nassistant:" is longer than the raw prompt "Lily".
	templated, raw, system := gen("-p", "Lily"), gen("-p", "Lily", "--raw"), gen("-p", "Lily", "--system", "Be kind.")
	assert.Greater(t, templated.PromptTokens, raw.PromptTokens+3)
	assert.Greater(t, system.PromptTokens, templated.PromptTokens)
	assert.Len(t, raw.IDs, 5)
}

func TestChatREPL(t *testing.T) {
	dir := templateCheckpoint(t, plainTemplate)
	long := strings.Repeat("Lily and Tom play with the big red ball in the park. ", 60)
	in := "Tell me about Lily.\n\n/clear\n" + long + "\nAnd Tom?\n/bye\nnever read\n"
	code, stdout, stderr := cli(t, in, "-m", dir, "--chat", "--system", "Be kind.", "--temp", "0", "-n", "6")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "/bye")
	assert.Contains(t, stderr, "(conversation cleared)")
	assert.Contains(t, stderr, "context", "the over-long turn is reported")
	assert.Contains(t, stderr, "/clear to start over")
	assert.Equal(t, 2, strings.Count(stdout, "\n"), "two replies, one line each: %q", stdout)
	assert.Equal(t, 6, strings.Count(stderr, ">>> "), "the REPL stops at /bye")
}

func TestUntilContextFull(t *testing.T) {
	code, stdout, stderr := cli(t, "", "-p", "Lily", "--temp", "0", "-n", "-1", "--ctx", "20", "--json")
	require.Equal(t, 0, code, stderr)
	r := decodeJSON(t, stdout)
	assert.Equal(t, 20, r.PromptTokens+r.GeneratedTokens)
	assert.Equal(t, "context", r.Stop, "-n -1 ends when the context is full, and says so")
}

func TestVerify(t *testing.T) {
	const dir = "../../testdata/models/llama-gqa-llama3rope"
	ref := filepath.Join(dir, "reference.safetensors")
	tests := []struct {
		name string
		args []string
		code int
		out  []string
	}{
		{"passes at 1e-4", []string{"--device", "cpu"}, 0, []string{"greedy    16/16 tokens match", "PASS", "prefill", "decode"}},
		{"fails at an impossible tolerance", []string{"--tol", "1e-12"}, 1, []string{"FAIL", "over tolerance"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, "", append([]string{"verify", "-m", dir, "--ref", ref}, tc.args...)...)
			require.Equal(t, tc.code, code, stderr)
			for _, s := range tc.out {
				assert.Contains(t, stdout, s)
			}
			if tc.code != 0 {
				assert.Contains(t, stderr, "verify failed: worst relative error")
			}
		})
	}
	code, _, stderr := cli(t, "", "verify", "-m", dir, "--ref", filepath.Join(dir, "missing.safetensors"))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "missing.safetensors")
}

func TestInfo(t *testing.T) {
	code, stdout, stderr := cli(t, "", "info", "-m", "../../testdata/models/deepseek-v2-lite")
	require.Equal(t, 0, code, stderr)
	for _, s := range []string{"deepseek_v2", "parameters", "KV cache", "MLA: kv_lora_rank", "experts", "devices", "cpu "} {
		assert.Contains(t, stdout, s)
	}
}

// cancelWriter cancels a context once it has received n writes.
type cancelWriter struct {
	bytes.Buffer
	n      int
	cancel func()
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	if w.n--; w.n == 0 {
		w.cancel()
	}
	return w.Buffer.Write(p)
}

func (w *cancelWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

func TestInterrupt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &cancelWriter{n: 4, cancel: cancel}
	var errb bytes.Buffer
	code := runContext(ctx, []string{"--temp", "0", "-p", "", "-n", "200"}, strings.NewReader(""), out, &errb)
	assert.Equal(t, 1, code)
	assert.Contains(t, errb.String(), "prompt eval", "timings are still printed")
	assert.Contains(t, errb.String(), "deepseek-run: interrupted")
	text, _ := greedyFromBOS(t)
	got := strings.TrimSuffix(out.String(), "\n")
	assert.True(t, strings.HasPrefix(text, got), "%q", got)
	assert.Less(t, len(got), 40, "generation stopped right after the cancellation")
}

func TestPanicIsOneLine(t *testing.T) {
	var errb bytes.Buffer
	var nowhere io.Writer // writing to a nil writer panics
	code := run([]string{"--temp", "0", "-p", "Lily", "-n", "2"}, strings.NewReader(""), nowhere, &errb)
	assert.Equal(t, 1, code)
	assert.Contains(t, errb.String(), "deepseek-run: internal error:")
	assert.NotContains(t, errb.String(), "goroutine ")
}

func TestEmptyPromptWithoutBOS(t *testing.T) {
	dir := checkpointWith(t, map[string]any{"add_bos_token": false, "eos_token": "</s>"})
	code, _, stderr := cli(t, "", "-m", dir, "-p", "")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "the prompt is empty and this tokenizer adds no BOS")
	code, stdout, stderr := cli(t, "", "-m", dir, "-p", "Lily", "-n", "3", "--json")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, 1, decodeJSON(t, stdout).PromptTokens, "no BOS added")
}

// The DeepSeek-V3 fixture has stories260K's vocabulary size, so with that
// tokenizer it takes text (and produces noise): enough to exercise --stats.
func TestExpertStatsFlag(t *testing.T) {
	dir := t.TempDir()
	for src, names := range map[string][]string{
		"../../testdata/models/deepseek-v3": {"config.json", "model.safetensors"},
		"../../testdata/stories260K":        {"tokenizer.json", "tokenizer_config.json"},
	} {
		for _, name := range names {
			b, err := os.ReadFile(filepath.Join(src, name))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
		}
	}
	code, _, stderr := cli(t, "", "-m", dir, "-p", "Lily", "-n", "6", "--temp", "0", "--stats")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "expert usage")
	assert.Contains(t, stderr, "active/experts")

	code, _, stderr = cli(t, "", "-p", "Lily", "-n", "2", "--stats")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "no routed experts")
}

// funcWriter calls f before each write.
type funcWriter struct {
	bytes.Buffer
	f func()
}

func (w *funcWriter) Write(p []byte) (int, error)       { w.f(); return w.Buffer.Write(p) }
func (w *funcWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

// Ctrl-C during a chat reply stops that reply; the REPL goes on.
func TestChatInterruptStopsOnlyTheReply(t *testing.T) {
	dir := templateCheckpoint(t, plainTemplate)
	turns := &turnCanceler{}
	ctx := context.WithValue(context.Background(), turnKey{}, turns)
	writes := 0
	out := &funcWriter{f: func() {
		if writes++; writes == 2 { // during the first reply
			turns.cancel()
		}
	}}
	var errb bytes.Buffer
	in := "Tell me about Lily.\nAnd Tom?\n/bye\n"
	code := runContext(ctx, []string{"-m", dir, "--chat", "--temp", "0", "-n", "12"}, strings.NewReader(in), out, &errb)
	require.Equal(t, 0, code, errb.String())
	assert.Equal(t, 1, strings.Count(errb.String(), "(interrupted)"), errb.String())
	assert.Equal(t, 1, strings.Count(errb.String(), "12 generated"), "the second reply runs to the end: %s", errb.String())
	assert.Equal(t, 2, strings.Count(out.String(), "\n"), "%q", out.String())
}

// Ctrl-C at the prompt ends the REPL even while it waits for input.
func TestChatInterruptAtPrompt(t *testing.T) {
	dir := templateCheckpoint(t, plainTemplate)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe() // input that never comes
	defer pw.Close()
	done := make(chan int)
	var errb bytes.Buffer
	go func() { done <- runContext(ctx, []string{"-m", dir, "--chat"}, pr, io.Discard, &errb) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, 1, code)
	case <-time.After(10 * time.Second):
		t.Fatal("the REPL did not stop")
	}
}

// The README's CLI reference lists every generation flag as -h prints it.
func TestREADMEFlagReference(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	var usage bytes.Buffer
	printUsage(&usage)
	in := false
	for _, line := range strings.Split(usage.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "Generation flags:"):
			in = true
		case strings.HasPrefix(line, "Examples:"):
			in = false
		case in && strings.TrimSpace(line) != "":
			assert.Contains(t, string(readme), "    "+line, "README.md's flag reference is out of date: paste deepseek-run -h")
		}
	}
}

func TestChatMultiLine(t *testing.T) {
	dir := templateCheckpoint(t, plainTemplate)
	in := "\"\"\"\nTell me about Lily.\n  And about Tom.\n\"\"\"\n/bye\n"
	code, stdout, stderr := cli(t, in, "-m", dir, "--chat", "--temp", "0", "-n", "5")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, 3, strings.Count(stderr, "... "), "two lines and the closing quotes: %s", stderr)
	assert.Equal(t, 1, strings.Count(stdout, "\n"), "one reply: %q", stdout)
	assert.Equal(t, 1, strings.Count(stderr, "5 generated"))
}
