// Package testutil holds test helpers that tests of several packages share.
package testutil

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// SyncBuffer is a strings.Builder safe for concurrent use: a log or output
// sink a server goroutine writes while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// LogitsRow is a row of n logits for sampler tests: Gaussian with spread
// scale and, in rows of more than 100, a NaN, a -Inf and a run of equal
// values (ties break by id).
func LogitsRow(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	if n > 100 {
		x[r.IntN(n)] = float32(math.NaN())
		x[r.IntN(n)] = float32(math.Inf(-1))
		v := x[r.IntN(n)]
		for range 5 {
			x[r.IntN(n)] = v
		}
	}
	return x
}

// DecodeJSONFile decodes the JSON file at path into v, numbers as
// json.Number (golden files whose integers and floats must keep their
// Python types).
func DecodeJSONFile(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	require.NoError(t, dec.Decode(v))
}
