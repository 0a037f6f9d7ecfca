package synth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/internal/testutil"
	"github.com/deepseek-go/deepseek-go/quant"
)

// TestTinyShapesLoadAndGenerate: engine.Load accepts the written
// checkpoints (sharded with an index, and single-file), with the V3
// tokenizer, and generates.
func TestTinyShapesLoadAndGenerate(t *testing.T) {
	for _, tc := range []struct {
		shape, dtype string
		shardBytes   int64
		wantShards   int
	}{
		{"tiny-llama", "bf16", 8 << 20, 3},
		{"tiny-llama", "fp8", 0, 1},
		{"tiny-v3", "fp8", 8 << 20, 3},
		{"tiny-v3", "bf16", 0, 1},
	} {
		t.Run(tc.shape+"-"+tc.dtype, func(t *testing.T) {
			dir := t.TempDir()
			sum, err := Write(context.Background(), Options{Shape: tc.shape, Dir: dir, Seed: 7, DType: tc.dtype, ShardBytes: tc.shardBytes})
			require.NoError(t, err)
			assert.Len(t, sum.Shards, tc.wantShards)
			_, err = os.Stat(filepath.Join(dir, safetensors.IndexFileName))
			assert.Equal(t, tc.wantShards > 1, err == nil, "index.json iff sharded")

			m, err := engine.Load(dir, engine.WithDevice("cpu"), engine.WithThreads(1))
			require.NoError(t, err)
			defer m.Close()
			assert.Equal(t, VocabSize, m.Config().VocabSize)
			// The loader counts fp8 block scales as parameters too.
			assert.Equal(t, sum.Params+sum.ScaleElements, m.Info().Params, "the loader counts the parameters we wrote")
			if tc.dtype == "fp8" {
				assert.Positive(t, sum.ScaleElements)
			}
			tok := m.Tokenizer()
			require.NotNil(t, tok, "tokenizer.json loaded")
			ids, err := tok.Encode("Hello, world", true)
			require.NoError(t, err)
			assert.Equal(t, 0, ids[0], "V3's BOS")
			var got []int
			for tk, err := range m.GenerateIDs(context.Background(), ids, engine.GenerateOptions{MaxTokens: 4}) {
				require.NoError(t, err)
				got = append(got, tk.ID)
			}
			assert.NotEmpty(t, got)
			for _, id := range got {
				assert.True(t, id >= 0 && id < VocabSize)
			}
		})
	}
}

// TestDeterministic: same seed, same bytes, whatever the shard size;
// another seed, other weights.
func TestDeterministic(t *testing.T) {
	write := func(seed uint64, shard int64) string {
		dir := t.TempDir()
		_, err := Write(context.Background(), Options{Shape: "tiny-v3", Dir: dir, Seed: seed, ShardBytes: shard})
		require.NoError(t, err)
		return dir
	}
	a, b, c, d := write(1, 8<<20), write(1, 8<<20), write(1, 0), write(2, 0)
	entries, err := os.ReadDir(a)
	require.NoError(t, err)
	for _, e := range entries {
		assert.Equal(t, fileHash(t, filepath.Join(a, e.Name())), fileHash(t, filepath.Join(b, e.Name())), e.Name())
	}
	tensors := func(dir string) map[string]string {
		ck, err := safetensors.Open(dir)
		require.NoError(t, err)
		defer ck.Close()
		out := map[string]string{}
		for _, n := range ck.Names() {
			tt, err := ck.Tensor(n)
			require.NoError(t, err)
			h := sha256.Sum256(tt.Data)
			out[n] = hex.EncodeToString(h[:])
		}
		return out
	}
	ta, tc, td := tensors(a), tensors(c), tensors(d)
	assert.Equal(t, ta, tc, "sharding does not change the weights")
	same := 0
	for n, h := range ta {
		if td[n] == h {
			same++
		}
	}
	assert.Zero(t, same, "seed 2 changes every tensor")
}

func fileHash(t *testing.T, path string) string {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// TestFP8Layout: projections are float8_e4m3fn with float32 scales per
// 128×128 block (partial edge blocks rounded up), the dequantised values
// have the bf16 matrices' amplitude, and the rest stays bf16 (f32 for the
// routing bias) as in DeepSeek-V3's checkpoint.
func TestFP8Layout(t *testing.T) {
	dir := t.TempDir()
	_, err := Write(context.Background(), Options{Shape: "tiny-v3", Dir: dir, Seed: 3})
	require.NoError(t, err)
	var cfg struct {
		QuantizationConfig struct {
			QuantMethod     string `json:"quant_method"`
			WeightBlockSize []int  `json:"weight_block_size"`
		} `json:"quantization_config"`
	}
	testutil.DecodeJSONFile(t, filepath.Join(dir, "config.json"), &cfg)
	assert.Equal(t, "fp8", cfg.QuantizationConfig.QuantMethod)
	assert.Equal(t, []int{128, 128}, cfg.QuantizationConfig.WeightBlockSize)

	ck, err := safetensors.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	dtypes := func(name string) safetensors.DType {
		tt, err := ck.Tensor(name)
		require.NoError(t, err, name)
		return tt.DType
	}
	// kv_b_proj of tiny-v3: [4·(16+16), 32] = [128, 32]; q_b_proj [4·24, 48] = [96, 48].
	for _, tc := range []struct {
		name       string
		rows, cols int
	}{
		{"model.layers.0.self_attn.kv_b_proj.weight", 128, 32},
		{"model.layers.0.mlp.down_proj.weight", 64, 160},
		{"model.layers.1.mlp.experts.7.up_proj.weight", 32, 64},
	} {
		w, err := ck.Tensor(tc.name)
		require.NoError(t, err)
		assert.Equal(t, safetensors.F8E4M3, w.DType)
		assert.Equal(t, []int{tc.rows, tc.cols}, w.Shape)
		s, err := ck.Tensor(tc.name + "_scale_inv")
		require.NoError(t, err)
		assert.Equal(t, safetensors.F32, s.DType)
		assert.Equal(t, []int{(tc.rows + 127) / 128, (tc.cols + 127) / 128}, s.Shape)
		scale, err := s.Float32()
		require.NoError(t, err)
		amp := 1 / math.Sqrt(float64(tc.cols))
		var maxAbs float64
		for _, code := range w.Data {
			maxAbs = max(maxAbs, math.Abs(float64(quant.FP8E4M3ToF32(code)*scale[0])))
		}
		assert.InDelta(t, amp, maxAbs, 0.26*amp, "%s: dequantised amplitude", tc.name)
	}
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.1.mlp.gate.weight"} {
		assert.Equal(t, safetensors.BF16, dtypes(name), name)
	}
	assert.Equal(t, safetensors.F32, dtypes("model.layers.1.mlp.gate.e_score_correction_bias"))
}

