package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/deepseek-go/deepseek-go/engine"
)

// runVerify implements "deepseek-run verify": run a reference file's prompt
// through the model and compare logits and greedy tokens with it.
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	dir := fs.String("m", "", "checkpoint `DIR` (required)")
	ref := fs.String("ref", "", "reference.safetensors `FILE` with input_ids, logits, generated_ids, step_logits (required)")
	tol := fs.Float64("tol", 1e-4, "largest relative error ‖ours−ref‖/‖ref‖ allowed at any position")
	device := fs.String("device", "auto", "auto, cpu or cuda (any case)")
	int8 := fs.Bool("int8", false, "quantise weights to int8 (expect errors around 1e-2)")
	threads := fs.Int("threads", 0, "CPU threads, at most the machine's cores; 0 = all cores")
	verbose := fs.Bool("v", false, "verbose: say in full why no GPU is used")
	if _, err := parseCommandFlags(fs, args, stdout, "usage: deepseek-run verify -m DIR --ref FILE [--tol 1e-4] [--device auto|cpu|cuda] [--int8]\n"); err != nil {
		return err
	}
	switch {
	case *dir == "":
		return usagef("verify needs -m DIR")
	case *ref == "":
		return usagef("verify needs --ref FILE (a reference.safetensors)")
	case !(*tol > 0):
		return usagef("--tol must be positive, got %g", *tol)
	}
	dev, err := checkDevice(*device)
	if err != nil {
		return err
	}
	if err := checkThreads(*threads); err != nil {
		return err
	}
	if _, err := os.Stat(*ref); err != nil {
		return fmt.Errorf("reference file: %w", err)
	}
	m, _, err := loadModel(ctx, *dir, modelOptions{device: dev, int8: *int8, threads: *threads, verbose: *verbose}, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	r, err := engine.Verify(ctx, m, *ref)
	if err != nil {
		return err
	}
	info := m.Info()
	fmt.Fprintf(stdout, "model     %s (%s on %s)\n", *dir, info.Architecture, info.Backend)
	fmt.Fprintf(stdout, "reference %s: %d prompt tokens, %d greedy steps\n", *ref, len(r.InputIDs), len(r.RefIDs))
	mark := func(e float64) string {
		if e > *tol || e != e {
			return "  <-- over tolerance"
		}
		return ""
	}
	fmt.Fprintln(stdout, "prefill   position  token   rel err")
	for i, e := range r.PrefillErr {
		fmt.Fprintf(stdout, "          %8d %6d   %.3e%s\n", i, r.InputIDs[i], e, mark(e))
	}
	fmt.Fprintln(stdout, "decode    step      ref    ours   rel err")
	for i, e := range r.StepErr {
		flag := ""
		if r.OurIDs[i] != r.RefIDs[i] {
			flag = "  <-- different token"
		}
		fmt.Fprintf(stdout, "          %8d %6d %6d   %.3e%s%s\n", i, r.RefIDs[i], r.OurIDs[i], e, mark(e), flag)
	}
	fmt.Fprintf(stdout, "worst     %.3e at %s (tolerance %.1e)\n", r.Worst, r.WorstAt, *tol)
	fmt.Fprintf(stdout, "greedy    %d/%d tokens match\n", r.Match, len(r.RefIDs))
	if !r.Passed(*tol) {
		fmt.Fprintln(stdout, "FAIL")
		reason := fmt.Sprintf("worst relative error %.3e at %s", r.Worst, r.WorstAt)
		if r.Match != len(r.RefIDs) {
			reason += fmt.Sprintf(", greedy %d/%d (first mismatch at step %d)", r.Match, len(r.RefIDs), r.FirstMismatch)
		}
		return fmt.Errorf("verify failed: %s, tolerance %.1e", reason, *tol)
	}
	fmt.Fprintln(stdout, "PASS")
	return nil
}
