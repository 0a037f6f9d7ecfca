//go:build linux && cgo

package cuda

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEntryNames checks that the kernel list New loads is read from the
// committed PTX: every launched kernel family is there, and names stop at
// the parameter list.
func TestEntryNames(t *testing.T) {
	names := entryNames(ptxImage)
	require.Contains(t, names, "gemv_bf16_1")
	require.Contains(t, names, "attn_split_paged_f16")
	require.Contains(t, names, "sample_logits")
	for _, n := range names {
		require.NotContains(t, n, "(")
		require.NotContains(t, n, " ")
	}
	require.Equal(t, []string{"a", "b_c"}, entryNames([]byte("// x\n.visible .entry a(\n\t.param .u64 p\n)\n.visible .entry b_c(\n.func f(\n")))
}
