package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/deepseek-go/deepseek-go/kernels/cuda"
	"github.com/deepseek-go/deepseek-go/tokenizer"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 15: the edges of deepseek-run that a new user hits. Each test
// names its item.

// Item 2: a --chat line over the limit is dropped with a message that
// names the limit, and the conversation goes on.
func TestChatLineTooLong(t *testing.T) {
	dir := templateCheckpoint(t, plainTemplate)
	huge := strings.Repeat("a", maxChatLine+1)
	in := huge + "\nTell me about Lily.\n/bye\n"
	code, stdout, stderr := cli(t, in, "-m", dir, "--chat", "--temp", "0", "-n", "5")
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "token too long")
	assert.Contains(t, stderr, "over the 16.00 MiB limit of one line")
	assert.Equal(t, 1, strings.Count(stderr, "5 generated"), "the next line is answered: %s", stderr)
	assert.Equal(t, 1, strings.Count(stdout, "\n"), "one reply: %q", stdout)
}

func TestReadLine(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		max   int
		lines []inputLine
	}{
		{"fits", "abcd\nxy\n", 4, []inputLine{{text: "abcd"}, {text: "xy"}}},
		{"no final newline", "abcd\nxy", 4, []inputLine{{text: "abcd"}, {text: "xy"}}},
		{"one over", "abcde\nxy\n", 4, []inputLine{{dropped: 5}, {text: "xy"}}},
		{"long, last", "x\n" + strings.Repeat("z", 100), 10, []inputLine{{text: "x"}, {dropped: 100}}},
		{"empty lines", "\n\nq\n", 4, []inputLine{{}, {}, {text: "q"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A 16-byte bufio buffer makes long lines span many ReadSlice calls.
			br := bufio.NewReaderSize(strings.NewReader(tc.in), 16)
			var got []inputLine
			for i := 0; i < 10; i++ {
				l, err := readLine(br, tc.max)
				if err != nil && l.text == "" && l.dropped == 0 {
					break
				}
				got = append(got, l)
			}
			assert.Equal(t, tc.lines, got)
		})
	}
}

// Item 3: an explicit --ctx above the model's context is refused with both
// numbers; the default (4096) is lowered to the model's 512 silently.
func TestCtxAboveModel(t *testing.T) {
	code, _, stderr := cli(t, "", "--ctx", "100000", "-p", "Lily", "-n", "2")
	assert.Equal(t, exitUsage, code, stderr)
	assert.Contains(t, stderr, "--ctx 100000 is more than this model's context of 512 tokens")

	code, _, stderr = cli(t, "", "--ctx", "512", "-p", "Lily", "-n", "2", "--temp", "0")
	assert.Equal(t, exitOK, code, stderr)
	code, _, stderr = cli(t, "", "-p", "Lily", "-n", "2", "--temp", "0")
	assert.Equal(t, exitOK, code, stderr)
	assert.NotContains(t, stderr, "--ctx")
}

// Item 4: a run cut by the context reports "context", not "length", and
// says so on stderr; -n reached is still "length".
func TestStopReasonContext(t *testing.T) {
	tests := []struct {
		name, n, stop string
		generated     int
	}{
		{"huge -n", "1000000000", stopContext, 18},
		{"-n -1", "-1", stopContext, 18},
		{"-n equal to the room", "18", stopLength, 18},
		{"-n below the room", "5", stopLength, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// "Lily" is BOS + 1 token, so a 20-token context leaves 18.
			code, stdout, stderr := cli(t, "", "-p", "Lily", "--temp", "0", "--ctx", "20", "-n", tc.n, "--json")
			require.Equal(t, 0, code, stderr)
			r := decodeJSON(t, stdout)
			assert.Equal(t, tc.stop, r.Stop)
			assert.Equal(t, tc.generated, r.GeneratedTokens)
		})
	}
	code, _, stderr := cli(t, "", "-p", "Lily", "--temp", "0", "--ctx", "20", "-n", "1000000000")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "stopped: the context is full (20 tokens: 2 of prompt, 18 generated); raise --ctx (the model allows 512)")
	code, _, stderr = cli(t, "", "-p", "Lily", "--temp", "0", "--ctx", "20", "-n", "5")
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "context is full")
}

// Item 4 in --chat: a reply cut by the context says so.
func TestChatContextFull(t *testing.T) {
	dir := templateCheckpoint(t, plainTemplate)
	code, _, stderr := cli(t, "Tell me about Lily.\n/bye\n", "-m", dir, "--chat", "--temp", "0", "-n", "-1", "--ctx", "40")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "(stopped: the context of 40 tokens is full; use /clear to start over)")
}

