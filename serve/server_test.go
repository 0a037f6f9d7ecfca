package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/internal/testutil"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

const chatURL, cmplURL = "/v1/chat/completions", "/v1/completions"

// Every bad input of the issue gets an OpenAI-style error with its status,
// and the server goes on serving.
func TestBadInputs(t *testing.T) {
	_, base := storiesServer(t, Options{MaxBodyBytes: 4 << 20})
	msgs := `"messages":[{"role":"user","content":"Once upon a time"}]`
	huge := `{"model":"stories260k",` + msgs + `,"pad":"` + strings.Repeat("x", 12<<20) + `"}`
	for _, tc := range []struct {
		name, path, body string
		status           int
		typ, msg         string
	}{
		{"malformed JSON", chatURL, `{"model": "stories260k", "messages": [`, 400, "invalid_request_error", "malformed JSON"},
		{"wrong type", chatURL, `{"model":"stories260k",` + msgs + `,"max_tokens":"ten"}`, 400, "invalid_request_error", "max_tokens: expected an integer, got string"},
		{"wrong messages type", chatURL, `{"model":"stories260k","messages":"hi"}`, 400, "invalid_request_error", "messages"},
		{"unknown model", chatURL, `{"model":"gpt-9",` + msgs + `}`, 404, "invalid_request_error", `"gpt-9" does not exist`},
		{"negative max_tokens", chatURL, `{"model":"stories260k",` + msgs + `,"max_tokens":-5}`, 400, "invalid_request_error", "at least 1, got -5"},
		{"huge max_tokens", chatURL, `{"model":"stories260k",` + msgs + `,"max_tokens":1000000}`, 400, "invalid_request_error", "max_tokens 1000000"},
		{"prompt over the context", cmplURL, `{"model":"stories260k","prompt":"` + strings.Repeat("Once upon a time ", 200) + `"}`, 400, "invalid_request_error", "context of 512 tokens"},
		{"token id outside the vocabulary", cmplURL, `{"model":"stories260k","prompt":[1,99999]}`, 400, "invalid_request_error", "99999"},
		{"bad temperature", chatURL, `{"model":"stories260k",` + msgs + `,"temperature":-1}`, 400, "invalid_request_error", "temperature"},
		{"bad top_p", cmplURL, `{"model":"stories260k","prompt":"x","top_p":7}`, 400, "invalid_request_error", "top_p"},
		{"bad penalty", cmplURL, `{"model":"stories260k","prompt":"x","frequency_penalty":9}`, 400, "invalid_request_error", "frequency_penalty"},
		{"12 MB body", chatURL, huge, 413, "invalid_request_error", "exceeds the limit of 4194304 bytes"},
		{"wrong method", "/v1/chat/completions", "", 405, "invalid_request_error", "GET"},
		{"no route", "/v1/nothing", `{}`, 404, "invalid_request_error", "no route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var status int
			var b []byte
			if tc.status == 405 {
				status, b = get(t, base+tc.path)
			} else {
				status, _, b = post(t, base+tc.path, tc.body)
			}
			assert.Equal(t, tc.status, status, "%s", b)
			e := apiErr(t, b)
			assert.Equal(t, tc.typ, e.Type)
			assert.Contains(t, e.Message, tc.msg)
		})
	}
	// Still serving.
	status, _, b := post(t, base+chatURL, `{"model":"stories260k",`+msgs+`,"max_tokens":4}`)
	require.Equal(t, 200, status, "%s", b)
}

func TestContextErrorNamesBothNumbers(t *testing.T) {
	_, base := storiesServer(t, Options{})
	status, _, b := post(t, base+cmplURL, `{"model":"stories260k","prompt":"Once upon a time","max_tokens":600}`)
	require.Equal(t, 400, status)
	e := apiErr(t, b)
	assert.Contains(t, e.Message, "prompt of 5 tokens + max_tokens 600")
	assert.Contains(t, e.Message, "context of 512 tokens")
	require.NotNil(t, e.Param)
	assert.Equal(t, "max_tokens", *e.Param)
}

