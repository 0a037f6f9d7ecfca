package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/deepseek-go/deepseek-go/bench/synth"
)

const synthUsage = `usage: deepseek-run synth --shape NAME -o DIR [--seed N] [--dtype bf16|fp8] [--layers N]
       deepseek-run synth --list

Writes a checkpoint directory with random weights in a benchmarked shape:
config.json, generation_config.json, sharded *.safetensors with
model.safetensors.index.json, and DeepSeek-V3's tokenizer. Deterministic for
a seed; streamed to disk. Every shape uses V3's vocabulary (129280) so that
the tokenizer's ids all have rows; the layer widths are the named model's.

Flags:
`

// runSynth implements "deepseek-run synth".
func runSynth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	shape := fs.String("shape", "", "shape `NAME` (see --list)")
	out := fs.String("o", "", "output `DIR`")
	seed := fs.Uint64("seed", 0, "weights seed")
	dtype := fs.String("dtype", "", "bf16 or fp8 (128x128 block scales); default: the shape's")
	layers := fs.Int("layers", 0, "num_hidden_layers instead of the shape's")
	shard := sizeFlag(4 << 30)
	fs.Var(&shard, "shard-size", "tensor bytes per shard at most (e.g. 2GiB)")
	force := fs.Bool("force", false, "overwrite a checkpoint already in DIR")
	list := fs.Bool("list", false, "list the shapes and exit")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	if _, err := parseCommandFlags(fs, args, stdout, synthUsage); err != nil {
		return err
	}
	if *list {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "shape\tparams\tbytes\tdtype\tdescription")
		for _, s := range synth.Shapes() {
			p, b, err := synth.Params(synth.Options{Shape: s.Name})
			if err != nil {
				return err
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, humanCount(p), humanBytes(b), s.DefaultDType, s.About)
		}
		return tw.Flush()
	}
	if *shape == "" || *out == "" {
		return usagef("synth needs --shape NAME and -o DIR (--list shows the shapes)")
	}
	if *dtype != "" && *dtype != "bf16" && *dtype != "fp8" {
		return usagef("--dtype %q: want bf16 or fp8", *dtype)
	}
	if *layers < 0 {
		return usagef("--layers must be >= 0, got %d", *layers)
	}
	if _, err := synth.Lookup(*shape); err != nil {
		return usagef("--shape: %v", err)
	}
	start := time.Now()
	o := synth.Options{Shape: *shape, Dir: *out, Seed: *seed, DType: *dtype, Layers: *layers,
		ShardBytes: int64(shard), Force: *force}
	if !*quiet {
		last := time.Time{}
		o.Progress = func(done, total int64) {
			if now := time.Now(); now.Sub(last) > 500*time.Millisecond || done == total {
				last = now
				rate := float64(done) / max(time.Since(start).Seconds(), 1e-9) / (1 << 20)
				fmt.Fprintf(stderr, "\rsynth: %s of %s (%.0f%%, %.0f MiB/s) ", humanBytes(done), humanBytes(total), 100*float64(done)/float64(max(total, 1)), rate)
			}
		}
	}
	sum, err := synth.Write(ctx, o)
	if !*quiet {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s (%s params, %s of tensors in %d shard(s)) in %v\n", sum.Dir, *shape,
		humanCount(sum.Params), humanBytes(sum.Bytes), len(sum.Shards), time.Since(start).Round(time.Millisecond))
	return nil
}
