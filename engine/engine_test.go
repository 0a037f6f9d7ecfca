package engine

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/quant"
)

const storiesDir = "../testdata/stories260K"

func loadStories(t testing.TB) *Model {
	t.Helper()
	m, err := Load(storiesDir, WithThreads(2), WithDevice("cpu"))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func collect(t testing.TB, seq func(func(Token, error) bool)) ([]int, error) {
	t.Helper()
	var ids []int
	for tok, err := range seq {
		if err != nil {
			return ids, err
		}
		ids = append(ids, tok.ID)
	}
	return ids, nil
}

// TestStories260KGreedy reproduces llama2.c's greedy output from BOS.
func TestStories260KGreedy(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(storiesDir, "greedy_from_bos_256.txt"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var want []int
	for _, f := range strings.Fields(strings.Trim(lines[len(lines)-1], "[]")) {
		v, err := strconv.Atoi(f)
		require.NoError(t, err)
		want = append(want, v)
	}
	require.Len(t, want, 256)
	m := loadStories(t)
	bos, ok := m.Config().BOS()
	require.True(t, ok)
	require.Equal(t, 1, bos)
	var st Stats
	got, err := collect(t, m.GenerateIDs(context.Background(), []int{bos}, GenerateOptions{MaxTokens: 256, Stats: &st}))
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, 256, st.GeneratedTokens)
	assert.Equal(t, 1, st.PromptTokens)

	// Same ids when the session starts small and grows (8 → 16 → … → 257).
	m.genRoom = 8
	got, err = collect(t, m.GenerateIDs(context.Background(), []int{bos}, GenerateOptions{MaxTokens: 256}))
	require.NoError(t, err)
	assert.Equal(t, want, got)
	if testing.Short() {
		return
	}
	// MaxTokens 0 runs until the context is full: 511 tokens after BOS.
	got, err = collect(t, m.GenerateIDs(context.Background(), []int{bos}, GenerateOptions{}))
	require.NoError(t, err)
	assert.Len(t, got, m.Config().MaxPositionEmbeddings-1)
}

// TestPrefillChunkOption: WithPrefillChunk sets the rows of a session's
// forward pass (the CPU default is defaultChunk), a prompt in chunks of 16
// gives the logits of the default chunking, and a negative chunk is an
// error naming the option.
func TestPrefillChunkOption(t *testing.T) {
	m := loadStories(t)
	small, err := Load(storiesDir, WithThreads(2), WithDevice("cpu"), WithPrefillChunk(16))
	require.NoError(t, err)
	defer small.Close()
	ctx := context.Background()
	ids := make([]int, 70)
	for i := range ids {
		ids[i] = (i*11 + 5) % m.Config().VocabSize
	}
	s1, err := m.NewSession(2 * defaultChunk)
	require.NoError(t, err)
	assert.Equal(t, defaultChunk, s1.Chunk())
	s2, err := small.NewSession(2 * defaultChunk)
	require.NoError(t, err)
	assert.Equal(t, 16, s2.Chunk())
	want, err := s1.Prefill(ctx, ids)
	require.NoError(t, err)
	got, err := s2.Prefill(ctx, ids)
	require.NoError(t, err)
	for i := range ids {
		assert.Less(t, RelErr(got[i], want[i]), 1e-5, "position %d", i)
	}
	_, err = Load(storiesDir, WithDevice("cpu"), WithPrefillChunk(-1))
	require.ErrorContains(t, err, "WithPrefillChunk(-1)")
}

// TestChunkedPrefillMatchesSteps checks that a prompt longer than a chunk
// gives the same logits as feeding it token by token.
func TestChunkedPrefillMatchesSteps(t *testing.T) {
	m := loadStories(t)
	n := m.chunk + 37
	if testing.Short() {
		n = m.chunk + 3
	}
	ids := make([]int, n)
	for i := range ids {
		ids[i] = (i*7 + 3) % m.Config().VocabSize
	}
	ctx := context.Background()
	s1, err := m.NewSession(n)
	require.NoError(t, err)
	all, err := s1.Prefill(ctx, ids)
	require.NoError(t, err)
	require.Len(t, all, n)
	s2, err := m.NewSession(n)
	require.NoError(t, err)
	for i, id := range ids {
		lg, err := s2.Step(ctx, id)
		require.NoError(t, err)
		if e := RelErr(lg, all[i]); e > 1e-5 {
			t.Fatalf("position %d: step vs prefill rel err %g", i, e)
		}
	}
	assert.Equal(t, n, s2.Pos())
	// Last-only prefill agrees with the full one.
	s3, err := m.NewSession(n)
	require.NoError(t, err)
	last, err := s3.Last(ctx, ids)
	require.NoError(t, err)
	assert.Less(t, RelErr(last, all[n-1]), 1e-6)

	// Truncate rewinds: re-feeding a different suffix matches a fresh run.
	require.Error(t, s3.Truncate(n+1))
	require.Error(t, s3.Truncate(-1))
	require.NoError(t, s3.Truncate(5))
	alt, err := s3.Last(ctx, []int{9, 8, 7})
	require.NoError(t, err)
	s4, err := m.NewSession(n)
	require.NoError(t, err)
	fresh, err := s4.Last(ctx, append(slices.Clone(ids[:5]), 9, 8, 7))
	require.NoError(t, err)
	assert.Less(t, RelErr(alt, fresh), 1e-5)
}

func TestContextTooLong(t *testing.T) {
	m := loadStories(t)
	ctx := context.Background()
	limit := m.Config().MaxPositionEmbeddings
	_, err := m.NewSession(limit + 1)
	require.ErrorContains(t, err, "max_position_embeddings")

	s, err := m.NewSession(8)
	require.NoError(t, err)
	_, err = s.Prefill(ctx, make([]int, 9))
	require.ErrorContains(t, err, "context too long")
	_, err = s.Prefill(ctx, make([]int, 8))
	require.NoError(t, err)
	_, err = s.Step(ctx, 5)
	require.ErrorContains(t, err, "context too long")
	_, err = s.Step(ctx, -1)
	require.Error(t, err)
	_, err = s.Step(ctx, 99999)
	require.Error(t, err)

	for _, tc := range []struct {
		name   string
		prompt int
		max    int
		msg    string
	}{
		{"prompt fills context", limit, 1, "no room"},
		{"prompt+max over", 10, limit, "exceed max_position_embeddings"},
		{"negative max", 3, -1, "MaxTokens"},
		{"empty", 0, 1, "empty prompt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collect(t, m.GenerateIDs(ctx, make([]int, tc.prompt), GenerateOptions{MaxTokens: tc.max}))
			require.ErrorContains(t, err, tc.msg)
			assert.Empty(t, got)
		})
	}
	// Bad sampling options are reported, not ignored.
	_, err = collect(t, m.GenerateIDs(ctx, []int{1}, GenerateOptions{MaxTokens: 2, Sampling: SamplerOptions{Temperature: -1}}))
	require.ErrorContains(t, err, "temperature")
}

