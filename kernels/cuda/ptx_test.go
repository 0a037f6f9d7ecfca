package cuda

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPTXFresh fails when kernels.ptx was not regenerated (make ptx) after
// kernels.cu changed: the PTX's first line records its source's sha256.
// It needs no GPU, so CI runs it.
func TestPTXFresh(t *testing.T) {
	// kernels.cu, then the *.cuh files it includes in name order (Makefile).
	names, err := filepath.Glob("*.cuh")
	require.NoError(t, err)
	sort.Strings(names)
	h := sha256.New()
	for _, name := range append([]string{"kernels.cu"}, names...) {
		src, err := os.ReadFile(name)
		require.NoError(t, err)
		h.Write(src)
	}
	sum := h.Sum(nil)
	f, err := os.Open("kernels.ptx")
	require.NoError(t, err)
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	require.NoError(t, err)
	const prefix = "// source sha256: "
	require.True(t, strings.HasPrefix(line, prefix), "kernels.ptx lacks its source hash line: %q", line)
	require.Equal(t, hex.EncodeToString(sum), strings.TrimSpace(strings.TrimPrefix(line, prefix)),
		"kernels.ptx is stale: run `make ptx` on a machine with nvcc and commit it")
}
