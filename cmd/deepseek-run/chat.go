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
	ctxLen := min(o.ctx, contextLength(m))
	conv, err := m.NewConversation(ctxLen)
	if err != nil {
		return err
	}
	if o.deviceNote != "" {
		fmt.Fprintln(stderr, o.deviceNote)
	}
	var history []tokenizer.Message
	if o.system != "" {
		history = append(history, tokenizer.Message{Role: "system", Content: o.system})
	}
	base := len(history)
	fmt.Fprintln(stderr, chatHelp)
	lines, readErr, stopReading := readLines(stdin, maxChatLine)
	defer stopReading()
	for turn := 0; ; turn++ {
		fmt.Fprint(stderr, ">>> ")
		in, ok, err := nextLine(ctx, lines, readErr)
		if !ok {
			fmt.Fprintln(stderr)
			return err
		}
		line, dropped := in.text, in.dropped
		if dropped == 0 && strings.TrimSpace(line) == `"""` { // multi-line message, as in ollama: up to the next """
			var block []string
			for {
				fmt.Fprint(stderr, "... ")
				l, ok, err := nextLine(ctx, lines, readErr)
				if !ok {
					fmt.Fprintln(stderr)
					return err
				}
				if l.dropped == 0 && strings.TrimSpace(l.text) == `"""` {
					break
				}
				dropped = max(dropped, l.dropped)
				block = append(block, l.text)
			}
			line = strings.Join(block, "\n")
		}
		if dropped > 0 {
			// The rest of the line was read and thrown away, so the next
			// line is a turn of its own: keep the conversation going.
			fmt.Fprintf(stderr, "error: a line of %s is over the %s limit of one line; the message was dropped (put long text in a file and pass it on stdin without --chat)\n",
				humanBytes(dropped), humanBytes(maxChatLine))
			continue
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
		// The engine stops quietly when the context fills; say so, since
		// the next turn cannot fit either.
		if st.PromptTokens+st.GeneratedTokens >= ctxLen && (o.n <= 0 || st.GeneratedTokens < o.n) {
			fmt.Fprintf(stderr, "(stopped: the context of %d tokens is full; use /clear to start over)\n", ctxLen)
		}
	}
}

// maxChatLine is the longest line --chat takes as a message.
const maxChatLine = 16 << 20

// inputLine is one line of chat input; dropped > 0 means the line was
// longer than the limit: that many bytes were read and discarded.
type inputLine struct {
	text    string
	dropped int64
}

// nextLine waits for the next input line (whitespace-trimmed only at the
// ends of the line, so multi-line blocks keep their indentation); ok is
// false at the end of input (err is the read error, if any) or when ctx is
// cancelled (err is ctx.Err()).
func nextLine(ctx context.Context, lines <-chan inputLine, readErr *error) (line inputLine, ok bool, err error) {
	select {
	case l, ok := <-lines:
		if !ok {
			return inputLine{}, false, *readErr
		}
		l.text = strings.TrimRight(l.text, "\r")
		return l, true, nil
	case <-ctx.Done(): // Ctrl-C at the prompt
		return inputLine{}, false, ctx.Err()
	}
}

// readLines reads stdin line by line on its own goroutine, so that the
// REPL can also wait for Ctrl-C. A line longer than maxLine bytes is read
// to its end in bounded memory and reported as dropped rather than ending
// the input. The error, if any, is valid once lines is closed; stop lets
// the reader quit early.
func readLines(r io.Reader, maxLine int) (lines <-chan inputLine, err *error, stop func()) {
	ch, done := make(chan inputLine), make(chan struct{})
	var readErr error
	go func() {
		defer close(ch)
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			l, err := readLine(br, maxLine)
			if err != nil && (err != io.EOF || (l.text == "" && l.dropped == 0)) {
				if err != io.EOF {
					readErr = err
				}
				return
			}
			select {
			case ch <- l:
			case <-done:
				return
			}
			if err == io.EOF {
				return
			}
		}
	}()
	return ch, &readErr, func() { close(done) }
}

// readLine reads up to and without the next '\n'. Past maxLine bytes it
// stops keeping the text and only counts what it skips.
func readLine(br *bufio.Reader, maxLine int) (inputLine, error) {
	var buf []byte
	var n int64
	for {
		frag, err := br.ReadSlice('\n')
		n += int64(len(frag))
		if n <= int64(maxLine)+1 { // +1: the newline does not count
			buf = append(buf, frag...)
		} else {
			buf = nil
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		text := strings.TrimSuffix(string(buf), "\n")
		if len(frag) > 0 && frag[len(frag)-1] == '\n' {
			n--
		}
		if n > int64(maxLine) {
			return inputLine{dropped: n}, err
		}
		return inputLine{text: text}, err
	}
}