// TestGenerateCancel: cancelling stops generation at the next token.
func TestGenerateCancel(t *testing.T) {
	m := loadStories(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ids []int
	var gotErr error
	for tok, err := range m.GenerateIDs(ctx, []int{1}, GenerateOptions{MaxTokens: 100}) {
		if err != nil {
			gotErr = err
			break
		}
		ids = append(ids, tok.ID)
		if len(ids) == 3 {
			cancel()
		}
	}
	assert.Len(t, ids, 3)
	assert.True(t, errors.Is(gotErr, context.Canceled), "err = %v", gotErr)

	// An already-cancelled context fails before any token.
	ids, err := collect(t, m.GenerateIDs(ctx, []int{1}, GenerateOptions{MaxTokens: 5}))
	assert.Empty(t, ids)
	assert.ErrorIs(t, err, context.Canceled)
}

// TestGenerateStopsAtEOS: a stop id from generation_config ends the
// sequence without being yielded.
func TestGenerateStopsAtEOS(t *testing.T) {
	m := loadStories(t)
	ctx := context.Background()
	full, err := collect(t, m.GenerateIDs(ctx, []int{1}, GenerateOptions{MaxTokens: 20}))
	require.NoError(t, err)
	require.Len(t, full, 20)
	// Make the 5th greedy token a stop id.
	m2 := loadStories(t)
	m2.Config().Generation.EOSTokenIDs = IDs{full[4]}
	got, err := collect(t, m2.GenerateIDs(ctx, []int{1}, GenerateOptions{MaxTokens: 20}))
	require.NoError(t, err)
	first := 0
	for first < len(full) && full[first] != full[4] {
		first++
	}
	assert.Equal(t, full[:first], got)
}

// TestConcurrentGenerate: 8 goroutines sampling on one Model get the same
// ids as a lone run with the same seed.
func TestConcurrentGenerate(t *testing.T) {
	m := loadStories(t)
	n := 40
	if testing.Short() {
		n = 12
	}
	opts := func(i int) GenerateOptions {
		return GenerateOptions{MaxTokens: n, Sampling: SamplerOptions{Temperature: 0.9, TopP: 0.95, Seed: uint64(i)}}
	}
	ctx := context.Background()
	want := make([][]int, 8)
	for i := range want {
		var err error
		want[i], err = collect(t, m.GenerateIDs(ctx, []int{1, 403}, opts(i)))
		require.NoError(t, err)
	}
	got := make([][]int, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = collect(t, m.GenerateIDs(ctx, []int{1, 403}, opts(i)))
		}()
	}
	wg.Wait()
	for i := range got {
		require.NoError(t, errs[i])
		assert.Equal(t, want[i], got[i], "goroutine %d", i)
	}
	// Seeds select different streams: the 8 runs are not all one text (two
	// seeds may agree over a few confident tokens).
	distinct := map[string]bool{}
	for _, w := range want {
		distinct[fmt.Sprint(w)] = true
	}
	assert.Greater(t, len(distinct), 1, "different seeds should differ")
}

