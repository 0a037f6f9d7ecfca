package cuda

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPTXFresh fails when kernels.ptx was not regenerated (make ptx) after
// kernels.cu changed: the PTX's first line records its source's sha256.
// It needs no GPU, so CI runs it.
func TestPTXFresh(t *testing.T) {
	src, err := os.ReadFile("kernels.cu")
	require.NoError(t, err)
	sum := sha256.Sum256(src)
	f, err := os.Open("kernels.ptx")
	require.NoError(t, err)
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	require.NoError(t, err)
	const prefix = "// source sha256: "
	require.True(t, strings.HasPrefix(line, prefix), "kernels.ptx lacks its source hash line: %q", line)
	require.Equal(t, hex.EncodeToString(sum[:]), strings.TrimSpace(strings.TrimPrefix(line, prefix)),
		"kernels.ptx is stale: run `make ptx` on a machine with nvcc and commit it")
}
