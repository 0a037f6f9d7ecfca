package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stub is a fake OpenAI-compatible streaming server with known delays:
// the first token after TTFT, then one chunk every ITL.
type stub struct {
	TTFT, ITL time.Duration
	Tokens    int
	NoUsage   bool
	RoleFirst bool // chat: a role-only delta before the first token
	Status    int  // non-200: fail with it
	BadChunk  bool // send a malformed data line after the first token

	mu          sync.Mutex
	bodies      []map[string]any
	inFlight    atomic.Int32
	maxInFlight atomic.Int32
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxInFlight.Load()
		if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.bodies = append(s.bodies, body)
	s.mu.Unlock()
	if s.Status != 0 {
		http.Error(w, `{"error":{"message":"busy"}}`, s.Status)
		return
	}
	chat := strings.HasSuffix(r.URL.Path, "/chat/completions")
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
		fl.Flush()
	}
	tok := func(i int) map[string]any {
		if chat {
			return map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": fmt.Sprintf("t%d", i)}}}}
		}
		return map[string]any{"choices": []any{map[string]any{"index": 0, "text": fmt.Sprintf("t%d", i)}}}
	}
	fmt.Fprint(w, ": keep-alive comment\n\n")
	if chat && s.RoleFirst {
		send(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}}}})
	}
	// Absolute deadlines, so that sleep overshoot does not accumulate.
	t0 := time.Now()
	for i := range s.Tokens {
		time.Sleep(time.Until(t0.Add(s.TTFT + time.Duration(i)*s.ITL)))
		send(tok(i))
		if s.BadChunk {
			fmt.Fprint(w, "data: {not json\n\n")
			fl.Flush()
			return
		}
	}
	// The final chunk with finish_reason carries no text, as many servers do.
	send(map[string]any{"choices": []any{map[string]any{"index": 0, "text": "", "finish_reason": "length"}}})
	if !s.NoUsage {
		send(map[string]any{"choices": []any{}, "usage": map[string]any{"prompt_tokens": 7, "completion_tokens": s.Tokens}})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func start(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h) // listens on 127.0.0.1:0
	t.Cleanup(srv.Close)
	return srv.URL
}

func prompts(n, maxTokens int) []Prompt {
	ps := make([]Prompt, n)
	for i := range ps {
		ps[i] = Prompt{Text: "hello", MaxTokens: maxTokens, InputLen: 1}
	}
	return ps
}

// TestKnownDelays: the benchmark reports the stub's delays within 5%.
func TestKnownDelays(t *testing.T) {
	for _, tc := range []struct {
		name, endpoint string
		roleFirst      bool
	}{
		{"completions", "completions", false},
		{"chat with role delta", "chat", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &stub{TTFT: 200 * time.Millisecond, ITL: 50 * time.Millisecond, Tokens: 6, RoleFirst: tc.roleFirst}
			url := start(t, s)
			res, err := Run(context.Background(), Options{URL: url, Endpoint: tc.endpoint, Model: "m",
				Prompts: prompts(8, 6), RequestRate: math.Inf(1), MaxConcurrency: 4})
			require.NoError(t, err)
			require.Equal(t, 8, res.Completed, "errors: %v", res.Errors)
			assert.Zero(t, res.Failed)
			assert.Zero(t, res.NoUsage)
			assert.Equal(t, 8*6, res.TotalOutputTokens)
			assert.Equal(t, 8*7, res.TotalInputTokens)
			near := func(what string, got, want float64) {
				assert.InDelta(t, want, got, 0.05*want, "%s: got %.2f ms, want %.2f ms", what, got, want)
			}
			near("median TTFT", res.TTFT.Median, 200)
			near("median ITL", res.ITL.Median, 50)
			near("median TPOT", res.TPOT.Median, 50)
			near("median E2EL", res.E2EL.Median, 450)
			assert.Equal(t, 8*5, res.ITL.N, "5 gaps per 6-token stream")
			// Two waves of 4 concurrent requests of ~450 ms each.
			assert.InDelta(t, 0.9, res.DurationS, 0.15)
			assert.LessOrEqual(t, s.maxInFlight.Load(), int32(4))
		})
	}
}

