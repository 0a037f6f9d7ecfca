// Package synth writes synthetic Hugging Face checkpoints with random
// weights in the shapes we benchmark (deepseek-coder-1.3b, deepseek-llm-7b,
// DeepSeek-V2-Lite, a DeepSeek-V3 slice with the real layer widths, and
// tiny test shapes): config.json, generation_config.json, sharded
// *.safetensors with model.safetensors.index.json, and DeepSeek-V3's real
// tokenizer, so the server and benchmarks exercise the real loading path
// at full size without downloading weights.
//
// Weights are bf16, or float8_e4m3fn with float32 weight_scale_inv per
// 128×128 block as DeepSeek-V3 ships them. Every value is a function of
// the seed, the tensor name and the element index (counter-based), so a
// checkpoint is byte-identical for a seed whatever the shard size or the
// number of cores, and tensors are generated in parallel chunks streamed
// to disk: memory stays a few chunk buffers regardless of model size.
package synth

import (
	"bufio"
	"compress/gzip"
	"context"
	"embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/quant"
)

//go:embed tokenizer/tokenizer.json.gz tokenizer/tokenizer_config.json
var tokenizerFS embed.FS

// Options configure Write.
type Options struct {
	// Shape names the architecture (see Shapes).
	Shape string
	// Dir is the output directory; created if missing, and it must not
	// already hold a config.json unless Force is set.
	Dir   string
	Force bool
	// Seed selects the random weights.
	Seed uint64
	// DType is "bf16" or "fp8" ("" = the shape's default). fp8 stores the
	// 2-D projections as float8_e4m3fn with 128×128 block scales;
	// embeddings, norms, routers and the output head stay bf16, as in
	// DeepSeek-V3's own checkpoint.
	DType string
	// Layers overrides num_hidden_layers (0 = the shape's).
	Layers int
	// ShardBytes caps a shard's tensor bytes (0 = 4 GiB); a tensor larger
	// than the cap gets a shard of its own.
	ShardBytes int64
	// Progress, when set, is called after each chunk with bytes written
	// and the total.
	Progress func(done, total int64)
}

// Summary describes a written checkpoint.
type Summary struct {
	Dir    string
	Config *engine.Config
	Params int64
	Bytes  int64 // tensor bytes over all shards
	// ScaleElements counts fp8 block scales (not in Params).
	ScaleElements int64
	Shards        []string
}

// tensorSpec is one tensor to write.
type tensorSpec struct {
	name  string
	dtype safetensors.DType
	shape []int
	kind  valueKind
	cols  int // kindScale: columns of the fp8 weight it scales
}

type valueKind int

const (
	kindMatrix valueKind = iota // uniform, amplitude 1/sqrt(cols)
	kindNorm                    // 1 ± 0.1
	kindBias                    // ± 0.02
	kindFP8                     // e4m3 codes of a uniform value
	kindScale                   // block scales for a kindFP8 tensor
)

func (t *tensorSpec) elements() int64 {
	n := int64(1)
	for _, d := range t.shape {
		n *= int64(d)
	}
	return n
}

func (t *tensorSpec) bytes() int64 { return t.elements() * int64(t.dtype.Size()) }

// fp8Block is DeepSeek-V3's weight_block_size.
const fp8Block = 128