// writeCheckpoint writes config.json and model.safetensors into a temp dir.
func writeCheckpoint(t *testing.T, cfg map[string]any, tensors map[string]*safetensors.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644))
	header := map[string]any{}
	var data []byte
	for name, tt := range tensors {
		header[name] = map[string]any{"dtype": string(tt.DType), "shape": tt.Shape, "data_offsets": []int{len(data), len(data) + len(tt.Data)}}
		data = append(data, tt.Data...)
	}
	hb, err := json.Marshal(header)
	require.NoError(t, err)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	out = append(out, hb...)
	out = append(out, data...)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model.safetensors"), out, 0o644))
	return dir
}

func tinyConfig() map[string]any {
	return map[string]any{
		"model_type": "llama", "vocab_size": 16, "hidden_size": 8, "intermediate_size": 12,
		"num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
		"max_position_embeddings": 32, "rms_norm_eps": 1e-5, "eos_token_id": 2,
	}
}

// tinyTensors returns a valid random llama for tinyConfig.
func tinyTensors(t *testing.T) map[string]*safetensors.Tensor {
	src := RandomSource{DType: safetensors.F32, Seed: 7}
	shapes := map[string][]int{
		"model.embed_tokens.weight":                      {16, 8},
		"model.norm.weight":                              {8},
		"lm_head.weight":                                 {16, 8},
		"model.layers.0.input_layernorm.weight":          {8},
		"model.layers.0.post_attention_layernorm.weight": {8},
		"model.layers.0.self_attn.q_proj.weight":         {8, 8},
		"model.layers.0.self_attn.k_proj.weight":         {4, 8},
		"model.layers.0.self_attn.v_proj.weight":         {4, 8},
		"model.layers.0.self_attn.o_proj.weight":         {8, 8},
		"model.layers.0.mlp.gate_proj.weight":            {12, 8},
		"model.layers.0.mlp.up_proj.weight":              {12, 8},
		"model.layers.0.mlp.down_proj.weight":            {8, 12},
	}
	out := map[string]*safetensors.Tensor{}
	for name, shape := range shapes {
		tt, err := src.TensorShaped(name, shape)
		require.NoError(t, err)
		out[name] = tt
	}
	return out
}

