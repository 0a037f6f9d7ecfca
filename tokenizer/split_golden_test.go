package tokenizer

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSplitGolden compares the Split scanners with Python's `regex` module
// (backtracking with real look-ahead, as Oniguruma) on random strings of
// tricky characters; see testdata/gen_split_golden.py.
func TestSplitGolden(t *testing.T) {
	data, err := os.ReadFile("testdata/split-golden.json")
	require.NoError(t, err)
	var g struct {
		Patterns map[string]string `json:"patterns"`
		Cases    []struct {
			Pattern string   `json:"pattern"`
			Text    string   `json:"text"`
			Pieces  []string `json:"pieces"`
		} `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(data, &g))
	require.Len(t, g.Patterns, 6)
	splitters := map[string]preSplit{}
	for name, pat := range g.Patterns {
		m, err := newRegexMatcher(pat)
		require.NoError(t, err, name)
		splitters[name] = preSplit{m: m, behavior: behaviorIsolated}
	}
	// The known patterns must have hit the hand-written scanners.
	for _, name := range []string{"deepseek_v3_digits", "deepseek_v3_cjk", "deepseek_v3_main", "qwen2", "llama3"} {
		_, ok := splitters[name].m.(scanMatcher)
		assert.True(t, ok, name)
	}
	bad := 0
	for _, c := range g.Cases {
		want := c.Pieces
		if want == nil {
			want = []string{}
		}
		if !assert.Equal(t, want, collect(splitters[c.Pattern], c.Text), "%s on %q", c.Pattern, c.Text) {
			if bad++; bad > 10 {
				t.FailNow()
			}
		}
	}
}