func TestChatAndCompletion(t *testing.T) {
	_, base := storiesServer(t, Options{})
	status, hdr, b := post(t, base+chatURL, `{"model":"stories260k","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":12,"seed":1}`,
		"X-Request-Id", "my-req-1")
	require.Equal(t, 200, status, "%s", b)
	assert.Equal(t, "my-req-1", hdr.Get("X-Request-Id"))
	var cc ChatCompletion
	require.NoError(t, json.Unmarshal(b, &cc))
	assert.Equal(t, "chatcmpl-my-req-1", cc.ID)
	assert.Equal(t, "chat.completion", cc.Object)
	require.Len(t, cc.Choices, 1)
	assert.Equal(t, "assistant", cc.Choices[0].Message.Role)
	assert.NotEmpty(t, cc.Choices[0].Message.Content)
	assert.Equal(t, "length", cc.Choices[0].FinishReason)
	assert.Equal(t, Usage{PromptTokens: 5, CompletionTokens: 12, TotalTokens: 17, PromptTokensDetails: &TokenDetails{}}, *cc.Usage)

	// n choices, each a separate engine request; usage counts the prompt once.
	status, _, b = post(t, base+cmplURL, `{"model":"stories260k","prompt":"Once upon a time","max_tokens":6,"n":3,"temperature":1,"seed":5}`)
	require.Equal(t, 200, status, "%s", b)
	var c Completion
	require.NoError(t, json.Unmarshal(b, &c))
	require.Len(t, c.Choices, 3)
	for i, ch := range c.Choices {
		assert.Equal(t, i, ch.Index)
		assert.Equal(t, "length", *ch.FinishReason)
	}
	assert.Equal(t, 5, c.Usage.PromptTokens)
	assert.Equal(t, 18, c.Usage.CompletionTokens)

	// Without max_tokens the greedy story (it never samples EOS) runs
	// until the context is full: OpenAI clients see "length".
	status, _, b = post(t, base+cmplURL, `{"model":"stories260k","prompt":"Once upon a time","temperature":0}`)
	require.Equal(t, 200, status, "%s", b)
	require.NoError(t, json.Unmarshal(b, &c))
	assert.Equal(t, "length", *c.Choices[0].FinishReason)
	assert.Equal(t, 512-5, c.Usage.CompletionTokens)
}

// A stop string is matched across token boundaries and never emitted, in
// the streamed and the whole response alike.
func TestStopStrings(t *testing.T) {
	_, base := storiesServer(t, Options{})
	body := `{"model":"stories260k","prompt":"Once upon a time","max_tokens":40,"temperature":0}`
	status, _, b := post(t, base+cmplURL, body)
	require.Equal(t, 200, status)
	var full Completion
	require.NoError(t, json.Unmarshal(b, &full))
	text := full.Choices[0].Text
	// A stop string that spans tokens: the end of one word and the start of
	// the next, from the greedy text itself.
	i := strings.Index(text, " was ")
	require.Positive(t, i, text)
	stop := text[i+2 : i+6] // "as a" spans " was" and " a"
	for _, stream := range []bool{false, true} {
		req := fmt.Sprintf(`{"model":"stories260k","prompt":"Once upon a time","max_tokens":40,"temperature":0,"stop":["zzz",%q],"stream":%v}`, stop, stream)
		status, _, b := post(t, base+cmplURL, req)
		require.Equal(t, 200, status, "%s", b)
		got, finish := completionText(t, b, stream)
		assert.Equal(t, text[:i+2], got, "stream=%v", stream)
		assert.Equal(t, "stop", finish)
		assert.NotContains(t, got, stop)
	}
}

