package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deepseek-go/deepseek-go/bench/serving"
)

const benchUsage = `usage: deepseek-run bench serve [--url URL] [--model NAME] [flags]

Load-tests any OpenAI-compatible server (deepseek-run serve, vLLM, SGLang,
llama-server, ...) the way vLLM's "bench serve" does: Poisson arrivals at
--request-rate (inf sends everything at once), streamed requests with
stream_options.include_usage, and TTFT, TPOT, ITL and end-to-end latency
(mean, median, P90, P99), requests/s, output and total tokens/s, errors by
kind and goodput for --slo. Several rates make a sweep (--plot draws it).

Prompts come from --dataset (JSONL: {"prompt": "text" or [ids], "max_tokens": N})
or are synthetic: --input-len random token ids (or words with --endpoint chat)
and --output-len tokens with ignore_eos. Synthetic prompts are drawn afresh
for each rate of a sweep (--seed plus the rate's index), so a server's prefix
cache cannot answer a later rate from an earlier one's prompts.

Examples:
  deepseek-run bench serve --url http://127.0.0.1:8080 --num-prompts 500 \
      --max-concurrency 32 --input-len 128 --output-len 64
  deepseek-run bench serve --url http://gpu:8000 --model m --num-prompts 1000 \
      --input-len 512 --output-len 256 --request-rate 4,8,16,inf --plot sweep.png --json sweep.json
  deepseek-run bench serve --url http://gpu:8000 --num-prompts 1000,250 --request-rate inf,8 ...
      (1000 prompts at rate inf, then 250 at rate 8)

Flags:
`

// runBench implements "deepseek-run bench SUBCOMMAND".
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "serve" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, benchUsage)
			return errHelp
		}
		return usagef("bench: want the subcommand serve (deepseek-run bench serve -h)")
	}
	return runBenchServe(ctx, args[1:], stdout, stderr)
}

func runBenchServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench serve", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:8080", "server base `URL`")
	endpoint := fs.String("endpoint", "completions", "completions, chat, or a path such as /v1/completions")
	model := fs.String("model", "", "model `NAME` of the requests (default: the first of GET /v1/models)")
	apiKey := fs.String("api-key", os.Getenv("OPENAI_API_KEY"), "bearer `KEY` (default $OPENAI_API_KEY)")
	numPrompts := fs.String("num-prompts", "200", "requests per rate; a comma list gives each --request-rate its own (1000,200,200)")
	rates := fs.String("request-rate", "inf", "requests/s, Poisson arrivals; a comma list sweeps (1,2,4,inf)")
	maxConc := fs.Int("max-concurrency", 0, "requests in flight at most (0 = no cap)")
	dataset := fs.String("dataset", "", "JSONL `FILE` of prompts (cycled to --num-prompts)")
	inputLen := fs.Int("input-len", 0, "synthetic prompt length in tokens")
	outputLen := fs.Int("output-len", 128, "synthetic max_tokens")
	rangeRatio := fs.Float64("range-ratio", 0, "spread synthetic lengths uniformly over len·(1±r)")
	tokenRange := fs.String("token-range", "100:500", "synthetic token ids are drawn from `LO:HI` (valid in every vocabulary of at least HI)")
	ignoreEOS := fs.Bool("ignore-eos", true, "ask for max_tokens whatever is sampled (default on for synthetic prompts, off for --dataset)")
	temperature := fs.Float64("temperature", 0, "sampling temperature of every request")
	seed := fs.Uint64("seed", 0, "seed of the arrivals and synthetic prompts; the i-th rate of a sweep uses seed+i, so no rate resends another's prompts (a prefix cache would serve them)")
	sloFlag := fs.String("slo", "", "goodput SLOs: ttft=200ms,tpot=50ms,e2el=10s (plain numbers are ms)")
	timeout := fs.Duration("timeout", 0, "per-request limit (0 = none)")
	jsonOut := fs.String("json", "", "write the results to `FILE` as JSON")
	jsonRequests := fs.Bool("json-requests", false, "include every request's timings in --json")
	plotOut := fs.String("plot", "", "write a PNG `FILE` of latency and throughput against rate (needs two or more rates)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	set, err := parseCommandFlags(fs, args, stdout, benchUsage)
	if err != nil {
		return err
	}
	rateList, err := serving.ParseRates(*rates)
	if err != nil {
		return usagef("--request-rate: %v", err)
	}
	slo, err := serving.ParseSLO(*sloFlag)
	if err != nil {
		return usagef("--slo: %v", err)
	}
	counts, err := parseCounts(*numPrompts, len(rateList))
	if err != nil {
		return usagef("--num-prompts: %v", err)
	}
	if *plotOut != "" && len(rateList) < 2 {
		return usagef("--plot needs two or more --request-rate values")
	}
	chat := *endpoint == "chat" || strings.HasSuffix(*endpoint, "/chat/completions")
	// promptsFor returns the prompts of the i-th rate: a dataset's first
	// counts[i] (cycled), or synthetic ones drawn with seed+i so that no rate
	// resends another's (a server's prefix cache would answer them).
	var promptsFor func(i int) ([]serving.Prompt, error)
	switch {
	case *dataset != "" && *inputLen > 0:
		return usagef("give --dataset or --input-len, not both")
	case *dataset != "":
		f, err := os.Open(*dataset)
		if err != nil {
			return fmt.Errorf("--dataset: %w", err)
		}
		ps, err := serving.ReadJSONL(f, *dataset)
		f.Close()
		if err != nil {
			return err
		}
		if _, err := serving.Take(ps, 1); err != nil {
			return err
		}
		promptsFor = func(i int) ([]serving.Prompt, error) { return serving.Take(ps, counts[i]) }
		if !set["ignore-eos"] {
			*ignoreEOS = false
		}
	case *inputLen > 0:
		var lo, hi int
		if _, err := fmt.Sscanf(*tokenRange, "%d:%d", &lo, &hi); err != nil {
			return usagef("--token-range %q: want LO:HI", *tokenRange)
		}
		so := serving.SyntheticOptions{NumPrompts: counts[0], InputLen: *inputLen, OutputLen: *outputLen,
			RangeRatio: *rangeRatio, Text: chat, TokenLo: lo, TokenHi: hi, Seed: *seed}
		if _, err := serving.Synthetic(so); err != nil {
			return usagef("%v", err)
		}
		promptsFor = func(i int) ([]serving.Prompt, error) {
			so.NumPrompts, so.Seed = counts[i], *seed+uint64(i)
			return serving.Synthetic(so)
		}
	default:
		return usagef("give prompts: --dataset FILE or --input-len N [--output-len N]")
	}
	if *model == "" {
		if *model, err = serving.FirstModel(ctx, nil, *url, *apiKey); err != nil {
			return err
		}
	}
	o := serving.Options{URL: *url, Endpoint: *endpoint, Model: *model, APIKey: *apiKey,
		MaxConcurrency: *maxConc, IgnoreEOS: *ignoreEOS, Temperature: *temperature,
		SLO: slo, Timeout: *timeout}
	if !*quiet {
		o.Progress = stderr
	}
	var runs []*serving.Result
	var runErr error
	for i, r := range rateList {
		o.RequestRate, o.Seed = r, *seed+uint64(i)
		if o.Prompts, err = promptsFor(i); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench: %s %s, rate %s, %d prompts, max concurrency %d\n", *url, *model, serving.FormatRate(r), len(o.Prompts), *maxConc)
		res, err := serving.Run(ctx, o)
		if res != nil {
			runs = append(runs, res)
			if ferr := res.Format(stdout); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			// Interrupted (Ctrl-C, timeout -s INT): the rates measured so
			// far, and this one's partial result, are still written.
			runErr = err
			break
		}
	}
	// The table and the plot go by rate, "inf" last, whatever the order run.
	byRate := slices.Clone(runs)
	slices.SortStableFunc(byRate, func(a, b *serving.Result) int { return cmp.Compare(a.RequestRate, b.RequestRate) })
	if len(runs) > 1 {
		printSweep(stdout, byRate)
	}
	if *jsonOut != "" && len(runs) > 0 {
		if err := writeBenchJSON(*jsonOut, runs, *jsonRequests, args); err != nil {
			return err
		}
	}
	if *plotOut != "" && len(runs) > 1 {
		if err := serving.WritePlotFile(*plotOut, byRate, *model); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench: wrote %s\n", *plotOut)
	}
	if runErr != nil {
		return runErr
	}
	for _, r := range runs {
		if r.Completed == 0 {
			return fmt.Errorf("bench: every request failed at rate %s (%v)", serving.FormatRate(float64(r.RequestRate)), r.Errors)
		}
	}
	return nil
}

// printSweep writes one line per rate.
func printSweep(w io.Writer, runs []*serving.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rate\treq/s\tout tok/s\tTTFT P50 ms\tTTFT P99 ms\tTPOT P50 ms\tTPOT P99 ms\tE2EL P99 ms\tfailed\t")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%.2f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.1f\t%d\t\n", serving.FormatRate(float64(r.RequestRate)),
			r.RequestThroughput, r.OutputThroughput, r.TTFT.Median, r.TTFT.P99, r.TPOT.Median, r.TPOT.P99, r.E2EL.P99, r.Failed)
	}
	tw.Flush()
}

// benchReport is the --json file.
type benchReport struct {
	Date    time.Time         `json:"date"`
	Command []string          `json:"command"`
	Runs    []*serving.Result `json:"runs"`
}

func writeBenchJSON(path string, runs []*serving.Result, withRequests bool, args []string) error {
	rep := benchReport{Date: time.Now().UTC(), Command: append([]string{"deepseek-run", "bench", "serve"}, args...)}
	for _, r := range runs {
		c := *r
		if !withRequests {
			c.Requests = nil
		}
		rep.Runs = append(rep.Runs, &c)
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}

// parseCounts reads --num-prompts: one positive count for every rate, or
// one per rate.
func parseCounts(s string, rates int) ([]int, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 1 && len(parts) != rates {
		return nil, fmt.Errorf("%d counts for %d rates: give one, or one per rate", len(parts), rates)
	}
	out := make([]int, rates)
	for i := range out {
		p := strings.TrimSpace(parts[min(i, len(parts)-1)])
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("want a positive count, got %q", p)
		}
		out[i] = n
	}
	return out, nil
}