// configJSON returns the config.json of o's shape and the parsed Config.
func configJSON(o Options) ([]byte, *engine.Config, error) {
	sh, err := Lookup(o.Shape)
	if err != nil {
		return nil, nil, err
	}
	c := sh.Config
	c["vocab_size"] = VocabSize
	c["bos_token_id"] = 0
	c["eos_token_id"] = 1
	c["tie_word_embeddings"] = false
	c["torch_dtype"] = "bfloat16"
	c["initializer_range"] = 0.02
	c["synthetic"] = fmt.Sprintf("deepseek-go bench/synth shape %s seed %d: random weights, not a trained model", sh.Name, o.Seed)
	if o.Layers < 0 {
		return nil, nil, fmt.Errorf("synth: layers %d is negative", o.Layers)
	}
	if o.Layers > 0 {
		c["num_hidden_layers"] = o.Layers
	}
	switch o.DType {
	case "bf16":
	case "fp8":
		c["quantization_config"] = map[string]any{"quant_method": "fp8", "fmt": "e4m3",
			"activation_scheme": "dynamic", "weight_block_size": []int{fp8Block, fp8Block}}
	default:
		return nil, nil, fmt.Errorf("synth: dtype %q: want bf16 or fp8", o.DType)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, nil, fmt.Errorf("synth: config.json: %w", err)
	}
	cfg, err := engine.ParseConfig("config.json", b)
	if err != nil {
		return nil, nil, fmt.Errorf("synth: shape %s: %w", sh.Name, err)
	}
	return append(b, '\n'), cfg, nil
}

// plan lists the tensors of a config with the loader's names and shapes.
func plan(c *engine.Config, fp8 bool) ([]tensorSpec, error) {
	var ts []tensorSpec
	add := func(name string, kind valueKind, shape ...int) {
		ts = append(ts, tensorSpec{name: name, dtype: safetensors.BF16, shape: shape, kind: kind})
	}
	// proj adds a projection matrix [rows, cols], fp8 with block scales
	// when asked.
	proj := func(name string, rows, cols int) {
		if !fp8 {
			add(name, kindMatrix, rows, cols)
			return
		}
		ts = append(ts, tensorSpec{name: name, dtype: safetensors.F8E4M3, shape: []int{rows, cols}, kind: kindFP8},
			tensorSpec{name: name + "_scale_inv", dtype: safetensors.F32,
				shape: []int{(rows + fp8Block - 1) / fp8Block, (cols + fp8Block - 1) / fp8Block}, kind: kindScale, cols: cols})
	}
	mlp := func(p string, hid, inter int) {
		proj(p+"gate_proj.weight", inter, hid)
		proj(p+"up_proj.weight", inter, hid)
		proj(p+"down_proj.weight", hid, inter)
	}
	H := c.HiddenSize
	add("model.embed_tokens.weight", kindMatrix, c.VocabSize, H)
	for l := range c.NumLayers {
		p := engine.LayerPrefix(l)
		add(p+"input_layernorm.weight", kindNorm, H)
		add(p+"post_attention_layernorm.weight", kindNorm, H)
		a := p + "self_attn."
		switch c.ModelType {
		case "llama":
			if c.AttentionBias {
				return nil, fmt.Errorf("synth: attention_bias is not supported")
			}
			proj(a+"q_proj.weight", c.NumHeads*c.HeadDim, H)
			proj(a+"k_proj.weight", c.NumKVHeads*c.HeadDim, H)
			proj(a+"v_proj.weight", c.NumKVHeads*c.HeadDim, H)
			proj(a+"o_proj.weight", H, c.NumHeads*c.HeadDim)
			mlp(p+"mlp.", H, c.IntermediateSize)
		case "deepseek_v2", "deepseek_v3":
			qh := c.QKNopeHeadDim + c.QKRopeHeadDim
			if c.QLoraRank > 0 {
				proj(a+"q_a_proj.weight", c.QLoraRank, H)
				add(a+"q_a_layernorm.weight", kindNorm, c.QLoraRank)
				proj(a+"q_b_proj.weight", c.NumHeads*qh, c.QLoraRank)
			} else {
				proj(a+"q_proj.weight", c.NumHeads*qh, H)
			}
			proj(a+"kv_a_proj_with_mqa.weight", c.KVLoraRank+c.QKRopeHeadDim, H)
			add(a+"kv_a_layernorm.weight", kindNorm, c.KVLoraRank)
			proj(a+"kv_b_proj.weight", c.NumHeads*(c.QKNopeHeadDim+c.VHeadDim), c.KVLoraRank)
			proj(a+"o_proj.weight", H, c.NumHeads*c.VHeadDim)
			// The engine's isMoELayer rule (hub DeepseekV2/V3 modelling code).
			if c.NRoutedExperts > 0 && l >= c.FirstKDenseReplace && l%c.MoELayerFreq == 0 {
				add(p+"mlp.gate.weight", kindMatrix, c.NRoutedExperts, H)
				if c.TopKMethod == "noaux_tc" {
					ts = append(ts, tensorSpec{name: p + "mlp.gate.e_score_correction_bias", dtype: safetensors.F32,
						shape: []int{c.NRoutedExperts}, kind: kindBias})
				}
				for e := range c.NRoutedExperts {
					mlp(fmt.Sprintf("%smlp.experts.%d.", p, e), H, c.MoEIntermediateSize)
				}
				if c.NSharedExperts > 0 {
					mlp(p+"mlp.shared_experts.", H, c.MoEIntermediateSize*c.NSharedExperts)
				}
			} else {
				mlp(p+"mlp.", H, c.IntermediateSize)
			}
		default:
			return nil, fmt.Errorf("synth: model_type %q not supported (llama, deepseek_v2, deepseek_v3)", c.ModelType)
		}
	}
	add("model.norm.weight", kindNorm, H)
	add("lm_head.weight", kindMatrix, c.VocabSize, H)
	return ts, nil
}