func TestBadCheckpoints(t *testing.T) {
	ok := writeCheckpoint(t, tinyConfig(), tinyTensors(t))
	m, err := Load(ok, WithDevice("cpu"))
	require.NoError(t, err, "the unmodified tiny checkpoint must load")
	_, err = collect(t, m.GenerateIDs(context.Background(), []int{1}, GenerateOptions{MaxTokens: 4}))
	require.NoError(t, err)
	s, err := m.NewSession(4)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	_, err = s.Step(context.Background(), 1)
	require.ErrorContains(t, err, "model is closed", "a closed model's session must fail cleanly")
	require.NoError(t, m.Close(), "Close is idempotent")

	for _, tc := range []struct {
		name   string
		cfg    func(map[string]any)
		tensor func(map[string]*safetensors.Tensor)
		msgs   []string
	}{
		{name: "missing tensor", tensor: func(m map[string]*safetensors.Tensor) { delete(m, "model.layers.0.mlp.up_proj.weight") },
			msgs: []string{"model.layers.0.mlp.up_proj.weight", "not found"}},
		{name: "wrong shape", tensor: func(m map[string]*safetensors.Tensor) {
			tt := m["model.layers.0.self_attn.k_proj.weight"]
			tt.Shape = []int{8, 4}
		}, msgs: []string{"model.layers.0.self_attn.k_proj.weight", "model.safetensors", "shape [8 4]"}},
		{name: "integer weight", tensor: func(m map[string]*safetensors.Tensor) {
			m["model.layers.0.mlp.down_proj.weight"].DType = safetensors.I32
		}, msgs: []string{"model.layers.0.mlp.down_proj.weight", "I32"}},
		{name: "integer norm", tensor: func(m map[string]*safetensors.Tensor) {
			m["model.norm.weight"].DType = safetensors.I32
		}, msgs: []string{"model.norm.weight"}},
		{name: "missing lm_head", tensor: func(m map[string]*safetensors.Tensor) { delete(m, "lm_head.weight") },
			msgs: []string{"lm_head.weight"}},
		{name: "unknown model_type", cfg: func(c map[string]any) { c["model_type"] = "gpt2" },
			msgs: []string{"config.json", `"gpt2"`, "llama", "qwen2"}},
		{name: "missing model_type", cfg: func(c map[string]any) { delete(c, "model_type") }, msgs: []string{"model_type missing"}},
		{name: "zero hidden", cfg: func(c map[string]any) { c["hidden_size"] = 0 }, msgs: []string{"hidden_size"}},
		{name: "negative layers", cfg: func(c map[string]any) { c["num_hidden_layers"] = -2 }, msgs: []string{"num_hidden_layers"}},
		{name: "kv heads not dividing", cfg: func(c map[string]any) { c["num_key_value_heads"] = 3 }, msgs: []string{"num_key_value_heads"}},
		{name: "eos outside vocab", cfg: func(c map[string]any) { c["eos_token_id"] = []int{2, 99} }, msgs: []string{"eos_token_id 99"}},
		{name: "bad rope type", cfg: func(c map[string]any) { c["rope_scaling"] = map[string]any{"type": "weird", "factor": 2} }, msgs: []string{"rope_scaling.type"}},
		{name: "bad rope factor", cfg: func(c map[string]any) { c["rope_scaling"] = map[string]any{"rope_type": "linear", "factor": 0} }, msgs: []string{"rope_scaling.factor"}},
		{name: "llama3 missing fields", cfg: func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8}
		}, msgs: []string{"original_max_position_embeddings"}},
		{name: "field of wrong type", cfg: func(c map[string]any) { c["hidden_size"] = "big" }, msgs: []string{"config.json", "hidden_size"}},
		{name: "unsupported activation", cfg: func(c map[string]any) { c["hidden_act"] = "gelu" }, msgs: []string{"hidden_act"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, tensors := tinyConfig(), tinyTensors(t)
			if tc.cfg != nil {
				tc.cfg(cfg)
			}
			if tc.tensor != nil {
				tc.tensor(tensors)
			}
			dir := writeCheckpoint(t, cfg, tensors)
			m, err := Load(dir, WithDevice("cpu"))
			if err == nil {
				m.Close()
			}
			require.Error(t, err)
			t.Log(err)
			for _, s := range tc.msgs {
				assert.Contains(t, err.Error(), s)
			}
		})
	}
}