func TestRequestBody(t *testing.T) {
	s := &stub{Tokens: 1}
	url := start(t, s)
	ps := []Prompt{{IDs: []int{5, 6, 7}, MaxTokens: 3}, {Text: "hi", MaxTokens: 2}}
	_, err := Run(context.Background(), Options{URL: url + "/", Model: "tiny", Prompts: ps,
		RequestRate: math.Inf(1), MaxConcurrency: 1, IgnoreEOS: true})
	require.NoError(t, err)
	require.Len(t, s.bodies, 2)
	if _, ok := s.bodies[0]["prompt"].(string); ok { // the two race for the one slot
		s.bodies[0], s.bodies[1] = s.bodies[1], s.bodies[0]
	}
	b := s.bodies[0]
	assert.Equal(t, "tiny", b["model"])
	assert.Equal(t, true, b["stream"])
	assert.Equal(t, map[string]any{"include_usage": true}, b["stream_options"])
	assert.Equal(t, true, b["ignore_eos"])
	assert.Equal(t, []any{5.0, 6.0, 7.0}, b["prompt"])
	assert.Equal(t, 3.0, b["max_tokens"])
	assert.Equal(t, "hi", s.bodies[1]["prompt"])

	s2 := &stub{Tokens: 1}
	url2 := start(t, s2)
	_, err = Run(context.Background(), Options{URL: url2, Endpoint: "chat", Model: "tiny", Prompts: prompts(1, 4), RequestRate: 1})
	require.NoError(t, err)
	require.Len(t, s2.bodies, 1)
	assert.Equal(t, []any{map[string]any{"role": "user", "content": "hello"}}, s2.bodies[0]["messages"])
	assert.NotContains(t, s2.bodies[0], "ignore_eos")
}

func TestErrorsByKind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stub    *stub
		timeout time.Duration
		kind    string
	}{
		{"http 503", &stub{Status: http.StatusServiceUnavailable}, 0, "http 503"},
		{"http 429", &stub{Status: http.StatusTooManyRequests}, 0, "http 429"},
		{"bad chunk", &stub{Tokens: 3, BadChunk: true}, 0, ErrBadChunk},
		{"timeout", &stub{Tokens: 2, TTFT: time.Second}, 50 * time.Millisecond, ErrTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := start(t, tc.stub)
			res, err := Run(context.Background(), Options{URL: url, Model: "m", Prompts: prompts(3, 2),
				RequestRate: math.Inf(1), Timeout: tc.timeout})
			require.NoError(t, err)
			assert.Equal(t, 0, res.Completed)
			assert.Equal(t, 3, res.Failed)
			assert.Equal(t, map[string]int{tc.kind: 3}, res.Errors)
			assert.Zero(t, res.TTFT.N)
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close() // nothing listens there now
		res, err := Run(context.Background(), Options{URL: url, Model: "m", Prompts: prompts(2, 2), RequestRate: math.Inf(1)})
		require.NoError(t, err)
		assert.Equal(t, map[string]int{ErrConnect: 2}, res.Errors)
	})
}

func TestNoUsageFallsBackToChunks(t *testing.T) {
	url := start(t, &stub{Tokens: 4, NoUsage: true})
	res, err := Run(context.Background(), Options{URL: url, Model: "m", Prompts: prompts(2, 4), RequestRate: math.Inf(1)})
	require.NoError(t, err)
	assert.Equal(t, 2, res.NoUsage)
	assert.Equal(t, 8, res.TotalOutputTokens)
	assert.Equal(t, 2, res.TotalInputTokens, "InputLen of each prompt")
}

