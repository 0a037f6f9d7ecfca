package main

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInfoFP8 checks that info lists resident bytes by dtype with fp8 kept
// as fp8 (the fixture's 190,464 fp8 values less kv_b_proj's 12,288, which
// the absorbed MLA path widens: ≈ 177 KiB with the scales, not 4× that),
// and sizes CUDA, which keeps fp8 too, like the CPU.
func TestInfoFP8(t *testing.T) {
	code, stdout, stderr := cli(t, "", "info", "-m", "../../testdata/models/deepseek-v3-fp8")
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, regexp.MustCompile(`weights +[0-9.]+ KiB resident on the CPU \(bf16 [0-9.]+ KiB, f32 [0-9.]+ KiB, fp8 17[0-9.]+ KiB\)`), stdout)
	assert.Regexp(t, `fp8 +17[0-9.]+ KiB kept as fp8`, stdout)
	assert.Regexp(t, `cpu +needs 4[0-9.]+ KiB`, stdout)
	assert.Regexp(t, `cuda +needs 4[0-9.]+ KiB`, stdout)

	code, stdout, stderr = cli(t, "", "info", "-m", "../../testdata/models/deepseek-v3-bf16")
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stdout, "fp8")
}
