package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/deepseek-go/deepseek-go/engine"
)

// Limits on request fields that protect the server (OpenAI's own limits
// where it has them).
const (
	maxN           = 16 // choices per request
	maxStops       = 16 // stop strings
	maxStopLen     = 256
	maxTopLogprobs = 20
	maxPrompts     = 64 // prompts in one /v1/completions batch
)

// StreamOptions is OpenAI's stream_options.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// Params are the request fields chat and completions share.
type Params struct {
	Model               string         `json:"model"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	Temperature         *float64       `json:"temperature"`
	TopP                *float64       `json:"top_p"`
	TopK                *int           `json:"top_k"`
	MinP                *float64       `json:"min_p"`
	RepetitionPenalty   *float64       `json:"repetition_penalty"`
	FrequencyPenalty    *float64       `json:"frequency_penalty"`
	PresencePenalty     *float64       `json:"presence_penalty"`
	Seed                *int64         `json:"seed"`
	Stop                StringList     `json:"stop"`
	N                   *int           `json:"n"`
	Stream              bool           `json:"stream"`
	StreamOptions       *StreamOptions `json:"stream_options"`
	IgnoreEOS           bool           `json:"ignore_eos"`
	User                string         `json:"user"`
}

// ChatRequest is the body of POST /v1/chat/completions.
type ChatRequest struct {
	Params
	Messages    []ChatMessage `json:"messages"`
	Logprobs    bool          `json:"logprobs"`
	TopLogprobs *int          `json:"top_logprobs"`
	// ChatTemplateKwargs are extra chat-template variables (vLLM's
	// extension), e.g. {"thinking": true} for DeepSeek-V3.1 or
	// {"enable_thinking": true} for templates that ask for it.
	ChatTemplateKwargs map[string]any `json:"chat_template_kwargs"`
}

// ChatMessage is one message of a chat request.
type ChatMessage struct {
	Role    string      `json:"role"`
	Content ContentText `json:"content"`
	Name    string      `json:"name,omitempty"`
}

// CompletionRequest is the body of POST /v1/completions.
type CompletionRequest struct {
	Params
	Prompt   PromptList `json:"prompt"`
	Logprobs *int       `json:"logprobs"` // number of top alternatives, 0..20
	Echo     bool       `json:"echo"`
	Suffix   *string    `json:"suffix"`
}

// StringList is a string or a list of strings (OpenAI's stop).
type StringList []string

// UnmarshalJSON accepts null, "s" or ["a", "b"].
func (l *StringList) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*l = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = StringList{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return errors.New("expected a string or a list of strings")
	}
	*l = ss
	return nil
}

// ContentText is a message content: a string, or a list of parts of which
// the text parts are joined (images and audio are not supported).
type ContentText string

// UnmarshalJSON accepts null, "text" or [{"type":"text","text":"..."}].
func (c *ContentText) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*c = ""
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = ContentText(s)
		return nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("expected a string or a list of content parts")
	}
	var sb strings.Builder
	for i, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return fmt.Errorf("part %d: only text parts are supported, got type %q", i, p.Type)
		}
		sb.WriteString(*p.Text)
	}
	*c = ContentText(sb.String())
	return nil
}

// PromptList is a completions prompt: a string, a list of strings, a list
// of token ids or a list of lists of token ids. Each entry is one prompt.
type PromptList []Prompt

// Prompt is one completions prompt, as text or as token ids.
type Prompt struct {
	Text string
	IDs  []int
}

// UnmarshalJSON accepts the four shapes OpenAI accepts.
func (p *PromptList) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*p = PromptList{{Text: s}}
		return nil
	}
	var ids []int
	if err := json.Unmarshal(b, &ids); err == nil && len(ids) > 0 {
		*p = PromptList{{IDs: ids}}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err == nil {
		out := make(PromptList, len(ss))
		for i, s := range ss {
			out[i] = Prompt{Text: s}
		}
		*p = out
		return nil
	}
	var idss [][]int
	if err := json.Unmarshal(b, &idss); err == nil {
		out := make(PromptList, len(idss))
		for i, ids := range idss {
			out[i] = Prompt{IDs: ids}
		}
		*p = out
		return nil
	}
	return errors.New("expected a string, a list of strings, a list of token ids or a list of lists of token ids")
}

// decodeJSON unmarshals a request body into v, turning decoder errors into
// 400s that name the offending field.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return invalidf("", "the request body is empty; expected a JSON object")
	}
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return invalidf("", "malformed JSON at byte %d: %v", se.Offset, err)
	case errors.As(err, &te):
		// Fields of the embedded Params come prefixed with its name.
		te.Field = strings.TrimPrefix(te.Field, "Params.")
		if te.Field == "" {
			return invalidf("", "the request body must be a JSON object, got %s", te.Value)
		}
		return invalidf(te.Field, "%s: expected %s, got %s", te.Field, jsonTypeName(te.Type.Kind().String()), te.Value)
	}
	// Errors from the custom unmarshalers name no field; json wraps
	// them without one, so say which shapes were expected.
	return invalidf("", "invalid request body: %v", err)
}

// jsonTypeName names a Go kind the way a JSON user thinks of it.
func jsonTypeName(kind string) string {
	switch kind {
	case "int", "int64", "int32", "uint64":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return kind
}

// sampling is what the shared Params ask of the generator, validated.
type sampling struct {
	maxTokens int // 0 = until the context is full
	req       engine.Request
	n         int
	stops     []string
	seeded    bool
}

// validate checks the shared fields and converts them; defaults come from
// the model's generation_config (def).
func (p *Params) validate(def engine.Request) (sampling, error) {
	s := sampling{req: def, n: 1}
	if p.Model == "" {
		return s, invalidf("model", "model is required")
	}
	mt := p.MaxTokens
	name := "max_tokens"
	if p.MaxCompletionTokens != nil {
		mt, name = p.MaxCompletionTokens, "max_completion_tokens"
	}
	if mt != nil {
		if *mt < 1 {
			return s, invalidf(name, "%s must be at least 1, got %d", name, *mt)
		}
		s.maxTokens = *mt
	}
	o := &s.req.Sampling
	if f, err := rangeF("temperature", p.Temperature, 0, 2); err != nil {
		return s, err
	} else if f != nil {
		o.Temperature = *f
	}
	if f, err := rangeF("top_p", p.TopP, 0, 1); err != nil {
		return s, err
	} else if f != nil {
		if *f == 0 {
			return s, invalidf("top_p", "top_p must be in (0, 1], got 0")
		}
		o.TopP = *f
	}
	if p.TopK != nil {
		switch k := *p.TopK; {
		case k == -1: // vLLM's "disabled"
			o.TopK = 0
		case k < 0:
			return s, invalidf("top_k", "top_k must be -1 (off) or at least 0, got %d", k)
		default:
			o.TopK = k
		}
	}
	if f, err := rangeF("min_p", p.MinP, 0, 1); err != nil {
		return s, err
	} else if f != nil {
		o.MinP = *f
	}
	if f, err := rangeF("repetition_penalty", p.RepetitionPenalty, 0, 10); err != nil {
		return s, err
	} else if f != nil {
		if *f == 0 {
			return s, invalidf("repetition_penalty", "repetition_penalty must be > 0, got 0")
		}
		o.RepeatPenalty = *f
	}
	if f, err := rangeF("frequency_penalty", p.FrequencyPenalty, -2, 2); err != nil {
		return s, err
	} else if f != nil {
		s.req.Sampling.FrequencyPenalty = *f
	}
	if f, err := rangeF("presence_penalty", p.PresencePenalty, -2, 2); err != nil {
		return s, err
	} else if f != nil {
		s.req.Sampling.PresencePenalty = *f
	}
	if p.Seed != nil {
		o.Seed = uint64(*p.Seed)
		s.seeded = true
	}
	if p.N != nil {
		if *p.N < 1 || *p.N > maxN {
			return s, invalidf("n", "n must be between 1 and %d, got %d", maxN, *p.N)
		}
		s.n = *p.N
	}
	if len(p.Stop) > maxStops {
		return s, invalidf("stop", "stop has %d strings; at most %d are allowed", len(p.Stop), maxStops)
	}
	for i, st := range p.Stop {
		if st == "" || len(st) > maxStopLen {
			return s, invalidf("stop", "stop[%d] must be 1 to %d bytes long, got %d", i, maxStopLen, len(st))
		}
	}
	s.stops = p.Stop
	s.req.IgnoreEOS = p.IgnoreEOS
	if err := o.Validate(); err != nil {
		return s, invalidf("", "invalid sampling settings: %v", err)
	}
	return s, nil
}

// rangeF checks an optional float field against [lo, hi].
func rangeF(name string, v *float64, lo, hi float64) (*float32, error) {
	if v == nil {
		return nil, nil
	}
	if math.IsNaN(*v) || *v < lo || *v > hi {
		return nil, invalidf(name, "%s must be between %g and %g, got %g", name, lo, hi, *v)
	}
	f := float32(*v)
	return &f, nil
}

// validate checks the chat-only fields.
func (r *ChatRequest) validate() error {
	if len(r.Messages) == 0 {
		return invalidf("messages", "messages must hold at least one message")
	}
	for i, m := range r.Messages {
		switch m.Role {
		case "system", "user", "assistant", "developer", "tool":
		case "":
			return invalidf(fmt.Sprintf("messages[%d].role", i), "messages[%d].role is required", i)
		default:
			return invalidf(fmt.Sprintf("messages[%d].role", i), "messages[%d].role must be system, developer, user, assistant or tool, got %q", i, m.Role)
		}
	}
	for k := range r.ChatTemplateKwargs {
		switch k {
		case "messages", "add_generation_prompt", "bos_token", "eos_token":
			return invalidf("chat_template_kwargs", "chat_template_kwargs may not set %q", k)
		}
	}
	if r.TopLogprobs != nil {
		if *r.TopLogprobs < 0 || *r.TopLogprobs > maxTopLogprobs {
			return invalidf("top_logprobs", "top_logprobs must be between 0 and %d, got %d", maxTopLogprobs, *r.TopLogprobs)
		}
		if !r.Logprobs {
			return invalidf("top_logprobs", "top_logprobs needs logprobs to be true")
		}
	}
	return nil
}

// validate checks the completions-only fields.
func (r *CompletionRequest) validate() error {
	switch {
	case len(r.Prompt) == 0:
		return invalidf("prompt", "prompt is required")
	case len(r.Prompt) > maxPrompts:
		return invalidf("prompt", "prompt holds %d prompts; at most %d are allowed", len(r.Prompt), maxPrompts)
	case r.Echo:
		return invalidf("echo", "echo is not supported")
	case r.Suffix != nil && *r.Suffix != "":
		return invalidf("suffix", "suffix is not supported")
	case r.Logprobs != nil && (*r.Logprobs < 0 || *r.Logprobs > maxTopLogprobs):
		return invalidf("logprobs", "logprobs must be between 0 and %d, got %d", maxTopLogprobs, *r.Logprobs)
	}
	for i, p := range r.Prompt {
		if p.Text == "" && len(p.IDs) == 0 {
			return invalidf("prompt", "prompt %d is empty", i)
		}
	}
	return nil
}

// Usage is OpenAI's token accounting.
type Usage struct {
	PromptTokens        int           `json:"prompt_tokens"`
	CompletionTokens    int           `json:"completion_tokens"`
	TotalTokens         int           `json:"total_tokens"`
	PromptTokensDetails *TokenDetails `json:"prompt_tokens_details,omitempty"`
}

// TokenDetails breaks prompt tokens down.
type TokenDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// ResponseHead opens every response object and stream chunk: its id, object
// kind, creation time and model. Its fields are promoted into the JSON of the
// types that embed it, so the wire shape is OpenAI's flat one.
type ResponseHead struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
}

// ChatCompletion is a non-streamed chat response.
type ChatCompletion struct {
	ResponseHead
	Choices []ChatChoice `json:"choices"`
	Usage   *Usage       `json:"usage"`
}

// ChatChoice is one choice of a ChatCompletion.
type ChatChoice struct {
	Index        int           `json:"index"`
	Message      ChatReply     `json:"message"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
	FinishReason string        `json:"finish_reason"`
}

