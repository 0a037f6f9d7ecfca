package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

const chatHelp = `commands: /bye (or end of input) quits, /clear forgets the conversation, /help shows this; """ starts and ends a multi-line message; Ctrl-C stops a reply`

// runChat is the interactive REPL: each line on stdin is a user turn; the
// reply streams to stdout and joins the conversation, which is rendered
// with the checkpoint's chat template every turn; the KV cache is kept
// between turns, so only the new part of the conversation is prefilled. Prompts and notes go to
// stderr so stdout holds only the replies.
func runChat(ctx context.Context, m *engine.Model, o *genOptions, s engine.SamplerOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	if tok := m.Tokenizer(); tok == nil || !hasChatTemplate(tok) {
		return fmt.Errorf("--chat needs a chat template, and this checkpoint's tokenizer_config.json has none; use -p for plain text completion")
	}
	conv, err := m.NewConversation(min(o.ctx, contextLength(m)))
	if err != nil {
		return err
	}
	var history []tokenizer.Message
	if o.system != "" {
		history = append(history, tokenizer.Message{Role: "system", Content: o.system})
	}
	base := len(history)
	fmt.Fprintln(stderr, chatHelp)
	lines, readErr, stopReading := readLines(stdin)
	defer stopReading()
	for turn := 0; ; turn++ {
		fmt.Fprint(stderr, ">>> ")
		line, ok, err := nextLine(ctx, lines, readErr)
		if !ok {
			fmt.Fprintln(stderr)
			return err
		}
		if strings.TrimSpace(line) == `"""` { // multi-line message, as in ollama: up to the next """
			var block []string
			for {
				fmt.Fprint(stderr, "... ")
				l, ok, err := nextLine(ctx, lines, readErr)
				if !ok {
					fmt.Fprintln(stderr)
					return err
				}
				if strings.TrimSpace(l) == `"""` {
					break
				}
				block = append(block, l)
			}
			line = strings.Join(block, "\n")
		}
		switch strings.TrimSpace(line) {
		case "":
			continue
		case "/bye", "/exit", "/quit":
			return nil
		case "/clear":
			history = history[:base]
			fmt.Fprintln(stderr, "(conversation cleared)")
			continue
		case "/help", "/?":
			fmt.Fprintln(stderr, chatHelp)
			continue
		}
		line = strings.TrimSpace(line)
		msgs := append(slices.Clip(history), tokenizer.Message{Role: "user", Content: line})
		ts := s
		ts.Seed = s.Seed + uint64(turn) // reproducible, yet not the same draw every turn
		var st engine.Stats
		opts := engine.GenerateOptions{Sampling: ts, Stats: &st}
		if o.n > 0 {
			opts.MaxTokens = o.n
		}
		var reply strings.Builder
		turnCtx, endTurn := startTurn(ctx)
		for t, terr := range conv.Chat(turnCtx, msgs, opts) {
			if err = terr; err != nil {
				break
			}
			reply.WriteString(t.Text)
			if _, err = io.WriteString(stdout, t.Text); err != nil {
				break
			}
		}
		endTurn()
		if reply.Len() > 0 && !strings.HasSuffix(reply.String(), "\n") {
			fmt.Fprintln(stdout)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.Canceled) {
				// Ctrl-C stopped this reply: keep what was said and go on.
				fmt.Fprintln(stderr, "(interrupted)")
				history = append(msgs, tokenizer.Message{Role: "assistant", Content: strings.TrimSpace(reply.String())})
				continue
			}
			// Most likely the conversation outgrew the context: keep the
			// REPL alive and say how to recover.
			fmt.Fprintf(stderr, "error: %s (use /clear to start over)\n", oneLine(err.Error()))
			continue
		}
		history = append(msgs, tokenizer.Message{Role: "assistant", Content: strings.TrimSpace(reply.String())})
		fresh := st.PromptTokens - conv.Reused()
		fmt.Fprintf(stderr, "(%d prompt tokens, %d reused from the cache, %d new at %.1f tok/s; %d generated at %.1f tok/s)\n",
			st.PromptTokens, conv.Reused(), fresh, perSec(fresh, st.Prefill), st.GeneratedTokens, st.DecodeTokensPerSec())
	}
}

// nextLine waits for the next input line (whitespace-trimmed only at the
// ends of the line, so multi-line blocks keep their indentation); ok is
// false at the end of input (err is the read error, if any) or when ctx is
// cancelled (err is ctx.Err()).
func nextLine(ctx context.Context, lines <-chan string, readErr *error) (line string, ok bool, err error) {
	select {
	case l, ok := <-lines:
		if !ok {
			return "", false, *readErr
		}
		return strings.TrimRight(l, "\r"), true, nil
	case <-ctx.Done(): // Ctrl-C at the prompt
		return "", false, ctx.Err()
	}
}

// readLines reads stdin line by line on its own goroutine, so that the
// REPL can also wait for Ctrl-C. The error, if any, is valid once lines is
// closed; stop lets the reader quit early.
func readLines(r io.Reader) (lines <-chan string, err *error, stop func()) {
	ch, done := make(chan string), make(chan struct{})
	var readErr error
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			select {
			case ch <- sc.Text():
			case <-done:
				return
			}
		}
		readErr = sc.Err()
	}()
	return ch, &readErr, func() { close(done) }
}
