package engine

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels/cpu"
	"github.com/deepseek-go/deepseek-go/kernels/cpu/simd"
	"github.com/deepseek-go/deepseek-go/quant"
)

// greedyIDs reads the 256 token ids on the last line of
// greedy_from_bos_256.txt ("[id id ...]").
func greedyIDs(t *testing.T) []int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "stories260K", "greedy_from_bos_256.txt"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	last := strings.Trim(strings.TrimSpace(lines[len(lines)-1]), "[]")
	var ids []int
	for _, f := range strings.FieldsFunc(last, func(r rune) bool { return r == ' ' || r == ',' }) {
		id, err := strconv.Atoi(f)
		require.NoError(t, err, "greedy id %q", f)
		ids = append(ids, id)
	}
	require.Len(t, ids, 256)
	return ids
}

// softmax64 returns log-probabilities of logits in float64.
func logSoftmax64(logits []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range logits {
		s += math.Exp(float64(v) - mx)
	}
	ls := math.Log(s) + mx
	out := make([]float64, len(logits))
	for i, v := range logits {
		out[i] = float64(v) - ls
	}
	return out
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// TestInt8Stories260K measures int8 quality on a real trained model, the
// yardstick int8 is judged by (issue 13 withdrew the fixtures' 3e-2 bound):
// teacher-forced over the 256 greedy tokens from BOS, int8 must not get
// worse than when that was decided — top-1 agreement with fp32 at least
// 250/256 (97.66%) and mean KL(fp32 ‖ int8) under 1e-3 nats (9.46e-4 then).
func TestInt8Stories260K(t *testing.T) {
	dir := filepath.Join("..", "testdata", "stories260K")
	ids := greedyIDs(t)
	ctx := context.Background()
	logits := map[bool][][]float32{}
	for _, int8 := range []bool{false, true} {
		m, err := Load(dir, WithDevice("cpu"), WithThreads(2), WithInt8(int8))
		require.NoError(t, err)
		bos, ok := m.Config().BOS()
		require.True(t, ok, "stories260K has a BOS id")
		s, err := m.NewSession(len(ids) + 1)
		require.NoError(t, err)
		lg, err := s.Prefill(ctx, append([]int{bos}, ids[:len(ids)-1]...))
		require.NoError(t, err)
		require.Len(t, lg, len(ids))
		logits[int8] = lg
		require.NoError(t, m.Close())
	}
	var agree, agreeRef, fpRef int
	var kl, maxKL float64
	for i := range ids {
		f, q := logits[false][i], logits[true][i]
		if argmax(f) == argmax(q) {
			agree++
		}
		if argmax(q) == ids[i] {
			agreeRef++
		}
		if argmax(f) == ids[i] {
			fpRef++
		}
		lf, lq := logSoftmax64(f), logSoftmax64(q)
		var d float64
		for j := range lf {
			d += math.Exp(lf[j]) * (lf[j] - lq[j])
		}
		kl += d
		maxKL = math.Max(maxKL, d)
	}
	n := float64(len(ids))
	t.Logf("stories260K int8 vs fp32, teacher-forced over %d tokens: top-1 agreement %.2f%% (%d/%d), mean KL %.3g nats (max %.3g); "+
		"greedy-file agreement fp32 %d/%d, int8 %d/%d", len(ids), 100*float64(agree)/n, agree, len(ids), kl/n, maxKL, fpRef, len(ids), agreeRef, len(ids))
	assert.GreaterOrEqual(t, agree, 250, "top-1 agreement with fp32 (of 256)")
	assert.Less(t, kl/n, 1e-3, "mean KL")
}

// TestInt8Fixtures compares int8 prefill logits of every fixture with the
// transformers reference (‖int8−ref‖/‖ref‖ per position).
//
// The old target of 3e-2 at every position was withdrawn (issue 13): these tiny
// random-weight nets (hidden 64) amplify the ≈0.8% error of one int8 matmul
// (0.6% from per-row weights alone, measured) to 3–8% on llama/qwen2, and
// DeepSeek-V3's sigmoid routing flips experts at some positions (up to
// 0.8). The assertion is therefore a regression guard on the median
// position (a broken kernel gives ≈1; fp8-sourced V3 has median 0.16); the
// worst values are logged.
func TestInt8Fixtures(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("..", "testdata", "models"))
	require.NoError(t, err)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		t.Run(e.Name(), func(t *testing.T) {
			dir := filepath.Join("..", "testdata", "models", e.Name())
			cfg, err := LoadConfig(dir)
			require.NoError(t, err)
			if _, ok := lookupFamily(cfg.ModelType); !ok {
				t.Skipf("model_type %q not registered in this build", cfg.ModelType)
			}
			m, err := Load(dir, WithDevice("cpu"), WithThreads(2), WithInt8(true))
			require.NoError(t, err)
			defer m.Close()
			require.True(t, m.Info().Int8)
			rep, err := Verify(context.Background(), m, filepath.Join(dir, "reference.safetensors"))
			require.NoError(t, err)
			errs := slices.Clone(rep.PrefillErr)
			slices.Sort(errs)
			median, worst := errs[len(errs)/2], errs[len(errs)-1]
			t.Logf("%s int8: prefill rel err median %.3g worst %.3g (target 3e-2 met: %v), greedy match %d/%d",
				e.Name(), median, worst, worst < 3e-2, rep.Match, len(rep.RefIDs))
			assert.Less(t, median, 0.25)
		})
	}
}

