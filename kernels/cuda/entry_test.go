//go:build linux && cgo

package cuda

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEntryNames checks that the kernel list New loads is read from the
// committed PTX: every launched kernel family is there, names stop at the
// parameter list, and every kernel waits for its predecessor (PDL_ENTRY),
// so each may take programmatic dependent launch.
func TestEntryNames(t *testing.T) {
	var names []string
	for _, e := range entries(ptxImage) {
		names = append(names, e.name)
		require.True(t, e.pdl, "kernel %s does not start with PDL_ENTRY (griddepcontrol.wait)", e.name)
	}
	require.Contains(t, names, "gemv_bf16_1")
	require.Contains(t, names, "attn_split_paged_f16")
	require.Contains(t, names, "sample_logits")
	for _, n := range names {
		require.NotContains(t, n, "(")
		require.NotContains(t, n, " ")
	}
	require.Equal(t, []entry{{"a", false}, {"b_c", true}},
		entries([]byte("// x\n.visible .entry a(\n\t.param .u64 p\n)\n{\n}\n.visible .entry b_c(\n)\n{\n\t// begin inline asm\n\tgriddepcontrol.wait;\n}\n")))
}
