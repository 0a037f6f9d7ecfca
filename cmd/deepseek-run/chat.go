package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

const chatHelp = `commands: /bye (or end of input) quits, /clear forgets the conversation, /help shows this`

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
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for turn := 0; ; turn++ {
		fmt.Fprint(stderr, ">>> ")
		if !sc.Scan() {
			fmt.Fprintln(stderr)
			return sc.Err()
		}
		line := strings.TrimSpace(sc.Text())
		switch line {
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
		msgs := append(slices.Clip(history), tokenizer.Message{Role: "user", Content: line})
		ts := s
		ts.Seed = s.Seed + uint64(turn) // reproducible, yet not the same draw every turn
		var st engine.Stats
		opts := engine.GenerateOptions{Sampling: ts, Stats: &st}
		if o.n > 0 {
			opts.MaxTokens = o.n
		}
		var reply strings.Builder
		var err error
		for t, terr := range conv.Chat(ctx, msgs, opts) {
			if err = terr; err != nil {
				break
			}
			reply.WriteString(t.Text)
			if _, err = io.WriteString(stdout, t.Text); err != nil {
				break
			}
		}
		if reply.Len() > 0 && !strings.HasSuffix(reply.String(), "\n") {
			fmt.Fprintln(stdout)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
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
