package serving

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Error kinds of failed requests (Result.Errors keys); an HTTP error is
// "http NNN".
const (
	ErrCanceled   = "canceled"   // the benchmark was interrupted
	ErrTimeout    = "timeout"    // Options.Timeout or a network timeout
	ErrConnect    = "connection" // dial, reset, refused
	ErrStreamRead = "stream read"
	ErrBadChunk   = "bad chunk"    // a data line that is not a JSON chunk
	ErrServer     = "stream error" // an {"error": ...} chunk
)

// RequestOutput is what one request measured.
type RequestOutput struct {
	Success bool   `json:"success"`
	ErrKind string `json:"error_kind,omitempty"`
	Err     string `json:"error,omitempty"`
	// Sent is the send time as an offset from the run's start.
	Sent time.Duration `json:"sent_ns"`
	// TTFT is send → first token chunk; HasTTFT is false when the stream
	// carried no token (the model stopped at once).
	TTFT    time.Duration `json:"ttft_ns"`
	HasTTFT bool          `json:"has_ttft"`
	// ITL holds the gaps between consecutive token chunks.
	ITL []time.Duration `json:"itl_ns,omitempty"`
	// Latency is send → last token chunk (send → end of stream without
	// tokens).
	Latency time.Duration `json:"e2el_ns"`
	// PromptTokens and OutputTokens come from the stream's usage chunk;
	// without one (Usage false) they fall back to Prompt.InputLen and the
	// number of token chunks.
	PromptTokens int  `json:"prompt_tokens"`
	OutputTokens int  `json:"output_tokens"`
	Usage        bool `json:"usage"`
	Chunks       int  `json:"chunks"`
}

// chunk is one streamed completion or chat.completion chunk; fields of
// both shapes, plus the error object some servers send mid-stream.
type chunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string          `json:"content"`
			ReasoningContent string          `json:"reasoning_content"`
			Reasoning        string          `json:"reasoning"`
			ToolCalls        json.RawMessage `json:"tool_calls"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// hasToken reports whether the chunk carries generated output; a chat
// stream's role-only first delta and empty keep-alive chunks do not count.
func (c *chunk) hasToken() bool {
	for _, ch := range c.Choices {
		d := ch.Delta
		if ch.Text != "" || d.Content != "" || d.ReasoningContent != "" || d.Reasoning != "" ||
			(len(d.ToolCalls) > 0 && string(d.ToolCalls) != "null") {
			return true
		}
	}
	return false
}

// body builds the JSON request body for p.
func (o *Options) body(p Prompt) ([]byte, error) {
	b := map[string]any{
		"model":          o.Model,
		"stream":         true,
		"stream_options": map[string]any{"include_usage": true},
		"temperature":    o.Temperature,
	}
	if p.MaxTokens > 0 {
		b["max_tokens"] = p.MaxTokens
	}
	if o.IgnoreEOS {
		b["ignore_eos"] = true
	}
	switch {
	case o.isChat():
		b["messages"] = []map[string]string{{"role": "user", "content": p.Text}}
	case len(p.IDs) > 0:
		b["prompt"] = p.IDs
	default:
		b["prompt"] = p.Text
	}
	return json.Marshal(b)
}

// send runs one streamed request and measures it.
func (o *Options) send(ctx context.Context, client *http.Client, url string, p Prompt, start time.Time) (out RequestOutput) {
	body, err := o.body(p)
	if err != nil {
		return RequestOutput{ErrKind: ErrBadChunk, Err: fmt.Sprintf("encoding the request: %v", err)}
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return RequestOutput{ErrKind: ErrConnect, Err: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.APIKey)
	}
	st := time.Now()
	out.Sent = st.Sub(start)
	fail := func(kind string, err error) RequestOutput {
		out.Success, out.ErrKind, out.Err = false, kind, err.Error()
		return out
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail(classify(ctx, err), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fail(fmt.Sprintf("http %d", resp.StatusCode), fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg))))
	}
	last := st
	// handle processes one SSE line; done is set by "data: [DONE]".
	handle := func(line []byte) (done bool, kind string, err error) {
		data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data:"))
		if !ok { // blank separators, comments (": ping"), event:/id: fields
			return false, "", nil
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			return true, "", nil
		}
		now := time.Now()
		var c chunk
		if err := json.Unmarshal(data, &c); err != nil {
			return false, ErrBadChunk, fmt.Errorf("chunk %q: %w", truncate(string(data), 120), err)
		}
		if c.Error != nil {
			return false, ErrServer, errors.New(c.Error.Message)
		}
		if c.hasToken() {
			if out.Chunks == 0 {
				out.TTFT, out.HasTTFT = now.Sub(st), true
			} else {
				out.ITL = append(out.ITL, now.Sub(last))
			}
			last = now
			out.Chunks++
		}
		if c.Usage != nil {
			out.Usage = true
			out.PromptTokens, out.OutputTokens = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
		return false, "", nil
	}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, rerr := r.ReadBytes('\n')
		if len(line) > 0 {
			done, kind, err := handle(line)
			if err != nil {
				return fail(kind, err)
			}
			if done {
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fail(streamKind(ctx, rerr), rerr)
		}
	}
	if out.Chunks == 0 {
		last = time.Now()
	}
	out.Latency = last.Sub(st)
	if !out.Usage {
		out.PromptTokens, out.OutputTokens = p.InputLen, out.Chunks
	}
	out.Success = true
	return out
}

// classify names the kind of a failed client.Do.
func classify(ctx context.Context, err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return ErrCanceled
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrTimeout
	}
	return ErrConnect
}

func streamKind(ctx context.Context, err error) string {
	if k := classify(ctx, err); k != ErrConnect {
		return k
	}
	return ErrStreamRead
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// FirstModel asks the server's /v1/models for the id of its first model
// (what vLLM's bench does when --model is not given).
func FirstModel(ctx context.Context, client *http.Client, baseURL, apiKey string) (string, error) {
	if client == nil {
		client = http.DefaultClient
	}
	url := strings.TrimRight(baseURL, "/") + "/v1/models"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("serving: %w", err)
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("serving: listing models: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("serving: GET %s: %s", url, resp.Status)
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&list); err != nil {
		return "", fmt.Errorf("serving: GET %s: %w", url, err)
	}
	if len(list.Data) == 0 || list.Data[0].ID == "" {
		return "", fmt.Errorf("serving: GET %s lists no model; pass --model", url)
	}
	return list.Data[0].ID, nil
}