// Params returns the parameter count and tensor bytes of a shape without
// writing anything (fp8 scales are not counted as parameters).
func Params(o Options) (params, bytes int64, err error) {
	o = o.withDefaults()
	_, cfg, err := configJSON(o)
	if err != nil {
		return 0, 0, err
	}
	ts, err := plan(cfg, o.DType == "fp8")
	if err != nil {
		return 0, 0, err
	}
	for i := range ts {
		if ts[i].kind != kindScale {
			params += ts[i].elements()
		}
		bytes += ts[i].bytes()
	}
	return params, bytes, nil
}

func (o Options) withDefaults() Options {
	if o.DType == "" {
		if sh, err := Lookup(o.Shape); err == nil {
			o.DType = sh.DefaultDType
		}
	}
	if o.ShardBytes <= 0 {
		o.ShardBytes = 4 << 30
	}
	return o
}

// Write writes the checkpoint. A cancelled ctx stops it between chunks
// (the partial shard is removed).
func Write(ctx context.Context, o Options) (*Summary, error) {
	o = o.withDefaults()
	if o.Dir == "" {
		return nil, errors.New("synth: no output directory")
	}
	cfgJSON, cfg, err := configJSON(o)
	if err != nil {
		return nil, err
	}
	ts, err := plan(cfg, o.DType == "fp8")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	if _, err := os.Stat(filepath.Join(o.Dir, "config.json")); err == nil && !o.Force {
		return nil, fmt.Errorf("synth: %s already holds a checkpoint (config.json); use another directory or force", o.Dir)
	}
	// Shards: consecutive tensors up to ShardBytes each.
	var shards [][]tensorSpec
	var cur []tensorSpec
	var curBytes, total, params, scales int64
	for _, t := range ts {
		if len(cur) > 0 && curBytes+t.bytes() > o.ShardBytes {
			shards, cur, curBytes = append(shards, cur), nil, 0
		}
		cur = append(cur, t)
		curBytes += t.bytes()
		total += t.bytes()
		if t.kind != kindScale {
			params += t.elements()
		} else {
			scales += t.elements()
		}
	}
	shards = append(shards, cur)

	sum := &Summary{Dir: o.Dir, Config: cfg, Params: params, Bytes: total, ScaleElements: scales}
	w := &writer{seed: o.Seed, progress: o.Progress, total: total}
	weightMap := map[string]string{}
	for i, sh := range shards {
		name := safetensors.SingleFileName
		if len(shards) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		}
		if err := w.writeShard(ctx, filepath.Join(o.Dir, name), sh); err != nil {
			return nil, err
		}
		for _, t := range sh {
			weightMap[t.name] = name
		}
		sum.Shards = append(sum.Shards, name)
	}
	idx := filepath.Join(o.Dir, safetensors.IndexFileName)
	if len(shards) > 1 {
		b, err := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("synth: index: %w", err)
		}
		if err := writeFile(idx, append(b, '\n')); err != nil {
			return nil, err
		}
	} else if err := os.Remove(idx); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("synth: removing a stale index: %w", err) // Force over a sharded checkpoint
	}
	gen := `{"bos_token_id": 0, "eos_token_id": 1, "do_sample": false}` + "\n"
	if err := writeFile(filepath.Join(o.Dir, "config.json"), cfgJSON); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(o.Dir, "generation_config.json"), []byte(gen)); err != nil {
		return nil, err
	}
	if err := writeTokenizer(o.Dir); err != nil {
		return nil, err
	}
	return sum, nil
}

