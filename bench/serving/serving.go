// Package serving is a load generator for OpenAI-compatible inference
// servers (ours, vLLM, SGLang, llama-server, ...), following vLLM's
// `bench serve` method so that figures are comparable:
//
//   - requests arrive as a Poisson process at a request rate (exponential
//     gaps, seeded), or all at once for rate +Inf; --max-concurrency caps the
//     requests in flight (a request waits for a slot before its clock starts);
//   - every request streams (/v1/completions or /v1/chat/completions with
//     stream_options.include_usage), and its output tokens come from the
//     stream's final usage chunk;
//   - TTFT = send → first streamed token, ITL = gaps between token chunks,
//     TPOT = (E2EL − TTFT)/(output tokens − 1), E2EL = send → last token;
//     each is summarised by mean, median, P90 and P99 (numpy's linear
//     percentiles), with requests/s, output tok/s, total tok/s, errors by
//     kind, and goodput (requests/s meeting every given SLO).
//
// Run measures one rate; Sweep runs several and PlotSweep draws them.
package serving

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options configure one benchmark run.
type Options struct {
	// URL is the server's base URL ("http://127.0.0.1:8080"); Endpoint is
	// appended to it.
	URL string
	// Endpoint is "/v1/completions" (default) or "/v1/chat/completions";
	// the short names "completions" and "chat" are accepted.
	Endpoint string
	// Model is the "model" field of every request.
	Model string
	// APIKey, when set, is sent as "Authorization: Bearer KEY".
	APIKey string
	// Prompts are sent in order, one request each.
	Prompts []Prompt
	// RequestRate is the mean arrival rate in requests/s; +Inf sends every
	// request at once.
	RequestRate float64
	// MaxConcurrency caps the requests in flight (0 = no cap).
	MaxConcurrency int
	// Seed makes the arrival times reproducible.
	Seed uint64
	// IgnoreEOS asks the server to generate max_tokens whatever it samples
	// (vLLM and llama-server's "ignore_eos"; others ignore the field).
	IgnoreEOS bool
	// Temperature of every request (0 = greedy).
	Temperature float64
	// SLO, when any field is set, adds goodput to the result.
	SLO SLO
	// Timeout bounds each request (0 = none).
	Timeout time.Duration
	// Client sends the requests; nil = one sized for the run.
	Client *http.Client
	// Progress, when set, receives a progress bar (stderr in the CLI).
	Progress io.Writer
}

// Prompt is one request's input.
type Prompt struct {
	// Text is the prompt (completions) or the user message (chat).
	Text string
	// IDs, when set, is sent instead of Text as a token-id prompt
	// (/v1/completions only; vLLM, llama-server and ours accept it).
	IDs []int
	// MaxTokens is the request's max_tokens (0 = the server's default).
	MaxTokens int
	// InputLen is the prompt's length in tokens when known; used when the
	// server reports no usage.
	InputLen int
}

// normalize checks o and fills defaults; it returns the request URL.
func (o *Options) normalize() (string, error) {
	switch o.Endpoint {
	case "", "completions":
		o.Endpoint = "/v1/completions"
	case "chat":
		o.Endpoint = "/v1/chat/completions"
	}
	if !strings.HasPrefix(o.Endpoint, "/") {
		return "", fmt.Errorf("serving: endpoint %q must be a path such as /v1/completions", o.Endpoint)
	}
	if o.URL == "" {
		return "", errors.New("serving: URL is empty")
	}
	if !strings.HasPrefix(o.URL, "http://") && !strings.HasPrefix(o.URL, "https://") {
		return "", fmt.Errorf("serving: URL %q must start with http:// or https://", o.URL)
	}
	if len(o.Prompts) == 0 {
		return "", errors.New("serving: no prompts")
	}
	if !(o.RequestRate > 0) { // also rejects NaN
		return "", fmt.Errorf("serving: request rate must be positive or inf, got %v", o.RequestRate)
	}
	if o.MaxConcurrency < 0 {
		return "", fmt.Errorf("serving: max concurrency must be >= 0, got %d", o.MaxConcurrency)
	}
	chat := o.isChat()
	for i, p := range o.Prompts {
		if chat && len(p.IDs) > 0 {
			return "", fmt.Errorf("serving: prompt %d: token-id prompts need /v1/completions, not %s", i, o.Endpoint)
		}
		if p.MaxTokens < 0 {
			return "", fmt.Errorf("serving: prompt %d: max_tokens %d is negative", i, p.MaxTokens)
		}
	}
	return strings.TrimRight(o.URL, "/") + o.Endpoint, nil
}