// TestKernelPathsStories260K runs the trained model on every float and
// int8 kernel path this CPU supports (forced through cpu.NewWithKernels):
// fp32 must reproduce all 256 greedy tokens teacher-forced, int8 ≥ 95%.
func TestKernelPathsStories260K(t *testing.T) {
	dir := filepath.Join("..", "testdata", "stories260K")
	ids := greedyIDs(t)
	ik := quant.Int8Supported()
	for i, k := range simd.Supported() {
		q := ik[min(i, len(ik)-1)]
		for _, int8 := range []bool{false, true} {
			be := cpu.NewWithKernels(2, k, q)
			t.Run(fmt.Sprintf("%s/int8=%v", be.Name(), int8), func(t *testing.T) {
				defer be.Close()
				m, err := Load(dir, WithBackend(be), WithInt8(int8))
				require.NoError(t, err)
				defer m.Close()
				bos, _ := m.Config().BOS()
				s, err := m.NewSession(len(ids) + 1)
				require.NoError(t, err)
				lg, err := s.Prefill(context.Background(), append([]int{bos}, ids[:len(ids)-1]...))
				require.NoError(t, err)
				match := 0
				for i, l := range lg {
					if argmax(l) == ids[i] {
						match++
					}
				}
				if int8 {
					assert.GreaterOrEqual(t, match, 243, "int8 top-1 vs greedy ids (≥ 95%%)")
				} else {
					assert.Equal(t, len(ids), match, "fp32 greedy ids")
				}
			})
		}
	}
}

// TestVerifyFixturesAllPaths: every fixture (all families and storage
// dtypes) passes Verify at 1e-4 on every float kernel path, not only the
// one cpu.New picks.
func TestVerifyFixturesAllPaths(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("..", "testdata", "models"))
	require.NoError(t, err)
	for _, k := range simd.Supported() {
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			dir := filepath.Join("..", "testdata", "models", e.Name())
			cfg, err := LoadConfig(dir)
			require.NoError(t, err)
			if _, ok := lookupFamily(cfg.ModelType); !ok {
				continue
			}
			t.Run(k.Name+"/"+e.Name(), func(t *testing.T) {
				be := cpu.NewWithKernels(2, k, nil)
				defer be.Close()
				m, err := Load(dir, WithBackend(be))
				require.NoError(t, err)
				defer m.Close()
				r, err := Verify(context.Background(), m, filepath.Join(dir, "reference.safetensors"))
				require.NoError(t, err)
				assert.True(t, r.Passed(1e-4), "worst %.3g at %s, greedy %d/%d", r.Worst, r.WorstAt, r.Match, len(r.RefIDs))
			})
		}
	}
}
