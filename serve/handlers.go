package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	list := ModelList{Object: "list", Data: []ModelCard{}}
	for _, n := range s.models.names() {
		list.Data = append(list.Data, ModelCard{ID: n, Object: "model", OwnedBy: "deepseek-go"})
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	for _, n := range s.models.names() {
		if n == name {
			writeJSON(w, http.StatusOK, ModelCard{ID: n, Object: "model", OwnedBy: "deepseek-go"})
			return
		}
	}
	writeError(w, errModelNotFound(name))
}

// job is one HTTP generation request turned into engine requests: one per
// prompt per choice.
type job struct {
	id       string
	created  int64
	chat     bool
	model    string
	prompts  [][]int
	think    bool // the chat template opened a <think> block
	samp     sampling
	logprobs bool
	top      int
	stream   bool
	usage    bool // stream_options.include_usage
	t0       time.Time
}

// head is the opening of every response object and chunk the job writes:
// chat ids are "chatcmpl-", completion ids "cmpl-", as OpenAI's are.
func (j *job) head(object string) ResponseHead {
	id := "cmpl-" + j.id
	if j.chat {
		id = "chatcmpl-" + j.id
	}
	return ResponseHead{ID: id, Object: object, Created: j.created, Model: j.model}
}

// decodeRequest reads, decodes and validates a request body into req,
// answering the client itself when it is bad.
func (s *Server) decodeRequest(w http.ResponseWriter, r *http.Request, req interface{ validate() error }) bool {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return false
	}
	if err := decodeJSON(body, req); err != nil {
		writeError(w, asAPIError(err))
		return false
	}
	if err := req.validate(); err != nil {
		writeError(w, asAPIError(err))
		return false
	}
	return true
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	var req ChatRequest
	if !s.decodeRequest(w, r, &req) {
		return
	}
	top := 0
	if req.TopLogprobs != nil {
		top = *req.TopLogprobs
	}
	s.generate(w, r, &req.Params, true, t0, req.Logprobs, top, func(ctx context.Context, m *Replica) ([][]int, bool, error) {
		ids, think, err := chatPrompt(ctx, m.Tokenizer, req.Messages, req.ChatTemplateKwargs)
		return [][]int{ids}, think, err
	})
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	var req CompletionRequest
	if !s.decodeRequest(w, r, &req) {
		return
	}
	lp, top := false, 0
	if req.Logprobs != nil {
		lp, top = true, *req.Logprobs
	}
	s.generate(w, r, &req.Params, false, t0, lp, top, func(ctx context.Context, m *Replica) ([][]int, bool, error) {
		out := make([][]int, len(req.Prompt))
		for i, p := range req.Prompt {
			if p.IDs != nil {
				for _, id := range p.IDs {
					if id < 0 || id >= m.VocabSize {
						return nil, false, invalidf("prompt", "prompt %d: token id %d is outside the vocabulary of %d", i, id, m.VocabSize)
					}
				}
				out[i] = p.IDs
				continue
			}
			ids, err := m.Tokenizer.EncodeContext(ctx, p.Text, true)
			if err != nil {
				return nil, false, fmt.Errorf("encoding prompt %d: %w", i, err)
			}
			if len(ids) == 0 {
				return nil, false, invalidf("prompt", "prompt %d encodes to no tokens", i)
			}
			out[i] = ids
		}
		return out, false, nil
	})
}

// chatPrompt renders messages with the model's chat template (vars are
// extra template variables) and encodes them; think reports whether the
// prompt ends inside an open <think> block. A model without a template
// (base models such as the embedded stories260K) gets the message contents
// joined by newlines, so it continues the conversation text.
func chatPrompt(ctx context.Context, tok *tokenizer.Tokenizer, msgs []ChatMessage, vars map[string]any) (ids []int, think bool, err error) {
	if tok.ChatTemplate() == "" {
		parts := make([]string, len(msgs))
		for i, m := range msgs {
			parts[i] = string(m.Content)
		}
		ids, err := tok.EncodeContext(ctx, strings.Join(parts, "\n"), true)
		if err != nil {
			return nil, false, fmt.Errorf("encoding the messages: %w", err)
		}
		return ids, false, nil
	}
	tm := make([]map[string]any, len(msgs))
	for i, m := range msgs {
		role := m.Role
		if role == "developer" {
			role = "system"
		}
		tm[i] = map[string]any{"role": role, "content": string(m.Content)}
	}
	prompt, err := tok.RenderChat(tm, tokenizer.ChatOptions{AddGenerationPrompt: true, Vars: vars})
	if err != nil {
		return nil, false, invalidf("messages", "the model's chat template rejected the messages: %v", err)
	}
	// The template writes the BOS itself.
	ids, err = tok.EncodeContext(ctx, prompt, false)
	if err != nil {
		return nil, false, fmt.Errorf("encoding the chat prompt: %w", err)
	}
	return ids, tokenizer.OpensThinkBlock(prompt), nil
}