// Item 5: --repeat-penalty 0 is refused like -1, with the same wording.
func TestRepeatPenaltyNonPositive(t *testing.T) {
	for _, v := range []string{"0", "-1", "-0.5"} {
		t.Run(v, func(t *testing.T) {
			code, _, stderr := cli(t, "", "--repeat-penalty", v, "-p", "Lily")
			assert.Equal(t, exitUsage, code, stderr)
			assert.Contains(t, stderr, "--repeat-penalty must be > 0 (1 = off), got "+v)
		})
	}
	code, _, stderr := cli(t, "", "--repeat-penalty", "1.1", "--temp", "0.8", "-p", "Lily", "-n", "3")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stderr, "repeat-penalty 1.1")
}

// Item 6: -h / --help exit 0 with the usage on stdout, for every command.
func TestHelpEveryCommand(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "Generation flags:"},
		{[]string{"--help"}, "Generation flags:"},
		{[]string{"help"}, "Generation flags:"},
		{[]string{"info", "-h"}, "usage: deepseek-run info"},
		{[]string{"info", "--help"}, "usage: deepseek-run info"},
		{[]string{"help", "info"}, "usage: deepseek-run info"},
		{[]string{"verify", "--help"}, "usage: deepseek-run verify"},
		{[]string{"help", "verify"}, "usage: deepseek-run verify"},
		{[]string{"tokenize", "-h"}, "usage: deepseek-run tokenize -m DIR"},
		{[]string{"tokenize", "--help"}, "usage: deepseek-run tokenize -m DIR"},
		{[]string{"help", "tokenize"}, "usage: deepseek-run tokenize -m DIR"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := cli(t, "", tc.args...)
			assert.Equal(t, exitOK, code, stderr)
			assert.Contains(t, stdout, tc.want)
			assert.NotContains(t, stderr, "help requested")
		})
	}
}

// Item 7: --seed -1 means a random seed, reported so the run can be repeated.
func TestSeedMinusOne(t *testing.T) {
	gen := func(seed string) jsonResult {
		code, stdout, stderr := cli(t, "", "-p", "Once upon a time", "--temp", "1", "--seed", seed, "-n", "24", "--json")
		require.Equal(t, exitOK, code, stderr)
		return decodeJSON(t, stdout)
	}
	a, b := gen("-1"), gen("-1")
	assert.NotEqual(t, a.Seed, b.Seed, "two random seeds")
	again := gen(strconv.FormatUint(a.Seed, 10))
	assert.Equal(t, a.IDs, again.IDs, "the reported seed repeats the run")

	code, _, stderr := cli(t, "", "-p", "Lily", "--temp", "1", "--seed", "-1", "-n", "2")
	require.Equal(t, exitOK, code, stderr)
	assert.Regexp(t, `seed \d+`, stderr, "the random seed is printed with the timings")

	for _, bad := range []string{"-2", "x"} {
		code, _, stderr = cli(t, "", "--seed", bad)
		assert.Equal(t, exitUsage, code, stderr)
		assert.Contains(t, stderr, "or -1 for a random seed")
	}
}

// Item 8: --threads above the cores is refused with both numbers; --device
// takes any case.
func TestThreadsAndDeviceCase(t *testing.T) {
	cores := runtime.NumCPU()
	code, _, stderr := cli(t, "", "--threads", strconv.Itoa(cores+1), "-p", "Lily")
	assert.Equal(t, exitUsage, code, stderr)
	assert.Contains(t, stderr, fmt.Sprintf("--threads %d is more than the %d CPU cores", cores+1, cores))
	code, _, stderr = cli(t, "", "verify", "-m", "x", "--ref", "y", "--threads", "100000")
	assert.Equal(t, exitUsage, code, stderr)
	assert.Contains(t, stderr, "--threads 100000 is more than")

	for _, d := range []string{"CPU", "Cpu", " cpu"} {
		code, _, stderr = cli(t, "", "--device", d, "-p", "Lily", "-n", "2", "--temp", "0")
		assert.Equal(t, exitOK, code, "--device %q: %s", d, stderr)
	}
	code, _, stderr = cli(t, "", "--device", "TPU")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, `--device must be auto, cpu or cuda, got "TPU"`)
}