// completionText joins a completions response's text (streamed or not).
func completionText(t testing.TB, b []byte, stream bool) (text, finish string) {
	t.Helper()
	if !stream {
		var c Completion
		require.NoError(t, json.Unmarshal(b, &c))
		return c.Choices[0].Text, *c.Choices[0].FinishReason
	}
	var sb strings.Builder
	events := sseEvents(t, b)
	require.Equal(t, "[DONE]", events[len(events)-1])
	for _, e := range events[:len(events)-1] {
		var c Completion
		require.NoError(t, json.Unmarshal([]byte(e), &c), e)
		for _, ch := range c.Choices {
			sb.WriteString(ch.Text)
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	return sb.String(), finish
}

func TestStreamUsageAndLogprobs(t *testing.T) {
	_, base := storiesServer(t, Options{})
	status, hdr, b := post(t, base+chatURL, `{"model":"stories260k","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8,
		"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":3}`)
	require.Equal(t, 200, status, "%s", b)
	assert.Equal(t, "text/event-stream", hdr.Get("Content-Type"))
	events := sseEvents(t, b)
	require.Equal(t, "[DONE]", events[len(events)-1])
	var content strings.Builder
	var lps []TokenLogprob
	var usage *Usage
	finish := ""
	for i, e := range events[:len(events)-1] {
		var c ChatChunk
		require.NoError(t, json.Unmarshal([]byte(e), &c), e)
		assert.Equal(t, "chat.completion.chunk", c.Object)
		if i == 0 {
			assert.Equal(t, "assistant", c.Choices[0].Delta.Role)
		}
		if c.Usage != nil {
			usage = c.Usage
			assert.Empty(t, c.Choices, "the usage chunk has no choices")
			continue
		}
		ch := c.Choices[0]
		if ch.Delta.Content != nil {
			content.WriteString(*ch.Delta.Content)
		}
		if ch.Logprobs != nil {
			lps = append(lps, ch.Logprobs.Content...)
		}
		if ch.FinishReason != nil {
			finish = *ch.FinishReason
		}
	}
	require.NotNil(t, usage)
	assert.Equal(t, 8, usage.CompletionTokens)
	assert.Equal(t, 5, usage.PromptTokens)
	assert.Equal(t, "length", finish)
	require.Len(t, lps, 8)
	var joined strings.Builder
	for _, lp := range lps {
		assert.LessOrEqual(t, lp.Logprob, float32(0))
		assert.Len(t, lp.TopLogprobs, 3)
		assert.GreaterOrEqual(t, lp.TopLogprobs[0].Logprob, lp.TopLogprobs[2].Logprob)
		joined.WriteString(lp.Token)
	}
	assert.Equal(t, content.String(), joined.String(), "token texts concatenate to the reply")
}

// The thinking of a template that opens <think> goes to
// reasoning_content, the rest to content, however the tokens split
// "</think>".
func TestReasoningContent(t *testing.T) {
	tok := storiesTokenizer(t, `{% for m in messages %}{{ m.content }}{% endfor %}<think>
`)
	ids, err := tok.Encode("Let me think.</think>\n\nThe answer", false)
	require.NoError(t, err)
	gen := &fakeGen{ids: ids}
	_, base := testServer(t, Options{Models: []Source{{Name: "r1", Dir: "unused"}}, Open: fakeOpener(gen, tok)})
	body := `{"model":"r1","messages":[{"role":"user","content":"Hi"}]`
	status, _, b := post(t, base+chatURL, body+`}`)
	require.Equal(t, 200, status, "%s", b)
	var cc ChatCompletion
	require.NoError(t, json.Unmarshal(b, &cc))
	msg := cc.Choices[0].Message
	require.NotNil(t, msg.ReasoningContent)
	// " Let": the SentencePiece word start, decoded after the prompt.
	assert.Equal(t, " Let me think.", *msg.ReasoningContent)
	assert.Equal(t, "\n\nThe answer", msg.Content)

	status, _, b = post(t, base+chatURL, body+`,"stream":true}`)
	require.Equal(t, 200, status)
	var reasoning, content strings.Builder
	for _, e := range sseEvents(t, b) {
		if e == "[DONE]" {
			continue
		}
		var c ChatChunk
		require.NoError(t, json.Unmarshal([]byte(e), &c))
		for _, ch := range c.Choices {
			if ch.Delta.ReasoningContent != nil {
				reasoning.WriteString(*ch.Delta.ReasoningContent)
			}
			if ch.Delta.Content != nil {
				content.WriteString(*ch.Delta.Content)
			}
		}
	}
	assert.Equal(t, " Let me think.", reasoning.String())
	assert.Equal(t, "\n\nThe answer", content.String())
}

// A served name may look like a Hugging Face id.
func TestModelNameWithSlash(t *testing.T) {
	tok := storiesTokenizer(t, "")
	_, base := testServer(t, Options{Models: []Source{{Name: "deepseek-ai/tiny", Dir: "x"}}, Open: fakeOpener(&fakeGen{ids: []int{300}}, tok)})
	status, _, b := post(t, base+cmplURL, `{"model":"deepseek-ai/tiny","prompt":"Once"}`)
	assert.Equal(t, 200, status, "%s", b)
	status, b = get(t, base+"/v1/models/deepseek-ai/tiny")
	assert.Equal(t, 200, status, "%s", b)
	_, err := New(Options{Models: []Source{{Name: "a b", Dir: "x"}}, Open: fakeOpener(&fakeGen{}, tok)})
	assert.ErrorContains(t, err, "invalid model name")
}

func TestAPIKey(t *testing.T) {
	_, base := storiesServer(t, Options{APIKey: "sekret"})
	body := `{"model":"stories260k","prompt":"Once","max_tokens":2}`
	for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "sekret"}} {
		status, h, b := post(t, base+cmplURL, body, hdr...)
		assert.Equal(t, 401, status)
		assert.Equal(t, "authentication_error", apiErr(t, b).Type)
		assert.NotEmpty(t, h.Get("WWW-Authenticate"))
	}
	status, _, b := post(t, base+cmplURL, body, "Authorization", "Bearer sekret")
	assert.Equal(t, 200, status, "%s", b)
	status, _ = get(t, base+"/health")
	assert.Equal(t, 200, status, "/health stays open")
	status, _ = get(t, base+"/v1/models")
	assert.Equal(t, 401, status)
}

