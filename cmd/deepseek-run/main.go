// Command deepseek-run runs DeepSeek-family language models (and other
// Llama/Qwen2 checkpoints) from a Hugging Face checkpoint directory, on CPU
// or an NVIDIA GPU. Without -m it runs the embedded stories260K demo model,
// so it works offline on a fresh machine.
//
// Usage:
//
//	deepseek-run [-m DIR] [-p PROMPT] [-n N] [--temp T] [--chat] ...
//	deepseek-run info -m DIR [--int8]
//	deepseek-run tokenize -m DIR [--jsonl]
//	deepseek-run verify -m DIR --ref FILE [--tol 1e-4]
//	deepseek-run serve [--addr HOST:PORT] [-m NAME=DIR]...
//	deepseek-run bench serve [--url URL] ...
//	deepseek-run synth --shape NAME -o DIR
//
// Run "deepseek-run -h" for every flag. Exit status: 0 success, 1 runtime
// failure (unreadable model, generation error, failed verification), 2 usage
// error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
)

func main() {
	// Ctrl-C stops the reply being generated (in --chat, the REPL then
	// waits for the next turn); with nothing being generated it cancels
	// the whole run.
	ctx, cancel := context.WithCancel(context.Background())
	turns := &turnCanceler{}
	ctx = context.WithValue(ctx, turnKey{}, turns)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() {
		for range sig {
			if !turns.cancel() {
				cancel()
			}
		}
	}()
	code := runContext(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	signal.Stop(sig)
	cancel()
	os.Exit(code)
}

// turnKey is the context key of the *turnCanceler main installs.
type turnKey struct{}

// turnCanceler holds the cancel function of the chat turn in flight.
type turnCanceler struct {
	mu sync.Mutex
	f  context.CancelFunc
}

// start returns a context for one chat turn that Ctrl-C cancels, and a
// function to call when the turn ends.
func startTurn(ctx context.Context) (context.Context, func()) {
	t, ok := ctx.Value(turnKey{}).(*turnCanceler)
	if !ok {
		return ctx, func() {}
	}
	turn, cancel := context.WithCancel(ctx)
	t.mu.Lock()
	t.f = cancel
	t.mu.Unlock()
	return turn, func() {
		t.mu.Lock()
		t.f = nil
		t.mu.Unlock()
		cancel()
	}
}

// cancel stops the turn in flight and reports whether there was one.
func (t *turnCanceler) cancel() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return false
	}
	t.f()
	t.f = nil
	return true
}

// run is main without the process: tests call it in-process.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdin, stdout, stderr)
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks errors caused by how the command was invoked (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func runContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	// A bug must not greet a user with a Go stack trace: report it in one
	// line (panics on other goroutines still crash, with their trace).
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "deepseek-run: internal error: %s (please report it with the command line)\n", oneLine(fmt.Sprint(r)))
			code = exitFailure
		}
	}()
	var err error
	if len(args) > 0 {
		switch args[0] {
		case "info":
			err = runInfo(ctx, args[1:], stdout, stderr)
			return report(err, stderr)
		case "verify":
			err = runVerify(ctx, args[1:], stdout, stderr)
			return report(err, stderr)
		case "tokenize":
			return runTokenize(ctx, args[1:], stdin, stdout, stderr)
		case "serve":
			return report(runServe(ctx, args[1:], stdout, stderr), stderr)
		case "bench":
			return report(runBench(ctx, args[1:], stdout, stderr), stderr)
		case "synth":
			return report(runSynth(ctx, args[1:], stdout, stderr), stderr)
		case "help":
			// "help CMD" is "CMD -h".
			if len(args) > 1 && args[1] != "help" {
				return runContext(ctx, []string{args[1], "-h"}, stdin, stdout, stderr)
			}
			printUsage(stdout)
			return exitOK
		}
	}
	err = runGenerate(ctx, args, stdin, stdout, stderr)
	return report(err, stderr)
}

// report prints err as one line and maps it to an exit code. Usage errors
// point at -h; nothing here ever prints a stack trace.
func report(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "deepseek-run: %s (see deepseek-run -h)\n", oneLine(ue.msg))
		return exitUsage
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "deepseek-run: interrupted")
		return exitFailure
	}
	fmt.Fprintf(stderr, "deepseek-run: %s\n", oneLine(err.Error()))
	return exitFailure
}

// errHelp is returned after -h printed the usage.
var errHelp = errors.New("help requested")

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `deepseek-run runs DeepSeek-family models from a Hugging Face checkpoint directory.

Usage:
  deepseek-run [flags]                 generate text (default: embedded stories260K demo model)
  deepseek-run info -m DIR [--int8]    describe a checkpoint: architecture, size, KV cache, devices
  deepseek-run tokenize -m DIR         text on stdin -> token ids (--jsonl for one JSON per line)
  deepseek-run verify -m DIR --ref FILE [--tol 1e-4]
                                       compare against a reference.safetensors from transformers
  deepseek-run serve [--addr HOST:PORT] [-m NAME=DIR]...
                                       OpenAI-compatible server with continuous batching and metrics
  deepseek-run bench serve [--url URL] load-test an OpenAI-compatible server (requests/s, P99 latency)
  deepseek-run synth --shape NAME -o DIR
                                       write a synthetic full-size checkpoint (random weights)
  ("deepseek-run CMD -h" lists a command's flags)

Generation flags:
`)
	fs := newGenerateFlags(io.Discard, new(genOptions))
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, `
Examples:
  deepseek-run -p "Once upon a time"
  deepseek-run -m ~/models/DeepSeek-R1-Distill-Qwen-1.5B -p "Why is the sky blue?"
  deepseek-run -m ~/models/DeepSeek-R1-Distill-Qwen-1.5B --chat --system "Be brief."
`)
}