func TestE4M3Nearest(t *testing.T) {
	for _, tc := range []struct {
		x    float32
		want float32
	}{
		{0, 0}, {448, 448}, {-448, -448}, {1, 1}, {1.06, 1}, {1.07, 1.125}, {-0.3, -0.3125}, {0.001, 0.001953125},
	} {
		assert.Equal(t, tc.want, quant.FP8E4M3ToF32(e4m3Nearest(tc.x)), "x=%v", tc.x)
	}
}

// TestRealWidths: the full-size shapes have the published models'
// parameter counts once the vocabulary is put back to the model's own.
func TestRealWidths(t *testing.T) {
	for _, tc := range []struct {
		shape  string
		layers int
		want   float64 // parameters with the native vocabulary
	}{
		{"deepseek-coder-1.3b", 0, 1.346e9},
		{"deepseek-llm-7b", 0, 6.910e9},
		{"deepseek-v2-lite", 0, 15.706e9},
		// The V3 slice: 3 dense + 1 MoE layer of the 671B model.
		{"deepseek-v3-slice", 0, 15.1e9},
	} {
		t.Run(tc.shape, func(t *testing.T) {
			sh, err := Lookup(tc.shape)
			require.NoError(t, err)
			params, bytes, err := Params(Options{Shape: tc.shape})
			require.NoError(t, err)
			h := sh.Config["hidden_size"].(int)
			native := float64(params) - 2*float64(VocabSize-sh.NativeVocab)*float64(h)
			assert.InDelta(t, tc.want, native, 0.01*tc.want, "%.4g params", native)
			assert.Greater(t, bytes, params, "bf16 or fp8 + bf16 embeddings")
		})
	}
	// 61 layers of the V3 slice are the 671B main model (the 14B MTP
	// module comes on top in the hub checkpoint).
	params, _, err := Params(Options{Shape: "deepseek-v3-slice", Layers: 61})
	require.NoError(t, err)
	assert.InDelta(t, 671e9, float64(params), 0.01*671e9)
}

// TestStreamsToDisk: writing does not hold the model in memory: a
// checkpoint several times the chunk buffers allocates far less than its
// size.
func TestStreamsToDisk(t *testing.T) {
	dir := t.TempDir()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sum, err := Write(context.Background(), Options{Shape: "tiny-llama", Dir: dir, Seed: 1, Layers: 24})
	require.NoError(t, err)
	runtime.ReadMemStats(&after)
	alloc := int64(after.TotalAlloc - before.TotalAlloc)
	tokenizerBytes := int64(8 << 20) // the embedded tokenizer's decompression
	chunks := int64(runtime.GOMAXPROCS(0)) * chunkElems * 4
	t.Logf("wrote %d bytes, allocated %d", sum.Bytes, alloc)
	assert.Less(t, alloc, chunks+tokenizerBytes+(4<<20))
	assert.Greater(t, sum.Bytes, 2*chunks, "the model must outsize the buffers for this test to mean anything")
}

func TestOptionErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Shape: "nope", Dir: dir}, `unknown shape "nope"`},
		{Options{Shape: "tiny-llama", Dir: dir, DType: "int4"}, `dtype "int4"`},
		{Options{Shape: "tiny-llama", Dir: dir, Layers: -1}, "negative"},
		{Options{Shape: "tiny-llama"}, "no output directory"},
	} {
		_, err := Write(context.Background(), tc.o)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err := Write(context.Background(), Options{Shape: "tiny-llama", Dir: dir})
	require.NoError(t, err)
	_, err = Write(context.Background(), Options{Shape: "tiny-llama", Dir: dir})
	assert.ErrorContains(t, err, "already holds a checkpoint")
	_, err = Write(context.Background(), Options{Shape: "tiny-llama", Dir: dir, Force: true, ShardBytes: 8 << 20})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Write(ctx, Options{Shape: "tiny-llama", Dir: t.TempDir()})
	assert.ErrorIs(t, err, context.Canceled)
}

func TestEmbeddedTokenizerMatchesRepository(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, writeTokenizer(dir))
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		want, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tokenizers", "deepseek-v3", name))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.True(t, slices.Equal(want, got), "%s differs from testdata/tokenizers/deepseek-v3", name)
	}
}