func TestCancelReturnsPartialResult(t *testing.T) {
	url := start(t, &stub{Tokens: 1})
	ctx, cancel := context.WithCancel(context.Background())
	var prog bytes.Buffer
	go func() { time.Sleep(150 * time.Millisecond); cancel() }()
	// At 5 req/s the 50 requests take ~10 s; the cancel lands after ~1.
	res, err := Run(ctx, Options{URL: url, Model: "m", Prompts: prompts(50, 1), RequestRate: 5, Progress: &prog})
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, res)
	assert.Equal(t, 50, res.Completed+res.Failed)
	assert.Greater(t, res.Errors[ErrCanceled], 40)
	assert.GreaterOrEqual(t, res.Completed, 1)
	assert.Contains(t, prog.String(), "/50 ok ")
}

func TestArrivalsPoisson(t *testing.T) {
	const n, rate = 4000, 8.0
	a := Arrivals(n, rate, 42)
	assert.Zero(t, a[0])
	mean := a[n-1].Seconds() / (n - 1)
	assert.InDelta(t, 1/rate, mean, 0.05/rate, "mean gap")
	// Exponential gaps: the standard deviation equals the mean.
	var sq float64
	for i := 1; i < n; i++ {
		g := (a[i] - a[i-1]).Seconds() - mean
		sq += g * g
	}
	assert.InDelta(t, mean, math.Sqrt(sq/(n-1)), 0.1*mean, "gap std")
	assert.Equal(t, a, Arrivals(n, rate, 42), "deterministic for a seed")
	assert.NotEqual(t, a, Arrivals(n, rate, 43))
	assert.Equal(t, make([]time.Duration, 5), Arrivals(5, math.Inf(1), 1))
}

func TestSummarize(t *testing.T) {
	msd := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	outs := []RequestOutput{
		// TPOT (100-10)/(10-1) = 10 ms.
		{Success: true, Usage: true, HasTTFT: true, TTFT: msd(10), Latency: msd(100), PromptTokens: 5, OutputTokens: 10,
			ITL: []time.Duration{msd(5), msd(15)}},
		// TPOT (220-20)/(5-1) = 50 ms.
		{Success: true, Usage: true, HasTTFT: true, TTFT: msd(20), Latency: msd(220), PromptTokens: 5, OutputTokens: 5,
			ITL: []time.Duration{msd(25)}},
		// One token: no TPOT.
		{Success: true, Usage: true, HasTTFT: true, TTFT: msd(30), Latency: msd(30), PromptTokens: 5, OutputTokens: 1},
		{ErrKind: "http 500"}, {ErrKind: "http 500"}, {ErrKind: ErrTimeout},
	}
	res := Summarize(outs, 2*time.Second, SLO{TTFT: msd(25), TPOT: msd(20)})
	assert.Equal(t, 3, res.Completed)
	assert.Equal(t, 3, res.Failed)
	assert.Equal(t, map[string]int{"http 500": 2, ErrTimeout: 1}, res.Errors)
	assert.Equal(t, 15, res.TotalInputTokens)
	assert.Equal(t, 16, res.TotalOutputTokens)
	assert.InDelta(t, 1.5, res.RequestThroughput, 1e-9)
	assert.InDelta(t, 8, res.OutputThroughput, 1e-9)
	assert.InDelta(t, 15.5, res.TotalThroughput, 1e-9)
	// Goodput: only the first meets both (the second's TPOT is 50, the
	// third's TTFT 30).
	require.NotNil(t, res.Goodput)
	assert.InDelta(t, 0.5, *res.Goodput, 1e-9)
	const eps = 1e-6
	assert.InDelta(t, 20, res.TTFT.Mean, eps)
	assert.InDelta(t, 20, res.TTFT.Median, eps)
	assert.InDelta(t, 28, res.TTFT.P90, eps) // 20 + 0.8·10
	assert.InDelta(t, 29.8, res.TTFT.P99, eps)
	assert.Equal(t, 2, res.TPOT.N)
	assert.InDelta(t, 30, res.TPOT.Mean, eps)
	assert.InDelta(t, 46, res.TPOT.P90, eps) // 10 + 0.9·40
	assert.Equal(t, 3, res.ITL.N)
	assert.InDelta(t, 15, res.ITL.Median, eps)
	assert.InDelta(t, 350.0/3, res.E2EL.Mean, eps)
	assert.InDelta(t, 100, res.E2EL.Median, eps)
	assert.InDelta(t, 30, res.E2EL.Min, eps)
	assert.InDelta(t, 220, res.E2EL.Max, eps)

	none := Summarize(outs, time.Second, SLO{})
	assert.Nil(t, none.Goodput)
	assert.Nil(t, none.SLO)
}

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		p    float64
		want float64
	}{
		{nil, 50, 0},
		{[]float64{7}, 99, 7},
		{[]float64{1, 2, 3, 4}, 50, 2.5},
		{[]float64{1, 2, 3, 4}, 0, 1},
		{[]float64{1, 2, 3, 4}, 100, 4},
		{[]float64{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100}, 99, 99},
	} {
		assert.InDelta(t, tc.want, Percentile(tc.xs, tc.p), 1e-12, "%v p%g", tc.xs, tc.p)
	}
}