// A full queue answers 429 with Retry-After; the admitted requests finish.
func TestQueueFull429(t *testing.T) {
	tok := storiesTokenizer(t, "")
	gen := &fakeGen{ids: []int{300, 301}, block: make(chan struct{})}
	_, base := testServer(t, Options{Models: []Source{{Name: "m", Dir: "x"}}, Open: fakeOpener(gen, tok), MaxRunning: 1, MaxWaiting: 1})
	body := `{"model":"m","prompt":"Once"}`
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, _ := post(t, base+cmplURL, body)
			codes <- status
		}()
	}
	require.Eventually(t, func() bool { return gen.running.Load() == 2 }, 10*time.Second, 5*time.Millisecond)
	status, _, b := post(t, base+cmplURL, `{"model":"m","prompt":"Once","n":3}`)
	assert.Equal(t, 400, status, "more generations than the model ever takes: %s", b)
	status, hdr, b := post(t, base+cmplURL, body)
	assert.Equal(t, 429, status)
	assert.Equal(t, "1", hdr.Get("Retry-After"))
	assert.Equal(t, "rate_limit_error", apiErr(t, b).Type)
	close(gen.block)
	wg.Wait()
	close(codes)
	for c := range codes {
		assert.Equal(t, 200, c)
	}
}

// While the only model is still loading, requests get 503 and /ready too.
func TestNotReady503(t *testing.T) {
	tok := storiesTokenizer(t, "")
	release, entered := make(chan struct{}), make(chan struct{})
	open := func(ctx context.Context, src Source, i int) (*Replica, error) {
		close(entered)
		<-release
		return &Replica{Gen: &fakeGen{ids: []int{300}}, Tokenizer: tok, ContextLen: 512, VocabSize: 512}, nil
	}
	s, err := New(Options{Models: []Source{{Name: "m", Dir: "x"}}, Open: open, Logger: quietLog()})
	require.NoError(t, err)
	defer s.Close()
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock() // before Close, which waits for the load, on any failure
	ts := httpServer(t, s.Handler())
	go func() { _ = s.Preload(context.Background()) }()
	// /ready is 503 before Preload starts too, when a request would load
	// the model itself and wait for it: post only once Preload's load runs.
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("Preload did not start loading the model")
	}
	require.Eventually(t, func() bool {
		status, _ := get(t, ts+"/ready")
		return status == 503
	}, 5*time.Second, 5*time.Millisecond)
	status, hdr, b := post(t, ts+cmplURL, `{"model":"m","prompt":"Once"}`)
	assert.Equal(t, 503, status, "%s", b)
	assert.NotEmpty(t, hdr.Get("Retry-After"))
	assert.Contains(t, apiErr(t, b).Message, "loading")
	unblock()
	require.Eventually(t, func() bool {
		status, _ := get(t, ts+"/ready")
		return status == 200
	}, 5*time.Second, 5*time.Millisecond)
	status, _, b = post(t, ts+cmplURL, `{"model":"m","prompt":"Once"}`)
	assert.Equal(t, 200, status, "%s", b)
}