// asAPIError keeps an *apiError and turns anything else into a 500.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "internal_error", Message: err.Error()}
}

// generate runs a chat or completions request: admission, prompt, the
// engine requests, and the response (streamed or not).
func (s *Server) generate(w http.ResponseWriter, r *http.Request, p *Params, chat bool, t0 time.Time, logprobs bool, top int,
	prompts func(context.Context, *Replica) ([][]int, bool, error)) {
	ri := infoOf(r.Context())
	ri.model = p.Model
	if s.draining.Load() {
		writeError(w, errUnavailable(1, "the server is shutting down"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()

	// The model must be known before prompts can be counted, and the
	// sampling defaults come from it: validate params against a
	// zero default first so bad input never loads a model.
	if _, err := p.validate(engine.Request{}); err != nil {
		writeError(w, asAPIError(err))
		return
	}
	probe, err := s.models.acquire(ctx, p.Model, 0)
	if err != nil {
		s.writeAcquireError(w, r, err)
		return
	}
	info := probe.info()
	probe.release()
	samp, err := p.validate(info.Defaults)
	if err != nil {
		writeError(w, asAPIError(err))
		return
	}
	ids, think, err := prompts(ctx, info)
	if err != nil {
		writeError(w, asAPIError(err))
		return
	}
	j := &job{id: ri.id, created: time.Now().Unix(), chat: chat, model: p.Model, prompts: ids, think: think, samp: samp,
		logprobs: logprobs, top: top, stream: p.Stream, usage: p.StreamOptions != nil && p.StreamOptions.IncludeUsage, t0: t0}
	promptParam := "prompt"
	if chat {
		promptParam = "messages"
	}
	for _, pr := range ids {
		if err := checkContext(len(pr), samp.maxTokens, info.ContextLen, promptParam); err != nil {
			writeError(w, err)
			return
		}
		ri.promptTokens += len(pr)
	}
	l, err := s.models.acquire(ctx, p.Model, len(ids)*samp.n)
	if err != nil {
		s.writeAcquireError(w, r, err)
		return
	}
	defer l.release()
	s.run(ctx, w, r, j, l)
}

func (s *Server) writeAcquireError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client is gone
	}
	if errors.Is(err, context.DeadlineExceeded) {
		writeError(w, errTimeout(s.opts.RequestTimeout))
		return
	}
	writeError(w, asAPIError(err))
}

func errTimeout(d time.Duration) *apiError {
	return &apiError{Status: http.StatusGatewayTimeout, Type: "server_error", Code: "timeout",
		Message: fmt.Sprintf("the request did not finish within the server's timeout of %s", d)}
}

// checkContext rejects a prompt that, with max_tokens, does not fit.
func checkContext(prompt, maxTokens, ctxLen int, promptParam string) *apiError {
	if prompt >= ctxLen {
		return invalidf(promptParam, "the prompt of %d tokens leaves no room to generate in the model's context of %d tokens", prompt, ctxLen)
	}
	if maxTokens > 0 && prompt+maxTokens > ctxLen {
		return invalidf("max_tokens", "the prompt of %d tokens + max_tokens %d = %d exceed the model's context of %d tokens",
			prompt, maxTokens, prompt+maxTokens, ctxLen)
	}
	return nil
}

// event is what a choice's worker reports: text as it is generated, then
// one final event with the finish reason or the error.
type event struct {
	index     int
	content   string
	reasoning string
	lps       []TokenLogprob
	done      bool
	finish    string // stop or length, on the final event
	err       error  // on the final event when the generation failed
	usage     choiceUsage
}

type choiceUsage struct{ prompt, cached, completion int }

// run submits every engine request of j and writes the response.
func (s *Server) run(ctx context.Context, w http.ResponseWriter, r *http.Request, j *job, l *lease) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // a writer that fails stops the workers
	n := len(j.prompts) * j.samp.n
	events := make(chan event, 16)
	var wg sync.WaitGroup
	for k := range n {
		req := j.samp.req
		req.Prompt = j.prompts[k/j.samp.n]
		req.MaxTokens = j.samp.maxTokens
		req.Logprobs, req.TopLogprobs = j.logprobs, j.top
		switch {
		case j.samp.seeded:
			req.Sampling.Seed += uint64(k) // n choices of one seed differ, reproducibly
		case !req.Sampling.Greedy():
			req.Sampling.Seed = rand.Uint64()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.runChoice(ctx, j, k, l.reps[k], req, events)
		}()
	}
	go func() { wg.Wait(); close(events) }()
	defer func() {
		cancel()
		for range events { // drain so no worker blocks, even after a panic here
		}
	}()
	if j.stream {
		s.writeStream(cancel, w, r, j, n, events)
	} else {
		s.writeWhole(w, r, j, n, events)
	}
}