// ChatReply is the assistant message of a choice.
type ChatReply struct {
	Role             string  `json:"role"`
	Content          string  `json:"content"`
	ReasoningContent *string `json:"reasoning_content,omitempty"`
}

// ChatLogprobs is a choice's logprobs.
type ChatLogprobs struct {
	Content []TokenLogprob `json:"content"`
}

// TokenLogprob is one token's log-probability and alternatives.
type TokenLogprob struct {
	Token       string       `json:"token"`
	Logprob     float32      `json:"logprob"`
	Bytes       []int        `json:"bytes"`
	TopLogprobs []TopLogprob `json:"top_logprobs"`
}

// TopLogprob is one alternative token.
type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// ChatChunk is one server-sent event of a streamed chat response.
type ChatChunk struct {
	ResponseHead
	Choices []ChatChunkChoice `json:"choices"`
	Usage   *Usage            `json:"usage,omitempty"`
}

// ChatChunkChoice is one choice's delta.
type ChatChunkChoice struct {
	Index        int           `json:"index"`
	Delta        ChatDelta     `json:"delta"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// ChatDelta is the text a chunk adds.
type ChatDelta struct {
	Role             string  `json:"role,omitempty"`
	Content          *string `json:"content,omitempty"`
	ReasoningContent *string `json:"reasoning_content,omitempty"`
}

// Completion is a /v1/completions response or stream chunk.
type Completion struct {
	ResponseHead
	Choices []CompletionChoice `json:"choices"`
	Usage   *Usage             `json:"usage,omitempty"`
}

// CompletionChoice is one choice of a Completion.
type CompletionChoice struct {
	Index        int                 `json:"index"`
	Text         string              `json:"text"`
	Logprobs     *CompletionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// CompletionLogprobs is the legacy completions logprobs shape.
type CompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// ModelCard is one entry of GET /v1/models.
type ModelCard struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// ModelList is the GET /v1/models response.
type ModelList struct {
	Object string      `json:"object"`
	Data   []ModelCard `json:"data"`
}