// A panic while serving becomes a 500 that names the request id; the
// server keeps serving.
func TestPanicRecovered(t *testing.T) {
	tok := storiesTokenizer(t, "")
	gen := &fakeGen{ids: []int{300}, panicMsg: "boom"}
	var logs testutil.SyncBuffer
	_, base := testServer(t, Options{Models: []Source{{Name: "m", Dir: "x"}}, Open: fakeOpener(gen, tok), Logger: jsonLog(&logs)})
	status, _, b := post(t, base+cmplURL, `{"model":"m","prompt":"Once"}`, "X-Request-Id", "req-77")
	assert.Equal(t, 500, status)
	e := apiErr(t, b)
	assert.Equal(t, "server_error", e.Type)
	assert.Contains(t, e.Message, "req-77")
	assert.NotContains(t, e.Message, "boom", "the panic stays in the log")
	assert.Contains(t, logs.String(), `"request_id":"req-77"`)
	assert.Contains(t, logs.String(), "boom")
	status, _ = get(t, base+"/health")
	assert.Equal(t, 200, status)
}

func TestRequestTimeout(t *testing.T) {
	tok := storiesTokenizer(t, "")
	gen := &fakeGen{ids: []int{300, 301, 302}, delay: time.Second}
	_, base := testServer(t, Options{Models: []Source{{Name: "m", Dir: "x"}}, Open: fakeOpener(gen, tok), RequestTimeout: 100 * time.Millisecond})
	status, _, b := post(t, base+cmplURL, `{"model":"m","prompt":"Once"}`)
	assert.Equal(t, 504, status)
	assert.Contains(t, apiErr(t, b).Message, "timeout of 100ms")
}

// Clients that disconnect mid-stream cancel their generations: the engine
// frees the KV blocks and the gauges return to 0. 32 streams of up to 500
// tokens keep the engine busy for far longer (about half a second here)
// than reading their first events and hanging up takes.
func TestDisconnectFreesKV(t *testing.T) {
	_, base := storiesServer(t, Options{})
	const streams = 32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bodies := make([]io.ReadCloser, streams)
	for i := range bodies {
		req, err := http.NewRequestWithContext(ctx, "POST", base+cmplURL, strings.NewReader(
			`{"model":"stories260k","prompt":"Once upon a time","max_tokens":500,"ignore_eos":true,"stream":true}`))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		bodies[i] = resp.Body
	}
	for _, body := range bodies {
		line, err := bufio.NewReader(body).ReadString('\n')
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(line, "data: "), line)
	}
	assert.Positive(t, metricValue(t, base, "deepseek_kv_cache_usage_ratio", ""), "live sequences hold KV blocks")
	assert.Positive(t, metricValue(t, base, "deepseek_requests_running", ""))
	cancel()
	for _, body := range bodies {
		body.Close()
	}
	require.Eventually(t, func() bool {
		return metricValue(t, base, "deepseek_requests_running", "") == 0 &&
			metricValue(t, base, "deepseek_requests_total", `finish_reason="cancelled"`)+
				max(0, metricValue(t, base, "deepseek_requests_total", `finish_reason="length"`)) == streams
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 0.0, metricValue(t, base, "deepseek_kv_cache_usage_ratio", ""))
	assert.Equal(t, 0.0, metricValue(t, base, "deepseek_requests_waiting", ""))
	assert.Positive(t, metricValue(t, base, "deepseek_requests_total", `finish_reason="cancelled"`))
	assert.Less(t, metricValue(t, base, "deepseek_generation_tokens_total", ""), float64(streams*500))
}

