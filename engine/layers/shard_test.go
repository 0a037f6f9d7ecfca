package layers

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGQAShard pins how query and KV heads split over shards: evenly when
// the shards divide them, one replicated KV head per shard when there are
// fewer KV heads than shards, an error otherwise.
func TestGQAShard(t *testing.T) {
	for _, tc := range []struct {
		name               string
		h, kvh, rank, size int
		q, kv              RowRange
		wantErr            string
	}{
		{name: "one shard", h: 8, kvh: 2, rank: 0, size: 1, q: RowRange{0, 8}, kv: RowRange{0, 2}},
		{name: "kv split", h: 8, kvh: 4, rank: 1, size: 2, q: RowRange{4, 8}, kv: RowRange{2, 4}},
		{name: "kv replicated", h: 8, kvh: 2, rank: 3, size: 4, q: RowRange{6, 8}, kv: RowRange{1, 2}},
		{name: "heads uneven", h: 6, kvh: 2, rank: 0, size: 4, wantErr: "num_attention_heads 6 is not divisible by 4 shards"},
		{name: "kv neither", h: 12, kvh: 4, rank: 0, size: 6, wantErr: "num_key_value_heads 4 neither divides nor is a multiple of 6 shards"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, kv, err := GQAShard(tc.h, tc.kvh, tc.rank, tc.size)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.q, q, "query heads")
			assert.Equal(t, tc.kv, kv, "KV heads")
		})
	}
}

// TestSplitRange: the ranks' shares tile [0, n) in order.
func TestSplitRange(t *testing.T) {
	for _, n := range []int{0, 1, 7, 64} {
		for size := 1; size <= 5; size++ {
			next := 0
			for r := range size {
				s := SplitRange(n, r, size)
				require.Equal(t, next, s.Lo, "n %d rank %d of %d", n, r, size)
				require.GreaterOrEqual(t, s.Len(), 0)
				next = s.Hi
			}
			require.Equal(t, n, next, "n %d over %d", n, size)
		}
	}
	assert.Equal(t, RowRange{6, 9}, RowRange{2, 3}.Times(3))
}
