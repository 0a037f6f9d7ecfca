package serving

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is one run's summary. Times are in milliseconds, rates per second.
type Result struct {
	Endpoint       string `json:"endpoint"`
	Model          string `json:"model"`
	RequestRate    Rate   `json:"request_rate"`
	MaxConcurrency int    `json:"max_concurrency"`
	NumPrompts     int    `json:"num_prompts"`
	Completed      int    `json:"completed"`
	Failed         int    `json:"failed"`
	// Errors counts failed requests by kind ("http 503", "timeout", ...).
	Errors map[string]int `json:"errors"`
	// NoUsage counts completed requests whose stream had no usage chunk
	// (their output tokens are the token chunks counted).
	NoUsage           int     `json:"no_usage"`
	DurationS         float64 `json:"duration_s"`
	TotalInputTokens  int     `json:"total_input_tokens"`
	TotalOutputTokens int     `json:"total_output_tokens"`
	RequestThroughput float64 `json:"request_throughput"`
	OutputThroughput  float64 `json:"output_throughput"`
	TotalThroughput   float64 `json:"total_token_throughput"`
	// Goodput is completed requests/s that met every SLO (absent without
	// SLOs); SLO echoes them.
	Goodput *float64 `json:"request_goodput,omitempty"`
	SLO     *SLO     `json:"slo,omitempty"`
	TTFT    Stats    `json:"ttft_ms"`
	TPOT    Stats    `json:"tpot_ms"`
	ITL     Stats    `json:"itl_ms"`
	E2EL    Stats    `json:"e2el_ms"`
	// Requests holds every request's measurements, in prompt order.
	Requests []RequestOutput `json:"requests,omitempty"`
}