// A client that sends its headers slowly is cut off, and one that stalls
// its body gets 408; neither stops others being served.
func TestSlowLoris(t *testing.T) {
	_, base := storiesServer(t, Options{ReadHeaderTimeout: 300 * time.Millisecond, BodyTimeout: 300 * time.Millisecond})
	addr := strings.TrimPrefix(base, "http://")
	slow, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer slow.Close()
	_, err = io.WriteString(slow, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
	require.NoError(t, err)
	status, _, _ := post(t, base+cmplURL, `{"model":"stories260k","prompt":"Once","max_tokens":2}`)
	assert.Equal(t, 200, status, "served while a slow client holds a connection")
	require.NoError(t, slow.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadAll(slow) // the server closes the connection
	require.NoError(t, err)

	stall, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer stall.Close()
	_, err = io.WriteString(stall, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	require.NoError(t, err)
	require.NoError(t, stall.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(stall), nil)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	assert.Equal(t, 408, resp.StatusCode, "%s", b)
}

// 500 clients connecting at once each get a completion or a 429.
func TestManyClientsAtOnce(t *testing.T) {
	_, base := storiesServer(t, Options{MaxRunning: 64, MaxWaiting: 128})
	const clients = 500
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	start := make(chan struct{})
	codes := make(chan int, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Post(base+cmplURL, "application/json",
				strings.NewReader(`{"model":"stories260k","prompt":"Once upon a time","max_tokens":4}`))
			if err != nil {
				codes <- -1
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 429 && !strings.Contains(string(b), "rate_limit_error") {
				codes <- -2
				return
			}
			codes <- resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	t.Logf("status counts: %v", count)
	assert.Equal(t, clients, count[200]+count[429], "every client gets 200 or 429: %v", count)
	assert.Positive(t, count[200])
	status, _, _ := post(t, base+cmplURL, `{"model":"stories260k","prompt":"Once","max_tokens":2}`)
	assert.Equal(t, 200, status)
}

// Graceful shutdown: a stream in flight when the server is told to stop
// completes; the listener no longer accepts.
func TestGracefulShutdown(t *testing.T) {
	tok := storiesTokenizer(t, "")
	gen := &fakeGen{ids: []int{300, 301, 302, 303, 304}, delay: 50 * time.Millisecond}
	s, err := New(Options{Models: []Source{{Name: "m", Dir: "x"}}, Open: fakeOpener(gen, tok), Logger: quietLog()})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	require.NoError(t, s.Preload(ctx))
	resp, err := http.Post(base+cmplURL, "application/json", strings.NewReader(`{"model":"m","prompt":"Once","stream":true}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Eventually(t, func() bool { return gen.running.Load() == 1 }, 5*time.Second, time.Millisecond)
	cancel() // SIGTERM
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text, finish := completionText(t, b, true)
	assert.Equal(t, "stop", finish)
	assert.Equal(t, tok.Decode([]int{300, 301, 302, 303, 304}), strings.TrimSpace(text))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	assert.True(t, gen.closed.Load(), "models are unloaded")
	_, err = net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	assert.Error(t, err, "no longer accepting")
}

// Models from --models-dir load on first use and the least recently used
// idle one is evicted when the budget is short.
func TestModelsDirLRU(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", "b", "c"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, name), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name, "config.json"), []byte(`{}`), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name, "model.safetensors"), make([]byte, 1000), 0o644))
	}
	tok := storiesTokenizer(t, "")
	var mu sync.Mutex
	gens := map[string]*fakeGen{}
	open := func(ctx context.Context, src Source, i int) (*Replica, error) {
		g := &fakeGen{ids: []int{300}}
		mu.Lock()
		gens[src.Name] = g
		mu.Unlock()
		return &Replica{Gen: g, Tokenizer: tok, ContextLen: 512, VocabSize: 512}, nil
	}
	_, base := testServer(t, Options{ModelsDir: dir, MemoryBudget: 2500, Open: open})
	status, b := get(t, base+"/v1/models")
	require.Equal(t, 200, status)
	var ml ModelList
	require.NoError(t, json.Unmarshal(b, &ml))
	require.Len(t, ml.Data, 3)
	assert.Equal(t, []string{"a", "b", "c"}, []string{ml.Data[0].ID, ml.Data[1].ID, ml.Data[2].ID})
	status, _ = get(t, base+"/ready")
	assert.Equal(t, 503, status, "nothing loaded yet")

	use := func(name string) {
		t.Helper()
		status, _, b := post(t, base+cmplURL, `{"model":"`+name+`","prompt":"Once"}`)
		require.Equal(t, 200, status, "%s", b)
	}
	use("a")
	use("b")
	use("a") // b is now the least recently used
	use("c")
	mu.Lock()
	defer mu.Unlock()
	assert.True(t, gens["b"].closed.Load(), "b evicted")
	assert.False(t, gens["a"].closed.Load())
	assert.False(t, gens["c"].closed.Load())
	status, _, b = post(t, base+cmplURL, `{"model":"../a","prompt":"Once"}`)
	assert.Equal(t, 404, status, "%s", b)
}

// Replicas are balanced by least outstanding requests.
func TestReplicasLeastOutstanding(t *testing.T) {
	tok := storiesTokenizer(t, "")
	var gens []*fakeGen
	open := func(ctx context.Context, src Source, i int) (*Replica, error) {
		g := &fakeGen{ids: []int{300}}
		gens = append(gens, g)
		return &Replica{Gen: g, Tokenizer: tok, ContextLen: 512, VocabSize: 512}, nil
	}
	r, err := newRegistry(&Options{Models: []Source{{Name: "m", Dir: "x"}}, Replicas: 3, Open: open, MaxRunning: 10}, quietLog())
	require.NoError(t, err)
	require.NoError(t, r.preload(context.Background()))
	require.Len(t, gens, 3)
	l1, err := r.acquire(context.Background(), "m", 2) // two replicas busy
	require.NoError(t, err)
	assert.NotSame(t, l1.reps[0], l1.reps[1])
	l2, err := r.acquire(context.Background(), "m", 1)
	require.NoError(t, err)
	assert.False(t, holds(l1, l2.reps[0]), "the idle replica is picked")
	l1.release()
	l3, err := r.acquire(context.Background(), "m", 2)
	require.NoError(t, err)
	assert.False(t, holds(l3, l2.reps[0]), "the busy replica is avoided")
	l2.release()
	l3.release()
	for _, rep := range l3.e.reps {
		assert.Zero(t, rep.outstanding)
	}
}

// holds reports whether l holds the very replica rep.
func holds(l *lease, rep *replicaSlot) bool {
	for _, r := range l.reps {
		if r == rep {
			return true
		}
	}
	return false
}

func TestMetricsExposed(t *testing.T) {
	_, base := storiesServer(t, Options{})
	for range 3 {
		status, _, _ := post(t, base+cmplURL, `{"model":"stories260k","prompt":"Once upon a time","max_tokens":5}`)
		require.Equal(t, 200, status)
	}
	_, b := get(t, base+"/metrics")
	text := string(b)
	for _, name := range []string{"deepseek_requests_running", "deepseek_requests_waiting", "deepseek_kv_cache_usage_ratio",
		"deepseek_time_to_first_token_seconds_bucket", "deepseek_time_per_output_token_seconds_bucket", "deepseek_e2e_request_latency_seconds_bucket",
		"deepseek_request_queue_time_seconds_bucket", "deepseek_prompt_tokens_total", "deepseek_generation_tokens_total",
		"deepseek_prefix_cache_hits_total", "deepseek_prefix_cache_queries_total", "process_resident_memory_bytes", "go_goroutines"} {
		assert.Contains(t, text, name)
	}
	assert.Equal(t, 3.0, metricValue(t, base, "deepseek_requests_total", `finish_reason="length"`))
	assert.Equal(t, 15.0, metricValue(t, base, "deepseek_generation_tokens_total", `model="stories260k"`))
	assert.Equal(t, 15.0, metricValue(t, base, "deepseek_prompt_tokens_total", `model="stories260k"`))
	assert.Equal(t, 3.0, metricValue(t, base, "deepseek_time_to_first_token_seconds_count", `model="stories260k"`))
}

// The engine's own validation errors reach the client as 400s, a closed
// generator as 503.
func TestGeneratorErrors(t *testing.T) {
	tok := storiesTokenizer(t, "")
	for _, tc := range []struct {
		err    error
		status int
		typ    string
	}{
		{fmt.Errorf("%w: top_logprobs must be in [0, 20]", engine.ErrInvalid), 400, "invalid_request_error"},
		{engine.ErrClosed, 503, "server_error"},
		{errors.New("device lost"), 500, "server_error"},
	} {
		gen := &fakeGen{ids: []int{300}, submitErr: tc.err}
		_, base := testServer(t, Options{Models: []Source{{Name: "m", Dir: "x"}}, Open: fakeOpener(gen, tok)})
		status, _, b := post(t, base+cmplURL, `{"model":"m","prompt":"Once"}`, "X-Request-Id", "r1")
		assert.Equal(t, tc.status, status, "%v: %s", tc.err, b)
		e := apiErr(t, b)
		assert.Equal(t, tc.typ, e.Type)
		if tc.status == 500 {
			assert.NotContains(t, e.Message, "device lost", "internal details stay in the log")
			assert.Contains(t, e.Message, "r1")
		}
	}
}

// With the memory budget held by a busy model, loading another answers
// 503 with Retry-After instead of evicting work in flight.
func TestMemoryBudgetBusy(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", "b"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, name), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name, "config.json"), []byte(`{}`), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name, "model.safetensors"), make([]byte, 1000), 0o644))
	}
	tok := storiesTokenizer(t, "")
	gen := &fakeGen{ids: []int{300}, block: make(chan struct{})}
	_, base := testServer(t, Options{ModelsDir: dir, MemoryBudget: 1500, Open: fakeOpener(gen, tok)})
	done := make(chan int, 1)
	go func() {
		status, _, _ := post(t, base+cmplURL, `{"model":"a","prompt":"Once"}`)
		done <- status
	}()
	require.Eventually(t, func() bool { return gen.running.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
	status, hdr, b := post(t, base+cmplURL, `{"model":"b","prompt":"Once"}`)
	assert.Equal(t, 503, status, "%s", b)
	assert.Equal(t, "5", hdr.Get("Retry-After"))
	assert.Contains(t, apiErr(t, b).Message, "memory budget")
	close(gen.block)
	assert.Equal(t, 200, <-done)
	status, b = get(t, base+"/v1/models/a")
	assert.Equal(t, 200, status)
	var card ModelCard
	require.NoError(t, json.Unmarshal(b, &card))
	assert.Equal(t, "a", card.ID)
	status, b = get(t, base+"/v1/models/zzz")
	assert.Equal(t, 404, status)
	assert.Equal(t, "model_not_found", *apiErr(t, b).Code)
}

// With a byte-level BPE tokenizer (Qwen's, where "</think>" is one added
// token) and DeepSeek's R1 chat templates, the reasoning and the answer are
// split when the prompt ends inside "<think>\n": always with
// R1-Distill-Llama's template, with R1-Distill-Qwen-32B's newer one only
// when chat_template_kwargs asks for enable_thinking.
func TestReasoningContentR1Templates(t *testing.T) {
	dir := filepath.Join("..", "testdata", "tokenizers", "qwen2-r1-distill")
	tj, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	require.NoError(t, err)
	cj, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	require.NoError(t, err)
	reply := "2 and 2 make 4.\n</think>\n\nThe answer is **4**."
	for _, tc := range []struct {
		template, kwargs string
		reasoning        *string
		content          string
	}{
		{"deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", "", ptr("2 and 2 make 4.\n"), "\n\nThe answer is **4**."},
		{"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", `,"chat_template_kwargs":{"enable_thinking":true}`, ptr("2 and 2 make 4.\n"), "\n\nThe answer is **4**."},
		{"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "", nil, reply}, // the template closed the block itself
	} {
		t.Run(tc.template+tc.kwargs, func(t *testing.T) {
			tmpl, err := os.ReadFile(filepath.Join("..", "testdata", "chat-templates", tc.template))
			require.NoError(t, err)
			var cfg map[string]any
			require.NoError(t, json.Unmarshal(cj, &cfg))
			cfg["chat_template"] = string(tmpl)
			c, err := json.Marshal(cfg)
			require.NoError(t, err)
			tok, err := tokenizer.FromBytes(tj, c)
			require.NoError(t, err)
			ids, err := tok.Encode(reply, false)
			require.NoError(t, err)
			gen := &fakeGen{ids: ids}
			open := func(ctx context.Context, src Source, i int) (*Replica, error) {
				return &Replica{Gen: gen, Tokenizer: tok, ContextLen: 4096, VocabSize: 152064}, nil
			}
			_, base := testServer(t, Options{Models: []Source{{Name: "r1", Dir: "x"}}, Open: open})
			status, _, b := post(t, base+chatURL, `{"model":"r1","messages":[{"role":"user","content":"What is 2+2?"}]`+tc.kwargs+`}`)
			require.Equal(t, 200, status, "%s", b)
			var cc ChatCompletion
			require.NoError(t, json.Unmarshal(b, &cc))
			msg := cc.Choices[0].Message
			assert.Equal(t, tc.reasoning, msg.ReasoningContent)
			assert.Equal(t, tc.content, msg.Content)
			gen.mu.Lock()
			prompt := tok.Decode(gen.reqs[0].Prompt)
			gen.mu.Unlock()
			assert.Equal(t, tc.reasoning != nil, strings.HasSuffix(prompt, "<think>\n"), "prompt %q", prompt)
		})
	}
}

func ptr[T any](v T) *T { return &v }