func TestConfigParsing(t *testing.T) {
	c, err := LoadConfig("../testdata/models/deepseek-v3-fp8")
	if err != nil && strings.Contains(err.Error(), "not supported") {
		t.Skip("deepseek_v3 family not registered in this build")
	}
	require.NoError(t, err)
	assert.Equal(t, 48, c.QLoraRank)
	assert.Equal(t, 32, c.KVLoraRank)
	assert.Equal(t, "noaux_tc", c.TopKMethod)
	assert.Equal(t, 2.5, c.RoutedScalingFactor)
	assert.Equal(t, []int{16, 16}, c.QuantizationConfig.WeightBlockSize)
	require.NotNil(t, c.RopeScaling)
	assert.Equal(t, "yarn", c.RopeScaling.Type)
	assert.Equal(t, 64, c.RopeScaling.OriginalMaxPositionEmbeddings)

	s, err := LoadConfig(storiesDir)
	require.NoError(t, err)
	assert.Equal(t, 8, s.HeadDim)
	assert.Equal(t, []int{2}, s.StopIDs())
	require.NotNil(t, s.Generation.Temperature)
	assert.InDelta(t, 0.8, *s.Generation.Temperature, 1e-9)
	assert.Equal(t, SamplerOptions{Temperature: 0.8, TopP: 0.9}, s.DefaultSampling())
	assert.NoError(t, s.DefaultSampling().Validate())

	// transformers v5 writes rope_parameters instead of rope_theta/rope_scaling.
	v5, err := ParseConfig("v5", []byte(`{"model_type":"llama","vocab_size":8,"hidden_size":8,"intermediate_size":8,
		"num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":16,
		"rope_parameters":{"rope_type":"linear","factor":4.0,"rope_theta":50000.0}}`))
	require.NoError(t, err)
	assert.Equal(t, 50000.0, v5.RopeTheta)
	require.NotNil(t, v5.RopeScaling)
	assert.Equal(t, "linear", v5.RopeScaling.Type)
	assert.Equal(t, 4.0, v5.RopeScaling.Factor)

	for _, tc := range []struct {
		js   string
		want IDs
	}{{`{"eos_token_id": 5}`, IDs{5}}, {`{"eos_token_id": [5, 7]}`, IDs{5, 7}}, {`{"eos_token_id": null}`, nil}} {
		var g GenerationConfig
		require.NoError(t, json.Unmarshal([]byte(tc.js), &g))
		assert.Equal(t, tc.want, g.EOSTokenIDs)
	}
}

