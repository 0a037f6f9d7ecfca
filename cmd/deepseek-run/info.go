package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/deepseek-go/deepseek-go/kernels/cuda"
)

// runInfo implements "deepseek-run info": load the checkpoint on the CPU
// (weights are memory-mapped, so this is quick) and describe it.
func runInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	dir := fs.String("m", "", "checkpoint `DIR`; default: the embedded stories260K demo model")
	int8 := fs.Bool("int8", false, "report sizes with weights quantised to int8")
	ctxTokens := fs.Int("ctx", 4096, "context length to size the KV cache for (besides the model's maximum)")
	if _, err := parseCommandFlags(fs, args, stdout, "usage: deepseek-run info [-m DIR] [--int8] [--ctx N]\n"); err != nil {
		return err
	}
	if *ctxTokens <= 0 {
		return usagef("--ctx must be positive, got %d", *ctxTokens)
	}
	m, load, err := loadModel(ctx, *dir, modelOptions{device: "cpu", int8: *int8}, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	info, cfg := m.Info(), m.Config()

	w := func(k, format string, a ...any) { fmt.Fprintf(stdout, "%-13s %s\n", k, fmt.Sprintf(format, a...)) }
	arch := info.Architecture
	if len(cfg.Architectures) > 0 {
		arch += " (" + strings.Join(cfg.Architectures, ", ") + ")"
	}
	w("model", "%s", modelName(*dir))
	w("architecture", "%s", arch)
	w("parameters", "%s", humanCount(info.Params))
	var weights int64
	dtypes := make([]string, 0, len(info.BytesByDType))
	for k, v := range info.BytesByDType {
		weights += v
		dtypes = append(dtypes, k)
	}
	slices.Sort(dtypes)
	parts := make([]string, 0, len(dtypes))
	for _, k := range dtypes {
		parts = append(parts, fmt.Sprintf("%s %s", k, humanBytes(info.BytesByDType[k])))
	}
	// Resident bytes by storage dtype as loaded here. fp8 stays fp8 (e4m3
	// and block scales) on the CPU and on CUDA, so the GPU holds the same.
	w("weights", "%s resident on the CPU (%s)", humanBytes(weights), strings.Join(parts, ", "))
	fp8 := info.BytesByDType["fp8"]
	if fp8 > 0 {
		w("fp8", "%s kept as fp8 (e4m3 + block scales) on the cpu and cuda", humanBytes(fp8))
	}
	w("layers", "%d, hidden %d, heads %d (KV heads %d), head dim %d, vocab %d",
		cfg.NumLayers, cfg.HiddenSize, cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim, cfg.VocabSize)
	if cfg.KVLoraRank > 0 {
		w("attention", "MLA: kv_lora_rank %d, rope dim %d, q_lora_rank %d", cfg.KVLoraRank, cfg.QKRopeHeadDim, cfg.QLoraRank)
	}
	if cfg.NRoutedExperts > 0 {
		w("experts", "%d routed (%d per token) + %d shared, expert FFN %d", cfg.NRoutedExperts, cfg.NumExpertsPerTok, cfg.NSharedExperts, cfg.MoEIntermediateSize)
	}
	rope := "default"
	if r := cfg.RopeScaling; r != nil && r.Type != "" {
		rope = fmt.Sprintf("%s ×%g", r.Type, r.Factor)
	}
	w("context", "%d tokens (rope theta %g, scaling %s)", cfg.MaxPositionEmbeddings, cfg.RopeTheta, rope)
	maxCtx := int64(cfg.MaxPositionEmbeddings)
	small := min(int64(*ctxTokens), maxCtx)
	w("KV cache", "%s per token: %s at %d tokens, %s at the full %d", humanBytes(info.KVBytesPerTok),
		humanBytes(info.KVBytesPerTok*small), small, humanBytes(info.KVBytesPerTok*maxCtx), maxCtx)
	if mc, ok := m.MLACache(); ok { // MLA: the absorbed cache next to what the naive one would take
		w("MLA cache", "%s path; absorbed %s per token (%d layers × %d values), naive would be %s (%.1f×)",
			m.MLAPath(), humanBytes(mc.AbsorbedBytes), cfg.NumLayers, cfg.KVLoraRank+cfg.QKRopeHeadDim,
			humanBytes(mc.NaiveBytes), float64(mc.NaiveBytes)/float64(mc.AbsorbedBytes))
	}
	if tok := m.Tokenizer(); tok != nil {
		tmpl := "no chat template"
		if hasChatTemplate(tok) {
			tmpl = "chat template"
		}
		w("tokenizer", "%d tokens, %s", tok.VocabSize(), tmpl)
	} else {
		w("tokenizer", "none (no tokenizer.json): token ids only")
	}
	w("loaded in", "%.0f ms", ms(load))

	// Where it would run: weights plus a KV cache of the smaller context.
	need := weights + info.KVBytesPerTok*small
	fmt.Fprintln(stdout, "devices")
	if avail, ok := memAvailable(); ok {
		verdict := "fits"
		if need > avail {
			verdict = "does NOT fit (try --int8 or a smaller model)"
		}
		fmt.Fprintf(stdout, "  cpu         needs %s with a %d-token cache; %s of RAM available: %s\n", humanBytes(need), small, humanBytes(avail), verdict)
	} else {
		fmt.Fprintf(stdout, "  cpu         needs %s with a %d-token cache\n", humanBytes(need), small)
	}
	devs, err := cuda.Devices()
	if err != nil {
		fmt.Fprintf(stdout, "  cuda        needs %s of GPU memory with a %d-token cache; no GPU usable here: %s\n", humanBytes(need), small, oneLine(err.Error()))
		return nil
	}
	for _, d := range devs {
		verdict := "fits"
		if need > d.TotalMem {
			verdict = "does NOT fit"
		}
		fmt.Fprintf(stdout, "  cuda:%d      %s (sm_%d%d, %s): needs %s with a %d-token cache: %s\n",
			d.Ordinal, d.Name, d.Major, d.Minor, humanBytes(d.TotalMem), humanBytes(need), small, verdict)
	}
	return nil
}

// memAvailable reads MemAvailable from /proc/meminfo (Linux only).
func memAvailable() (int64, bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for f >= unit && i < 5 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.2f %ciB", f, "BKMGTP"[i])
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f B (%d)", float64(n)/1e9, n)
	case n >= 1e6:
		return fmt.Sprintf("%.2f M (%d)", float64(n)/1e6, n)
	case n >= 1e3:
		return fmt.Sprintf("%.1f K (%d)", float64(n)/1e3, n)
	}
	return strconv.FormatInt(n, 10)
}