// Item 9: the "running on cpu" note is printed once, short, only where the
// device matters (generation, not info or tokenize), in full with -v.
func TestDeviceNote(t *testing.T) {
	_, cudaErr := cuda.Devices()
	if cudaErr == nil {
		// With a GPU there is no fallback to report.
		code, _, stderr := cli(t, "", "-p", "Lily", "-n", "2", "--temp", "0")
		require.Equal(t, exitOK, code, stderr)
		assert.NotContains(t, stderr, "running on cpu")
		return
	}
	code, _, stderr := cli(t, "", "-p", "Lily", "-n", "2", "--temp", "0")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, 1, strings.Count(stderr, "running on cpu"), stderr)
	assert.Contains(t, stderr, "deepseek-run: running on cpu (no usable GPU; -v says why)\n")
	assert.NotContains(t, stderr, cudaErr.Error(), "the long reason only with -v")

	code, _, stderr = cli(t, "", "-p", "Lily", "-n", "2", "--temp", "0", "-v")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, 1, strings.Count(stderr, "running on cpu"), stderr)
	assert.Contains(t, stderr, "running on cpu: "+oneLine(cudaErr.Error()))

	for _, args := range [][]string{
		{"info"},
		{"tokenize", "-m", "does-not-exist"},
		{"tokenize", "-m", tokDir},
		{"--device", "cpu", "-p", "Lily", "-n", "2"},
		{"-p", strings.Repeat("Lily and Tom. ", 200)}, // fails before generating: the prompt is too long
	} {
		_, _, stderr := cli(t, "hello", args...)
		assert.NotContains(t, stderr, "running on cpu", "%v", args)
	}
}

// countingReader serves size bytes of line repeated, counting what was read.
type countingReader struct {
	line       string
	size, read int
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.read >= c.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && c.read < c.size {
		k := copy(p[n:min(len(p), n+c.size-c.read)], c.line[c.read%len(c.line):])
		n += k
		c.read += k
	}
	return n, nil
}

// Item 1: a huge prompt on stdin is refused once its tokens pass the
// context, having read only a small part of it.
func TestHugeStdinPrompt(t *testing.T) {
	const size = 50 << 20
	tests := []struct {
		name    string
		line    string
		args    []string
		msg     string
		maxRead int
	}{
		{"lines", "Once upon a time there was a little girl named Lily.\n", nil,
			"the prompt on stdin is at least", 1 << 20},
		{"lines, small --ctx", "Once upon a time there was a little girl named Lily.\n", []string{"--ctx", "64"},
			"but the context is 64 tokens: shorten it or raise --ctx (the model allows 512)", 1 << 20},
		{"one endless line", "Once upon a time there was a little girl named Lily. ", nil,
			"the prompt on stdin is over 512.00 KiB (far more than 512 tokens) but the model's context is 512 tokens", 512<<10 + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &countingReader{line: tc.line, size: size}
			var out, errb bytes.Buffer
			code := run(append([]string{"--temp", "0", "-n", "4"}, tc.args...), in, &out, &errb)
			assert.Equal(t, exitFailure, code, errb.String())
			assert.Contains(t, errb.String(), tc.msg)
			assert.LessOrEqual(t, in.read, tc.maxRead, "stdin is read only until the prompt is known to be too long")
			assert.Empty(t, out.String())
		})
	}
	// A prompt that fits is read whole and generated from, as before.
	in := &countingReader{line: "Once upon a time.\n", size: 3 * len("Once upon a time.\n")}
	var out, errb bytes.Buffer
	require.Equal(t, exitOK, run([]string{"--temp", "0", "-n", "4"}, in, &out, &errb), errb.String())
	assert.True(t, strings.HasPrefix(out.String(), "Once upon a time.\nOnce upon a time.\nOnce upon a time."), out.String())
}

// firstWrite records how much of stdin had been read when stdout was
// first written.
type firstWrite struct {
	bytes.Buffer
	in      *countingReader
	readAt  int
	written bool
}

func (w *firstWrite) Write(p []byte) (int, error) {
	if !w.written {
		w.readAt, w.written = w.in.read, true
	}
	return w.Buffer.Write(p)
}

// Item 1: tokenize streams: ids are written while stdin is still being
// read, and they are those of Encode on the whole text.
func TestTokenizeStreams(t *testing.T) {
	const size = 4 << 20
	line := "Hello world, this is line 1.\nAnd 42 more words!\n"
	in := &countingReader{line: line, size: size}
	out := &firstWrite{in: in}
	var errb bytes.Buffer
	require.Equal(t, exitOK, runTokenize(context.Background(), []string{"-m", tokDir}, in, out, &errb), errb.String())
	assert.Less(t, out.readAt, size/2, "output starts before the input is read")

	var got []int
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	tok, err := tokenizer.Load(tokDir)
	require.NoError(t, err)
	want, err := tok.Encode(strings.Repeat(line, size/len(line))+line[:size%len(line)], false)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}