func TestRopeFreqs(t *testing.T) {
	base := &Config{RopeTheta: 10000, MaxPositionEmbeddings: 4096}
	inv, af, err := RopeFreqs(base, 8)
	require.NoError(t, err)
	assert.Equal(t, 1.0, af)
	assert.InDeltaSlice(t, []float64{1, 0.1, 0.01, 0.001}, toF64(inv), 1e-7)

	lin := *base
	lin.RopeScaling = &RopeScaling{Type: "linear", Factor: 4}
	inv, _, err = RopeFreqs(&lin, 8)
	require.NoError(t, err)
	assert.InDeltaSlice(t, []float64{0.25, 0.025, 0.0025, 0.00025}, toF64(inv), 1e-8)

	// llama3 with original context 64: wavelength 2π < 16 kept; 2π·1000 > 64 divided by 8.
	l3 := *base
	l3.RopeScaling = &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 64}
	inv, _, err = RopeFreqs(&l3, 8)
	require.NoError(t, err)
	assert.InDelta(t, 1.0, inv[0], 1e-7)
	assert.InDelta(t, 0.001/8, inv[3], 1e-9)
	// 2π/0.1 ≈ 62.8 lies between 16 and 64: smoothed.
	smooth := (64/(2*math.Pi/0.1) - 1) / 3
	assert.InDelta(t, (1-smooth)*0.1/8+smooth*0.1, inv[1], 1e-7)

	// yarn: DeepSeek-V3-style attention factor = mscale ratio (1 when equal).
	y := *base
	y.RopeScaling = &RopeScaling{Type: "yarn", Factor: 40, OriginalMaxPositionEmbeddings: 4096, MScale: 1, MScaleAllDim: 1}
	inv, af, err = RopeFreqs(&y, 64)
	require.NoError(t, err)
	assert.Equal(t, 1.0, af)
	assert.InDelta(t, 1.0, inv[0], 1e-7, "fastest dims extrapolate")
	last := 1 / math.Pow(10000, 62.0/64) / 40
	assert.InDelta(t, last, inv[31], last*1e-6, "slowest dims interpolate")
	y.RopeScaling = &RopeScaling{Type: "yarn", Factor: 4}
	_, af, err = RopeFreqs(&y, 64)
	require.NoError(t, err)
	assert.InDelta(t, 0.1*math.Log(4)+1, af, 1e-12)

	_, _, err = RopeFreqs(base, 7)
	require.Error(t, err)
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestNewRandomModel builds a synthetic model (as benchmarks do) with int8
// weights and checks it runs and reports its size.
func TestNewRandomModel(t *testing.T) {
	cfg, err := ParseConfig("synthetic", []byte(`{"model_type":"qwen2","vocab_size":64,"hidden_size":32,"intermediate_size":48,
		"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":64,"tie_word_embeddings":true}`))
	require.NoError(t, err)
	for _, int8 := range []bool{false, true} {
		m, err := New(cfg, RandomSource{DType: safetensors.BF16, Seed: 1}, WithInt8(int8), WithThreads(2), WithDevice("cpu"))
		require.NoError(t, err)
		info := m.Info()
		assert.Equal(t, "qwen2", info.Architecture)
		assert.True(t, strings.HasPrefix(info.Backend, "cpu"), info.Backend)
		assert.Equal(t, int64(2*2*2*8*4), info.KVBytesPerTok)
		if int8 {
			assert.Positive(t, info.BytesByDType["int8"])
		} else {
			assert.Zero(t, info.BytesByDType["int8"])
			assert.Positive(t, info.BytesByDType["bf16"])
		}
		s, err := m.NewSession(16)
		require.NoError(t, err)
		lg, err := s.Prefill(context.Background(), []int{1, 2, 3})
		require.NoError(t, err)
		for _, row := range lg {
			for _, v := range row {
				require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0))
			}
		}
		require.NoError(t, m.Close())
	}
}

func TestLoadAttachesTokenizer(t *testing.T) {
	m := loadStories(t)
	tok := m.Tokenizer()
	require.NotNil(t, tok)
	assert.Equal(t, m.Config().VocabSize, tok.VocabSize())
	ids, err := tok.Encode("Once upon a time", false)
	require.NoError(t, err)
	assert.Equal(t, []int{403, 407, 261, 378}, ids)

	// LoadFS reads the same checkpoint from a file system.
	m2, err := LoadFS(os.DirFS(storiesDir), WithDevice("cpu"))
	require.NoError(t, err)
	defer m2.Close()
	require.NotNil(t, m2.Tokenizer())
	got, err := collect(t, m2.GenerateIDs(context.Background(), []int{1}, GenerateOptions{MaxTokens: 8}))
	require.NoError(t, err)
	want, err := collect(t, m.GenerateIDs(context.Background(), []int{1}, GenerateOptions{MaxTokens: 8}))
	require.NoError(t, err)
	assert.Equal(t, want, got)

	// Fixtures without tokenizer.json load with none.
	m3, err := Load("../testdata/models/qwen2", WithDevice("cpu"))
	require.NoError(t, err)
	defer m3.Close()
	assert.Nil(t, m3.Tokenizer())
}

// TestVerifyDetectsMismatch: Verify must fail a model against another
// model's reference, and report unreadable references as errors.
func TestVerifyDetectsMismatch(t *testing.T) {
	m, err := Load("../testdata/models/llama-mha", WithDevice("cpu"))
	require.NoError(t, err)
	defer m.Close()
	r, err := Verify(context.Background(), m, "../testdata/models/llama-linear-rope/reference.safetensors")
	require.NoError(t, err)
	assert.False(t, r.Passed(1e-4))
	assert.Greater(t, r.Worst, 1e-2)
	_, err = Verify(context.Background(), m, "../testdata/models/llama-mha/missing.safetensors")
	require.Error(t, err)
	_, err = Verify(context.Background(), m, "../testdata/models/llama-mha/model.safetensors")
	require.ErrorContains(t, err, "input_ids")
}