func TestParseRatesAndSLO(t *testing.T) {
	r, err := ParseRates("1, 2.5,inf,INF")
	require.NoError(t, err)
	assert.Equal(t, []float64{1, 2.5, math.Inf(1), math.Inf(1)}, r)
	for _, bad := range []string{"", "0", "-1", "x", "1,,2", "nan"} {
		_, err := ParseRates(bad)
		assert.Error(t, err, bad)
	}
	s, err := ParseSLO("ttft=200ms,tpot=50,e2el=2s")
	require.NoError(t, err)
	assert.Equal(t, SLO{TTFT: 200 * time.Millisecond, TPOT: 50 * time.Millisecond, E2EL: 2 * time.Second}, s)
	for _, bad := range []string{"ttft", "foo=1", "ttft=-1", "tpot=abc"} {
		_, err := ParseSLO(bad)
		assert.Error(t, err, bad)
	}
}

func TestOptionsValidation(t *testing.T) {
	ok := Options{URL: "http://127.0.0.1:1", Prompts: prompts(1, 1), RequestRate: 1}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no url", func(o *Options) { o.URL = "" }, "URL is empty"},
		{"bad scheme", func(o *Options) { o.URL = "ftp://x" }, "http://"},
		{"no prompts", func(o *Options) { o.Prompts = nil }, "no prompts"},
		{"zero rate", func(o *Options) { o.RequestRate = 0 }, "request rate"},
		{"nan rate", func(o *Options) { o.RequestRate = math.NaN() }, "request rate"},
		{"ids on chat", func(o *Options) { o.Endpoint = "chat"; o.Prompts = []Prompt{{IDs: []int{1}}} }, "token-id prompts"},
		{"negative concurrency", func(o *Options) { o.MaxConcurrency = -1 }, "max concurrency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			_, err := Run(context.Background(), o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestReadJSONL(t *testing.T) {
	in := `{"prompt": "hello world", "max_tokens": 16}

{"prompt": [1, 2, 3], "output_len": 4}
{"prompt": "x", "input_len": 9}
`
	ps, err := ReadJSONL(strings.NewReader(in), "p.jsonl")
	require.NoError(t, err)
	assert.Equal(t, []Prompt{
		{Text: "hello world", MaxTokens: 16},
		{IDs: []int{1, 2, 3}, MaxTokens: 4, InputLen: 3},
		{Text: "x", InputLen: 9},
	}, ps)
	for _, tc := range []struct{ in, want string }{
		{`{"prompt": "a"}` + "\n" + `{"max_tokens": 3}`, "p.jsonl:2: no \"prompt\""},
		{`{"prompt": 5}`, "p.jsonl:1: prompt: want a string"},
		{`{"prompt": []}`, "empty token list"},
		{`{"prompt": "a", "max_tokens": -1}`, "negative"},
		{`not json`, "p.jsonl:1:"},
		{"\n\n", "no prompts"},
	} {
		_, err := ReadJSONL(strings.NewReader(tc.in), "p.jsonl")
		require.Error(t, err, tc.in)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestSynthetic(t *testing.T) {
	o := SyntheticOptions{NumPrompts: 50, InputLen: 32, OutputLen: 8, TokenLo: 100, TokenHi: 200, Seed: 3}
	ps, err := Synthetic(o)
	require.NoError(t, err)
	require.Len(t, ps, 50)
	for _, p := range ps {
		assert.Len(t, p.IDs, 32)
		assert.Equal(t, 8, p.MaxTokens)
		for _, id := range p.IDs {
			assert.True(t, id >= 100 && id < 200, "id %d", id)
		}
	}
	again, _ := Synthetic(o)
	assert.Equal(t, ps, again, "deterministic for a seed")

	o.Text, o.RangeRatio = true, 0.5
	ps, err = Synthetic(o)
	require.NoError(t, err)
	for _, p := range ps {
		n := len(strings.Fields(p.Text))
		assert.True(t, n >= 16 && n <= 48, "words %d", n)
		assert.Equal(t, n, p.InputLen)
		assert.True(t, p.MaxTokens >= 4 && p.MaxTokens <= 12)
	}
	_, err = Synthetic(SyntheticOptions{NumPrompts: 1, InputLen: 1, OutputLen: 1, TokenLo: 5, TokenHi: 5})
	assert.ErrorContains(t, err, "token range")
}

func TestSweepPlotAndJSON(t *testing.T) {
	url := start(t, &stub{Tokens: 3, TTFT: 5 * time.Millisecond, ITL: time.Millisecond})
	runs, err := Sweep(context.Background(), Options{URL: url, Model: "m", Prompts: prompts(6, 3), MaxConcurrency: 2}, []float64{50, math.Inf(1)})
	require.NoError(t, err)
	require.Len(t, runs, 2)
	assert.Equal(t, Rate(50), runs[0].RequestRate)
	assert.True(t, math.IsInf(float64(runs[1].RequestRate), 1))
	for _, r := range runs {
		assert.Equal(t, 6, r.Completed)
	}

	var img bytes.Buffer
	require.NoError(t, WritePlot(&img, runs, "stub"))
	cfg, err := png.DecodeConfig(bytes.NewReader(img.Bytes()))
	require.NoError(t, err)
	assert.Greater(t, cfg.Width, 1000)

	js, err := json.Marshal(runs)
	require.NoError(t, err)
	assert.Contains(t, string(js), `"request_rate":"inf"`)
	assert.Contains(t, string(js), `"request_rate":50`)
	var back []*Result
	require.NoError(t, json.Unmarshal(js, &back))
	assert.True(t, math.IsInf(float64(back[1].RequestRate), 1))
	assert.Equal(t, runs[0].TTFT, back[0].TTFT)

	var txt bytes.Buffer
	require.NoError(t, runs[1].Format(&txt))
	for _, want := range []string{"Successful requests:                    6\n", "Request rate configured (RPS):          inf\n", "P99 TTFT (ms):", "Median TPOT (ms):"} {
		assert.Contains(t, txt.String(), want)
	}
}

func TestFirstModel(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"object":"list","data":[{"id":"first","object":"model"},{"id":"second"}]}`)
	})
	url := start(t, mux)
	got, err := FirstModel(context.Background(), nil, url, "k")
	require.NoError(t, err)
	assert.Equal(t, "first", got)
	_, err = FirstModel(context.Background(), nil, url, "")
	assert.ErrorContains(t, err, "401")
}