// runChoice runs one engine request and reports its text on events.
func (s *Server) runChoice(ctx context.Context, j *job, index int, rep *replicaSlot, req engine.Request, events chan<- event) {
	// The writer drains events until every worker is done, so a send
	// never blocks for good; false tells the worker to stop.
	send := func(e event) bool {
		e.index = index
		events <- e
		return ctx.Err() == nil
	}
	m := s.metrics
	usage := choiceUsage{prompt: len(req.Prompt)}
	finish := ""
	var genErr error
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in generation", "request_id", j.id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			genErr = errors.New("internal error")
			finish = ""
		}
		label := finish
		switch {
		case genErr != nil && ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) && !errors.Is(ctx.Err(), context.DeadlineExceeded):
			label = "cancelled"
		case genErr != nil:
			label = "error"
		}
		m.requests.WithLabelValues(j.model, label).Inc()
		m.promptTokens.WithLabelValues(j.model).Add(float64(usage.prompt))
		m.genTokens.WithLabelValues(j.model).Add(float64(usage.completion))
		send(event{done: true, finish: finish, err: genErr, usage: usage})
	}()

	st, err := rep.Gen.Submit(ctx, req)
	if err != nil {
		genErr = err
		return
	}
	tok := rep.Tokenizer
	dec := tok.NewStreamDecoderWith(tokenizer.StreamOptions{Context: req.Prompt, SkipSpecial: true})
	stops := &stopMatcher{stops: j.samp.stops}
	var think *thinkSplitter
	if j.think {
		think = &thinkSplitter{inThink: true}
	}
	emit := func(ps []piece) bool {
		var e event
		for _, p := range ps {
			if think != nil {
				rs, c := think.split(p.text)
				e.reasoning += rs
				e.content += c
			} else {
				e.content += p.text
			}
			if p.lp != nil {
				e.lps = append(e.lps, *p.lp)
			}
		}
		if e.content == "" && e.reasoning == "" && e.lps == nil {
			return true
		}
		return send(e)
	}
	var first, last time.Time
	stopped := false
	for t, err := range st.Tokens() {
		if err != nil {
			genErr = err
			break
		}
		last = time.Now()
		if usage.completion == 0 {
			first = last
			m.ttft.WithLabelValues(j.model).Observe(first.Sub(j.t0).Seconds())
		}
		usage.completion++
		p := piece{text: dec.Next(t.ID)}
		if req.Logprobs {
			p.lp = tokenLogprob(tok, t, p.text, req.TopLogprobs)
		}
		out, hit := stops.push(p)
		if !emit(out) {
			genErr = ctx.Err()
			break
		}
		if hit {
			stopped = true
			break // cancels the engine request
		}
	}
	res := st.Result()
	usage.cached = res.CachedTokens
	m.queue.WithLabelValues(j.model).Observe(res.Queued.Seconds())
	if genErr != nil {
		return
	}
	if usage.completion > 0 {
		m.e2e.WithLabelValues(j.model).Observe(last.Sub(j.t0).Seconds())
		if usage.completion > 1 {
			m.tpot.WithLabelValues(j.model).Observe(last.Sub(first).Seconds() / float64(usage.completion-1))
		}
	}
	if stopped {
		finish = "stop"
		return
	}
	// Text the decoder held back (an incomplete character) may still
	// complete a stop string.
	tail, hit := stops.push(piece{text: dec.Flush()})
	if !hit {
		tail = append(tail, stops.flush()...)
	}
	if !emit(tail) {
		genErr = ctx.Err()
		return
	}
	if think != nil {
		if rs := think.flush(); rs != "" && !send(event{reasoning: rs}) {
			genErr = ctx.Err()
			return
		}
	}
	if hit {
		finish = "stop"
		return
	}
	switch res.Finish {
	case engine.FinishStop:
		finish = "stop"
	case engine.FinishLength, engine.FinishContext:
		finish = "length"
	default:
		genErr = fmt.Errorf("the generator ended without a finish reason")
	}
}