// Stats summarises a sample in milliseconds; N is the sample size.
type Stats struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	Median float64 `json:"median"`
	Std    float64 `json:"std"`
	P90    float64 `json:"p90"`
	P99    float64 `json:"p99"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Rate is a request rate that encodes +Inf as the JSON string "inf".
type Rate float64

// MarshalJSON implements json.Marshaler.
func (r Rate) MarshalJSON() ([]byte, error) {
	if math.IsInf(float64(r), 1) {
		return []byte(`"inf"`), nil
	}
	return json.Marshal(float64(r))
}

// UnmarshalJSON implements json.Unmarshaler.
func (r *Rate) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v, err := ParseRate(s)
		*r = Rate(v)
		return err
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("request rate: %w", err)
	}
	*r = Rate(f)
	return nil
}

// ParseRate parses a request rate: a positive number or "inf".
func ParseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "inf") {
		return math.Inf(1), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("request rate %q: want a positive number or inf", s)
	}
	return v, nil
}

// ParseRates parses a comma-separated list of rates ("1,2,4,inf").
func ParseRates(s string) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		v, err := ParseRate(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// FormatRate writes a rate as ParseRate reads it.
func FormatRate(r float64) string {
	if math.IsInf(r, 1) {
		return "inf"
	}
	return strconv.FormatFloat(r, 'g', -1, 64)
}

// SLO holds per-request limits for goodput; a zero field is no limit.
type SLO struct {
	TTFT time.Duration `json:"ttft_ns,omitempty"`
	TPOT time.Duration `json:"tpot_ns,omitempty"`
	E2EL time.Duration `json:"e2el_ns,omitempty"`
}

// IsZero reports whether no limit is set.
func (s SLO) IsZero() bool { return s == SLO{} }

// ParseSLO parses "ttft=200ms,tpot=50,e2el=2s": keys ttft, tpot, e2el;
// values are Go durations or plain numbers of milliseconds (vLLM's unit).
func ParseSLO(s string) (SLO, error) {
	var out SLO
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return SLO{}, fmt.Errorf("slo %q: want key=value", kv)
		}
		var d time.Duration
		if ms, err := strconv.ParseFloat(v, 64); err == nil {
			d = time.Duration(ms * float64(time.Millisecond))
		} else if d, err = time.ParseDuration(v); err != nil {
			return SLO{}, fmt.Errorf("slo %s: %q is neither milliseconds nor a duration", k, v)
		}
		if d <= 0 {
			return SLO{}, fmt.Errorf("slo %s: %q must be positive", k, v)
		}
		switch strings.ToLower(k) {
		case "ttft":
			out.TTFT = d
		case "tpot":
			out.TPOT = d
		case "e2el":
			out.E2EL = d
		default:
			return SLO{}, fmt.Errorf("slo key %q: want ttft, tpot or e2el", k)
		}
	}
	return out, nil
}

// TPOTValue returns the request's time per output token after the first, and
// false when it has fewer than two output tokens.
func (r *RequestOutput) TPOTValue() (time.Duration, bool) {
	if !r.Success || !r.HasTTFT || r.OutputTokens < 2 {
		return 0, false
	}
	return (r.Latency - r.TTFT) / time.Duration(r.OutputTokens-1), true
}

// meets reports whether a completed request is within every limit of s.
func (s SLO) meets(r *RequestOutput) bool {
	if s.TTFT > 0 && (!r.HasTTFT || r.TTFT > s.TTFT) {
		return false
	}
	if tpot, ok := r.TPOTValue(); s.TPOT > 0 && ok && tpot > s.TPOT {
		return false
	}
	return s.E2EL == 0 || r.Latency <= s.E2EL
}

// Summarize computes a run's result from its requests and wall time.
func Summarize(outs []RequestOutput, dur time.Duration, slo SLO) *Result {
	res := &Result{NumPrompts: len(outs), Errors: map[string]int{}, DurationS: dur.Seconds(), Requests: outs}
	var ttft, tpot, itl, e2el []float64
	good := 0
	for i := range outs {
		r := &outs[i]
		if !r.Success {
			res.Failed++
			res.Errors[r.ErrKind]++
			continue
		}
		res.Completed++
		if !r.Usage {
			res.NoUsage++
		}
		res.TotalInputTokens += r.PromptTokens
		res.TotalOutputTokens += r.OutputTokens
		if r.HasTTFT {
			ttft = append(ttft, ms(r.TTFT))
		}
		if v, ok := r.TPOTValue(); ok {
			tpot = append(tpot, ms(v))
		}
		for _, d := range r.ITL {
			itl = append(itl, ms(d))
		}
		e2el = append(e2el, ms(r.Latency))
		if slo.meets(r) {
			good++
		}
	}
	if s := dur.Seconds(); s > 0 {
		res.RequestThroughput = float64(res.Completed) / s
		res.OutputThroughput = float64(res.TotalOutputTokens) / s
		res.TotalThroughput = float64(res.TotalInputTokens+res.TotalOutputTokens) / s
		if !slo.IsZero() {
			g := float64(good) / s
			res.Goodput = &g
		}
	}
	if !slo.IsZero() {
		res.SLO = &slo
	}
	res.TTFT, res.TPOT, res.ITL, res.E2EL = Summary(ttft), Summary(tpot), Summary(itl), Summary(e2el)
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summary computes the statistics of xs (zero for an empty sample).
func Summary(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	mean := sum / float64(len(s))
	var sq float64
	for _, x := range s {
		sq += (x - mean) * (x - mean)
	}
	return Stats{N: len(s), Mean: mean, Median: Percentile(s, 50), Std: math.Sqrt(sq / float64(len(s))),
		P90: Percentile(s, 90), P99: Percentile(s, 99), Min: s[0], Max: s[len(s)-1]}
}

// Percentile returns the p-th percentile (0..100) of sorted, interpolating
// linearly between order statistics as numpy.percentile does by default.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	frac := pos - float64(lo)
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// Format writes the result as vLLM's bench serve prints it.
func (r *Result) Format(w io.Writer) error {
	var b strings.Builder
	line := func(k string, v any) {
		switch v := v.(type) {
		case float64:
			fmt.Fprintf(&b, "%-40s%.2f\n", k, v)
		default:
			fmt.Fprintf(&b, "%-40s%v\n", k, v)
		}
	}
	head := func(t string, fill byte) {
		pad := max(50-len(t)-2, 0)
		fmt.Fprintf(&b, "%s %s %s\n", strings.Repeat(string(fill), pad/2), t, strings.Repeat(string(fill), pad-pad/2))
	}
	head("Serving Benchmark Result", '=')
	line("Successful requests:", r.Completed)
	line("Failed requests:", r.Failed)
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		line("  "+k+":", r.Errors[k])
	}
	line("Request rate configured (RPS):", FormatRate(float64(r.RequestRate)))
	if r.MaxConcurrency > 0 {
		line("Maximum request concurrency:", r.MaxConcurrency)
	}
	line("Benchmark duration (s):", r.DurationS)
	line("Total input tokens:", r.TotalInputTokens)
	line("Total generated tokens:", r.TotalOutputTokens)
	line("Request throughput (req/s):", r.RequestThroughput)
	if r.Goodput != nil {
		line("Request goodput (req/s):", *r.Goodput)
	}
	line("Output token throughput (tok/s):", r.OutputThroughput)
	line("Total token throughput (tok/s):", r.TotalThroughput)
	if r.NoUsage > 0 {
		line("Requests without usage (chunks counted):", r.NoUsage)
	}
	for _, m := range []struct {
		title, short string
		s            Stats
	}{
		{"Time to First Token", "TTFT", r.TTFT},
		{"Time per Output Token (excl. 1st token)", "TPOT", r.TPOT},
		{"Inter-token Latency", "ITL", r.ITL},
		{"End-to-end Latency", "E2EL", r.E2EL},
	} {
		head(m.title, '-')
		line("Mean "+m.short+" (ms):", m.s.Mean)
		line("Median "+m.short+" (ms):", m.s.Median)
		line("P90 "+m.short+" (ms):", m.s.P90)
		line("P99 "+m.short+" (ms):", m.s.P99)
	}
	b.WriteString(strings.Repeat("=", 50) + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}