func TestLoadProgress(t *testing.T) {
	var calls int
	var last, total int64
	m, err := Load(storiesDir, WithProgress(func(d, tot int64) {
		calls++
		assert.GreaterOrEqual(t, d, last, "progress must not go backwards")
		last, total = d, tot
	}))
	require.NoError(t, err)
	defer m.Close()
	assert.Greater(t, calls, 10)
	assert.Equal(t, total, last, "progress ends at the total")
	assert.Positive(t, m.Info().Params)
}

// FuzzParseConfig: arbitrary config.json bytes give a config or an error,
// never a panic.
func FuzzParseConfig(f *testing.F) {
	for _, dir := range []string{"llama-mha", "llama-gqa-llama3rope", "qwen2-tied", "deepseek-v2-lite", "deepseek-v3-fp8"} {
		b, err := os.ReadFile(filepath.Join("../testdata/models", dir, "config.json"))
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte(`{"model_type":"llama","rope_scaling":{"type":"yarn","factor":-1}}`))
	f.Add([]byte(`{"model_type":"qwen2","num_attention_heads":0,"num_key_value_heads":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("config.json", data)
		if err != nil {
			return
		}
		// A valid config must give usable rope parameters.
		if c.ModelType == "llama" || c.ModelType == "qwen2" {
			if _, _, err := RopeFreqs(c, c.HeadDim-c.HeadDim%2+2); err != nil {
				t.Fatalf("valid config, rope error: %v", err)
			}
		}
	})
}

func TestRandomSourceDeterministic(t *testing.T) {
	shape := []int{300, 700} // large enough to fill in parallel
	a, err := RandomSource{DType: safetensors.BF16, Seed: 3}.TensorShaped("w", shape)
	require.NoError(t, err)
	b, err := RandomSource{DType: safetensors.BF16, Seed: 3}.TensorShaped("w", shape)
	require.NoError(t, err)
	c, err := RandomSource{DType: safetensors.BF16, Seed: 4}.TensorShaped("w", shape)
	require.NoError(t, err)
	assert.Equal(t, a.Data, b.Data)
	assert.NotEqual(t, a.Data, c.Data)
	f, err := a.Float32()
	require.NoError(t, err)
	bound := 1 / math.Sqrt(700) * 1.01
	var mean float64
	for i, v := range f {
		if math.Abs(float64(v)) > bound {
			t.Fatalf("value %d = %g outside ±%g", i, v, bound)
		}
		mean += float64(v)
	}
	assert.InDelta(t, 0, mean/float64(len(f)), bound/50)
	_, err = RandomSource{DType: safetensors.I8}.TensorShaped("w", shape)
	require.Error(t, err)
}

// TestMixedDTypeFusedParts: fused q|k|v with parts of different dtypes are
// widened to f32 and give the same result as the all-f32 checkpoint (up to
// the f16 rounding of the converted part).
func TestMixedDTypeFusedParts(t *testing.T) {
	tensors := tinyTensors(t)
	ref, err := Load(writeCheckpoint(t, tinyConfig(), tensors), WithDevice("cpu"))
	require.NoError(t, err)
	defer ref.Close()
	k := tensors["model.layers.0.self_attn.k_proj.weight"]
	f, err := k.Float32()
	require.NoError(t, err)
	h := make([]byte, 2*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint16(h[2*i:], quant.F32ToF16(v))
	}
	k.DType, k.Data = safetensors.F16, h
	mixed, err := Load(writeCheckpoint(t, tinyConfig(), tensors), WithDevice("cpu"))
	require.NoError(t, err)
	defer mixed.Close()
	ctx := context.Background()
	ids := []int{1, 5, 9, 3}
	s1, err := ref.NewSession(8)
	require.NoError(t, err)
	a, err := s1.Prefill(ctx, ids)
	require.NoError(t, err)
	s2, err := mixed.NewSession(8)
	require.NoError(t, err)
	b, err := s2.Prefill(ctx, ids)
	require.NoError(t, err)
	for i := range a {
		e := RelErr(b[i], a[i])
		assert.Less(t, e, 1e-2, "position %d", i)
		if i > 0 { // position 0 attends only to itself: keys do not matter
			assert.Positive(t, e, "the f16 part must actually be used")
		}
	}
}