func (o *Options) isChat() bool { return strings.HasSuffix(o.Endpoint, "/chat/completions") }

// Arrivals returns the send offsets of n requests at rate (requests/s):
// the first at 0, then exponential gaps of mean 1/rate drawn from seed (all
// 0 for +Inf), as vLLM's Poisson process.
func Arrivals(n int, rate float64, seed uint64) []time.Duration {
	out := make([]time.Duration, n)
	if math.IsInf(rate, 1) {
		return out
	}
	rng := rand.New(rand.NewPCG(seed, 0x5e71e5))
	var t float64
	for i := 1; i < n; i++ {
		t += rng.ExpFloat64() / rate
		out[i] = time.Duration(t * float64(time.Second))
	}
	return out
}

// Run sends o.Prompts and returns the measured result. Failed requests are
// counted in the result, not returned as errors; the error is for bad
// options or a cancelled ctx (then the partial result comes with it).
func Run(ctx context.Context, o Options) (*Result, error) {
	url, err := o.normalize()
	if err != nil {
		return nil, err
	}
	client := o.Client
	if client == nil {
		conns := len(o.Prompts)
		if o.MaxConcurrency > 0 {
			conns = min(conns, o.MaxConcurrency)
		}
		client = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns, // the default (2) would reconnect under load
			DisableCompression:  true,  // a gzipped stream arrives in bursts
		}}
	}
	n := len(o.Prompts)
	arrivals := Arrivals(n, o.RequestRate, o.Seed)
	outs := make([]RequestOutput, n)
	var sem chan struct{}
	if o.MaxConcurrency > 0 {
		sem = make(chan struct{}, o.MaxConcurrency)
	}
	prog := newProgress(o.Progress, n)
	defer prog.stop()

	start := time.Now()
	var wg sync.WaitGroup
	sent := 0
	timer := time.NewTimer(0)
	<-timer.C
send:
	for i := range o.Prompts {
		if wait := time.Until(start.Add(arrivals[i])); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break send
			}
		}
		sent++
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if sem != nil {
				select {
				case sem <- struct{}{}:
					defer func() { <-sem }()
				case <-ctx.Done():
					outs[i] = RequestOutput{ErrKind: ErrCanceled, Err: ctx.Err().Error()}
					prog.done(false)
					return
				}
			}
			outs[i] = o.send(ctx, client, url, o.Prompts[i], start)
			prog.done(outs[i].Success)
		}(i)
	}
	wg.Wait()
	dur := time.Since(start)
	for i := sent; i < n; i++ {
		outs[i] = RequestOutput{ErrKind: ErrCanceled, Err: "not sent: " + context.Cause(ctx).Error()}
	}
	res := Summarize(outs, dur, o.SLO)
	res.RequestRate = Rate(o.RequestRate)
	res.MaxConcurrency = o.MaxConcurrency
	res.Endpoint = o.Endpoint
	res.Model = o.Model
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("serving: benchmark interrupted after sending %d of %d requests: %w", sent, n, err)
	}
	return res, nil
}

// Sweep runs o once per rate (in order) and returns the results; a
// cancelled ctx stops it with the results so far.
func Sweep(ctx context.Context, o Options, rates []float64) ([]*Result, error) {
	var out []*Result
	for _, r := range rates {
		o.RequestRate = r
		res, err := Run(ctx, o)
		if res != nil {
			out = append(out, res)
		}
		if err != nil {
			return out, fmt.Errorf("rate %s: %w", FormatRate(r), err)
		}
	}
	return out, nil
}

// progress draws "[####....] 120/500 ok 118 err 2 24.1 req/s" on one
// line, redrawn at most every 200 ms.
type progress struct {
	w        io.Writer
	total    int
	start    time.Time
	mu       sync.Mutex
	ok, fail int
	last     time.Time
	stopped  bool
}

func newProgress(w io.Writer, total int) *progress {
	return &progress{w: w, total: total, start: time.Now()}
}

func (p *progress) done(ok bool) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.ok++
	} else {
		p.fail++
	}
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond || p.ok+p.fail == p.total {
		p.last = now
		p.draw()
	}
}

func (p *progress) draw() {
	const width = 30
	n := p.ok + p.fail
	filled := width * n / max(p.total, 1)
	rate := float64(n) / max(time.Since(p.start).Seconds(), 1e-9)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d ok %d err %d %.1f req/s ",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), n, p.total, p.ok, p.fail, rate)
}

func (p *progress) stop() {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		p.draw()
		fmt.Fprintln(p.w)
		p.stopped = true
	}
}