// tokenLogprob is the OpenAI logprob entry of a generated token whose
// text in the reply is text (so the tokens concatenate to the reply; a
// token in the middle of a UTF-8 character is decoded alone instead).
func tokenLogprob(tok *tokenizer.Tokenizer, t engine.Token, text string, top int) *TokenLogprob {
	if text == "" {
		text = tok.Decode([]int{t.ID})
	}
	lp := &TokenLogprob{Token: text, Logprob: t.Logprob, Bytes: byteInts(text), TopLogprobs: []TopLogprob{}}
	for i, a := range t.Top {
		if i >= top {
			break
		}
		at := tok.Decode([]int{a.ID})
		lp.TopLogprobs = append(lp.TopLogprobs, TopLogprob{Token: at, Logprob: a.Logprob, Bytes: byteInts(at)})
	}
	return lp
}

func byteInts(s string) []int {
	out := make([]int, len(s))
	for i := range len(s) {
		out[i] = int(s[i])
	}
	return out
}

// choiceAcc accumulates one choice of a non-streamed response.
type choiceAcc struct {
	content, reasoning strings.Builder
	lps                []TokenLogprob
	finish             string
	usage              choiceUsage
}

// writeWhole collects every choice and writes one JSON response.
func (s *Server) writeWhole(w http.ResponseWriter, r *http.Request, j *job, n int, events <-chan event) {
	acc := make([]choiceAcc, n)
	var firstErr error
	for e := range events {
		a := &acc[e.index]
		a.content.WriteString(e.content)
		a.reasoning.WriteString(e.reasoning)
		a.lps = append(a.lps, e.lps...)
		if e.done {
			a.finish, a.usage = e.finish, e.usage
			if e.err != nil && firstErr == nil {
				firstErr = e.err
			}
		}
	}
	ri := infoOf(r.Context())
	if firstErr != nil {
		ri.finish = "error"
		if r.Context().Err() != nil {
			ri.finish = "cancelled"
			return
		}
		writeError(w, s.genError(j, firstErr))
		return
	}
	u := j.usageOf(acc)
	ri.completion, ri.finish = u.CompletionTokens, acc[0].finish
	if j.chat {
		resp := ChatCompletion{ResponseHead: j.head("chat.completion"), Usage: u}
		for i := range acc {
			a := &acc[i]
			c := ChatChoice{Index: i, Message: ChatReply{Role: "assistant", Content: a.content.String()}, FinishReason: a.finish}
			if j.think {
				rs := a.reasoning.String()
				c.Message.ReasoningContent = &rs
			}
			if j.logprobs {
				c.Logprobs = &ChatLogprobs{Content: nonNil(a.lps)}
			}
			resp.Choices = append(resp.Choices, c)
		}
		writeJSON(w, http.StatusOK, resp)
		return
	}
	resp := Completion{ResponseHead: j.head("text_completion"), Usage: u}
	for i := range acc {
		a := &acc[i]
		f := a.finish
		c := CompletionChoice{Index: i, Text: a.content.String(), FinishReason: &f}
		if j.logprobs {
			c.Logprobs = completionLogprobs(a.lps, 0)
		}
		resp.Choices = append(resp.Choices, c)
	}
	writeJSON(w, http.StatusOK, resp)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// usageOf sums the choices' usage: each prompt counts once, however many
// choices it has (as OpenAI counts n).
func (j *job) usageOf(acc []choiceAcc) *Usage {
	u := &Usage{}
	cached := 0
	for i := range acc {
		if i%j.samp.n == 0 {
			u.PromptTokens += acc[i].usage.prompt
			cached += acc[i].usage.cached
		}
		u.CompletionTokens += acc[i].usage.completion
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.PromptTokensDetails = &TokenDetails{CachedTokens: cached}
	return u
}

// completionLogprobs converts token entries to the legacy shape; offset
// is the text offset of the first token.
func completionLogprobs(lps []TokenLogprob, offset int) *CompletionLogprobs {
	out := &CompletionLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	for _, lp := range lps {
		out.Tokens = append(out.Tokens, lp.Token)
		out.TokenLogprobs = append(out.TokenLogprobs, lp.Logprob)
		top := map[string]float32{}
		for _, a := range lp.TopLogprobs {
			top[a.Token] = a.Logprob
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(lp.Token)
	}
	return out
}

// genError maps a generation error to the client's error.
func (s *Server) genError(j *job, err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, context.DeadlineExceeded):
		return errTimeout(s.opts.RequestTimeout)
	case isInvalid(err):
		return invalidf("", "%v", err)
	case isClosed(err):
		return errUnavailable(1, "the model was unloaded: %v", err)
	}
	s.log.Error("generation failed", "request_id", j.id, "model", j.model, "err", err)
	return errInternal(j.id)
}

// writeStream writes server-sent events as the choices generate.
func (s *Server) writeStream(cancel context.CancelFunc, w http.ResponseWriter, r *http.Request, j *job, n int, events <-chan event) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	ri := infoOf(r.Context())
	failed := false
	write := func(v any) {
		if failed {
			return
		}
		b, err := json.Marshal(v)
		if err == nil {
			_, err = fmt.Fprintf(w, "data: %s\n\n", b)
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			failed = true
			cancel() // the client is gone: stop generating
		}
	}
	chatChunk := func(c ChatChunkChoice) ChatChunk {
		return ChatChunk{ResponseHead: j.head("chat.completion.chunk"), Choices: []ChatChunkChoice{c}}
	}
	cmplChunk := func(c CompletionChoice) Completion {
		return Completion{ResponseHead: j.head("text_completion"), Choices: []CompletionChoice{c}}
	}
	if j.chat {
		empty := ""
		for i := range n {
			write(chatChunk(ChatChunkChoice{Index: i, Delta: ChatDelta{Role: "assistant", Content: &empty}}))
		}
	}
	acc := make([]choiceAcc, n)
	offsets := make([]int, n)
	var firstErr error
	for e := range events {
		a := &acc[e.index]
		if e.content != "" || e.reasoning != "" || e.lps != nil {
			if j.chat {
				c := ChatChunkChoice{Index: e.index}
				if e.content != "" {
					c.Delta.Content = &e.content
				}
				if e.reasoning != "" {
					c.Delta.ReasoningContent = &e.reasoning
				}
				if j.logprobs {
					c.Logprobs = &ChatLogprobs{Content: nonNil(e.lps)}
				}
				write(chatChunk(c))
			} else {
				c := CompletionChoice{Index: e.index, Text: e.content}
				if j.logprobs {
					c.Logprobs = completionLogprobs(e.lps, offsets[e.index])
				}
				offsets[e.index] += len(e.content)
				write(cmplChunk(c))
			}
		}
		if !e.done {
			continue
		}
		a.finish, a.usage = e.finish, e.usage
		if e.err != nil {
			if firstErr == nil {
				firstErr = e.err
			}
			continue
		}
		f := e.finish
		if j.chat {
			write(chatChunk(ChatChunkChoice{Index: e.index, FinishReason: &f}))
		} else {
			write(cmplChunk(CompletionChoice{Index: e.index, FinishReason: &f}))
		}
	}
	u := j.usageOf(acc)
	ri.completion = u.CompletionTokens
	ri.finish = acc[0].finish
	switch {
	case failed || r.Context().Err() != nil:
		ri.finish = "cancelled"
		return
	case firstErr != nil:
		ri.finish = "error"
		write(s.genError(j, firstErr).body())
	case j.usage:
		if j.chat {
			write(ChatChunk{ResponseHead: j.head("chat.completion.chunk"), Choices: []ChatChunkChoice{}, Usage: u})
		} else {
			write(Completion{ResponseHead: j.head("text_completion"), Choices: []CompletionChoice{}, Usage: u})
		}
	}
	if !failed {
		_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
		_ = rc.Flush()
	}
}