func writeFile(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

// writeTokenizer writes DeepSeek-V3's tokenizer.json (decompressed) and
// tokenizer_config.json.
func writeTokenizer(dir string) error {
	gz, err := tokenizerFS.Open("tokenizer/tokenizer.json.gz")
	if err != nil {
		return fmt.Errorf("synth: embedded tokenizer: %w", err)
	}
	defer gz.Close()
	zr, err := gzip.NewReader(gz)
	if err != nil {
		return fmt.Errorf("synth: embedded tokenizer: %w", err)
	}
	path := filepath.Join(dir, "tokenizer.json")
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if _, err := io.Copy(f, zr); err != nil {
		f.Close()
		return fmt.Errorf("synth: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	tc, err := tokenizerFS.ReadFile("tokenizer/tokenizer_config.json")
	if err != nil {
		return fmt.Errorf("synth: embedded tokenizer config: %w", err)
	}
	return writeFile(filepath.Join(dir, "tokenizer_config.json"), tc)
}

// writer streams tensors into shard files.
type writer struct {
	seed     uint64
	progress func(done, total int64)
	done     int64
	total    int64
	bufs     [][]byte // one chunk buffer per worker, reused for every tensor
}

// chunkElems is how many elements one worker generates at a time.
const chunkElems = 1 << 20

// writeShard writes one safetensors file: the header (offsets known from
// the shapes), then each tensor generated in parallel chunks. It writes to
// path+".partial" and renames at the end, so an interrupted run leaves no
// file the loader would take for a shard.
func (w *writer) writeShard(ctx context.Context, path string, ts []tensorSpec) (err error) {
	type record struct {
		DType       safetensors.DType `json:"dtype"`
		Shape       []int             `json:"shape"`
		DataOffsets []int64           `json:"data_offsets"`
	}
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, t := range ts {
		hdr[t.name] = record{DType: t.dtype, Shape: t.shape, DataOffsets: []int64{off, off + t.bytes()}}
		off += t.bytes()
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return fmt.Errorf("synth: %s: header: %w", path, err)
	}
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, strings.Repeat(" ", pad)...)
	}
	tmp := path + ".partial"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(js)))
	bw.Write(n[:])
	bw.Write(js)
	for i := range ts {
		if err := w.writeTensor(ctx, bw, &ts[i]); err != nil {
			return fmt.Errorf("synth: %s: tensor %s: %w", path, ts[i].name, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("synth: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("synth: %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

// writeTensor generates t in chunks, GOMAXPROCS at a time, and writes them
// in order.
func (w *writer) writeTensor(ctx context.Context, out io.Writer, t *tensorSpec) error {
	g := newGenerator(w.seed, t)
	n := t.elements()
	size := int64(t.dtype.Size())
	workers := runtime.GOMAXPROCS(0)
	for len(w.bufs) < workers {
		w.bufs = append(w.bufs, make([]byte, 0, chunkElems*4)) // 4 = the widest dtype written
	}
	bufs := w.bufs
	for lo := int64(0); lo < n; lo += chunkElems * int64(workers) {
		if err := ctx.Err(); err != nil {
			return err
		}
		var wg sync.WaitGroup
		used := 0
		for k := range workers {
			clo := lo + int64(k)*chunkElems
			if clo >= n {
				break
			}
			chi := min(clo+chunkElems, n)
			bufs[k] = bufs[k][:(chi-clo)*size]
			used++
			wg.Add(1)
			go func(buf []byte, lo, hi int64) {
				defer wg.Done()
				g.fill(buf, lo, hi)
			}(bufs[k], clo, chi)
		}
		wg.Wait()
		for _, b := range bufs[:used] {
			if _, err := out.Write(b); err != nil {
				return err
			}
			w.done += int64(len(b))
		}
		if w.progress != nil {
			w.progress(w.done, w.total)
		}
	}
	return nil
}

// generator makes the values of one tensor from (seed, name, index).
type generator struct {
	t           *tensorSpec
	key         uint64
	center, amp float32
}

func newGenerator(seed uint64, t *tensorSpec) *generator {
	h := fnv.New64a()
	h.Write([]byte(t.name))
	g := &generator{t: t, key: h.Sum64() ^ seed*0x9e3779b97f4a7c15, amp: 1}
	switch t.kind {
	case kindNorm:
		g.center, g.amp = 1, 0.1
	case kindBias:
		g.amp = 0.02
	case kindMatrix:
		g.amp = float32(1 / math.Sqrt(float64(t.shape[1])))
	case kindScale:
		// The weight's dequantised amplitude is 1/sqrt(cols), as for a
		// bf16 matrix: scale = amp/448 maps e4m3's range onto it, varied
		// ±25% per block so that a wrong block index shows.
		g.center = float32(1/math.Sqrt(float64(t.cols))) / 448
		g.amp = 0.25 * g.center
	}
	return g
}

// uniform returns element i's value in [0, 1) (splitmix64, as
// engine.RandomSource).
func (g *generator) uniform(i int64) float32 {
	z := g.key + uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float32(z>>40) * (1.0 / (1 << 24))
}

// fill writes elements [lo, hi) into buf.
func (g *generator) fill(buf []byte, lo, hi int64) {
	switch g.t.dtype {
	case safetensors.F8E4M3:
		for i := lo; i < hi; i++ {
			buf[i-lo] = e4m3Nearest(448 * (2*g.uniform(i) - 1))
		}
	case safetensors.F32:
		for i := lo; i < hi; i++ {
			binary.LittleEndian.PutUint32(buf[4*(i-lo):], math.Float32bits(g.center+g.amp*(2*g.uniform(i)-1)))
		}
	default: // BF16
		for i := lo; i < hi; i++ {
			binary.LittleEndian.PutUint16(buf[2*(i-lo):], quant.F32ToBF16(g.center+g.amp*(2*g.uniform(i)-1)))
		}
	}
}

// e4m3Codes are the non-negative finite float8_e4m3fn codes sorted by
// value (0x00..0x7e; 0x7f is NaN).
var e4m3Codes = func() (c [127]float32) {
	for i := range c {
		c[i] = quant.FP8E4M3ToF32(byte(i))
	}
	return c
}()

// e4m3Nearest rounds x (|x| ≤ 448) to the nearest e4m3 code.
func e4m3Nearest(x float32) byte {
	sign := byte(0)
	if x < 0 {
		sign, x = 0x80, -x
	}
	lo, hi := 0, len(e4m3Codes)-1
	for lo < hi { // first code >= x
		mid := (lo + hi) / 2
		if e4m3Codes[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo > 0 && x-e4m3Codes[lo-1] < e4m3Codes[lo]-x {
		lo--
	}
	return sign | byte(lo)
}
