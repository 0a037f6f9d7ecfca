//go:build linux && cgo

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/sample"
	"github.com/deepseek-go/deepseek-go/internal/testutil"
	"github.com/deepseek-go/deepseek-go/kernels"
)

// sampleRowParams are the settings the rows of TestSampleRows cycle
// through: greedy with and without a penalty, and every filter.
var sampleRowParams = []kernels.SampleParams{
	{},
	{RepeatPenalty: 1.5},
	{Temperature: 1},
	{Temperature: 0.7, TopK: 40},
	{Temperature: 1, TopP: 0.9},
	{Temperature: 1, MinP: 0.05},
	{Temperature: 1.3, TopK: 50, TopP: 0.95, MinP: 0.02, RepeatPenalty: 1.3},
	{Temperature: 0.9, TopK: 1 << 30, TopP: 0.99, RepeatPenalty: 0.8}, // top-k past the row: off
	{Temperature: 1, TopK: 1},
	{Temperature: 0.6, TopP: 0.5, RepeatPenalty: 2},
}

// TestSampleRows: SampleRows gives, for every row, exactly the id Sample
// gives for that row's logits, history, settings and variate (the same
// kernels, a grid row per sampled row), over 1, 3 and 17 rows of mixed
// settings and histories, logits rows out of order and repeated, and a
// vocabulary large enough that the rows run in several scratch groups.
// Against the host rules (engine/sample.Pick): greedy rows agree exactly;
// drawn rows pick a token the host filters allow and the host's own pick
// but for draws within rounding of a boundary (the exponentials differ,
// as in engine's TestCUDASampler).
func TestSampleRows(t *testing.T) {
	g := newGPU(t, Options{})
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 5))
	drawn, differ := 0, 0
	for _, n := range []int{7, 1000, 32000, 600000} {
		for _, nrows := range []int{1, 3, 17} {
			if n == 600000 && nrows != 17 {
				continue // the several-groups case: 17 rows, groups of 9
			}
			t.Run(fmt.Sprintf("n=%d/rows=%d", n, nrows), func(t *testing.T) {
				const off = 5
				lrows := nrows + 2
				x := make([]float32, off+lrows*n)
				for i := range lrows {
					copy(x[off+i*n:off+(i+1)*n], testutil.LogitsRow(r, n, []float64{0.5, 3}[i%2]))
				}
				buf, err := g.Alloc(len(x))
				require.NoError(t, err)
				require.NoError(t, g.Upload(buf, 0, x))
				rows := make([]kernels.SampleRow, nrows)
				for i := range rows {
					hist := make([]int, r.IntN(80))
					for j := range hist {
						hist[j] = r.IntN(n+20) - 10 // some outside the vocabulary
					}
					rows[i] = kernels.SampleRow{Row: (i * 5) % lrows, History: hist,
						Params: sampleRowParams[(i+nrows)%len(sampleRowParams)], U: r.Float64()}
				}
				if nrows > 1 {
					rows[nrows-1].Row = rows[0].Row // one logits row sampled twice
				}
				got := make([]int32, nrows)
				require.NoError(t, g.SampleRows(got, buf, off, n, rows))
				for i, sr := range rows {
					one, err := g.Sample(buf, off+sr.Row*n, n, sr.History, sr.Params, sr.U)
					require.NoError(t, err)
					assert.Equal(t, one, int(got[i]), "row %d (%+v): SampleRows and Sample", i, sr.Params)
					logits := x[off+sr.Row*n : off+(sr.Row+1)*n]
					host := sample.Pick(logits, sr.History, sr.Params, sr.U)
					if sr.Params.Temperature == 0 {
						assert.Equal(t, host, int(got[i]), "row %d (%+v): greedy pick against the host", i, sr.Params)
						continue
					}
					s, err := sample.New(sample.Options{Temperature: sr.Params.Temperature, TopK: sr.Params.TopK,
						TopP: sr.Params.TopP, MinP: sr.Params.MinP, RepeatPenalty: sr.Params.RepeatPenalty})
					require.NoError(t, err)
					assert.True(t, s.Candidates(logits, sr.History)[int(got[i])], "row %d (%+v): %d outside the host's filters", i, sr.Params, got[i])
					drawn++
					if host != int(got[i]) {
						differ++
					}
				}
			})
		}
	}
	t.Logf("%d of %d drawn rows differ from the host's pick", differ, drawn)
	assert.LessOrEqual(t, differ, 1, "device and host draws agree but for a boundary case")
}

// TestSampleRowsErrors: bad calls name what is wrong and issue nothing.
func TestSampleRowsErrors(t *testing.T) {
	g := newGPU(t, Options{})
	buf, err := g.Alloc(20)
	require.NoError(t, err)
	require.NoError(t, g.Upload(buf, 0, make([]float32, 20)))
	dst := make([]int32, 2)
	assert.ErrorContains(t, g.SampleRows(dst[:1], buf, 0, 10, make([]kernels.SampleRow, 2)), "1 ids for 2 rows")
	assert.ErrorContains(t, g.SampleRows(dst, buf, 0, 10, []kernels.SampleRow{{}, {Params: kernels.SampleParams{TopP: 2}}}), "row 1: top-p")
	assert.ErrorContains(t, g.SampleRows(dst, buf, 0, 10, []kernels.SampleRow{{}, {Row: 2}}), "row 1: logits row 2")
	assert.ErrorContains(t, g.SampleRows(dst, buf, 1, 10, []kernels.SampleRow{{}, {Row: 1}}), "logits row 1")
	assert.ErrorContains(t, g.SampleRows(dst, buf, 15, 10, []kernels.SampleRow{{}, {}}), "buffer of 20")
	require.NoError(t, g.SampleRows(nil, buf, 0, 10, nil))
	require.NoError(t, g.SampleRows(dst, buf, 0, 10, []kernels.SampleRow{{}, {Row: 1}}))
	assert.Equal(t, []int32{0, 0}, dst, "all-equal rows: the first id")
}

// BenchmarkSampleRows: one decode step's sampling of 64 rows of a
// 129,280-entry vocabulary (DeepSeek-V3's) with temperature, top-p and a
// repetition penalty over 512 ids: one SampleRows against 64 Sample calls
// (each its own launches and download).
func BenchmarkSampleRows(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("no GPU: %v", err)
	}
	g, err := New(Options{})
	require.NoError(b, err)
	defer g.Close()
	const rows, n = 64, 129280
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, rows*n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * 2)
	}
	buf, err := g.Alloc(len(x))
	require.NoError(b, err)
	require.NoError(b, g.Upload(buf, 0, x))
	sr := make([]kernels.SampleRow, rows)
	for i := range sr {
		hist := make([]int, 512)
		for j := range hist {
			hist[j] = r.IntN(n)
		}
		sr[i] = kernels.SampleRow{Row: i, History: hist, Params: kernels.SampleParams{Temperature: 0.8, TopP: 0.95, RepeatPenalty: 1.1}, U: r.Float64()}
	}
	dst := make([]int32, rows)
	b.Run("batched", func(b *testing.B) {
		for b.Loop() {
			require.NoError(b, g.SampleRows(dst, buf, 0, n, sr))
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/step")
	})
	b.Run("per-row", func(b *testing.B) {
		for b.Loop() {
			for i, s := range sr {
				id, err := g.Sample(buf, s.Row*n, n, s.History, s.Params, s.U)
				require.NoError(b, err)
				dst[i] = int32(id)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/step")
	})
}
