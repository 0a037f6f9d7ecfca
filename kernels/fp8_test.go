package kernels

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fp8Host is a 5×20 fp8 matrix in 2×8 blocks (3×3 scales) whose scale i
// is i+1, so a scale's position is visible in its value.
func fp8Host() HostMatrix {
	h := HostMatrix{Name: "w", Rows: 5, Cols: 20, DType: FP8, Data: make([]byte, 100), BlockRows: 2, BlockCols: 8}
	for i := range 9 {
		h.Scales = append(h.Scales, float32(i+1))
	}
	return h
}

func TestCheckPartsFP8(t *testing.T) {
	good := fp8Host()
	rows, err := CheckParts([]HostMatrix{good, good.SliceRows(1, 4, "w2")})
	require.NoError(t, err)
	assert.Equal(t, []int{5, 3}, rows)

	tests := []struct {
		name string
		edit func(*HostMatrix)
		want string
	}{
		{"scale count", func(h *HostMatrix) { h.Scales = h.Scales[:8] }, "UploadMatrix w: 8 fp8 block scales, want 3×3 for 5×20 in 2×8 blocks"},
		{"block rows", func(h *HostMatrix) { h.BlockRows = 0 }, "UploadMatrix w: fp8 block shape 0×8 must be positive"},
		{"block cols", func(h *HostMatrix) { h.BlockCols = -1 }, "UploadMatrix w: fp8 block shape 2×-1 must be positive"},
		{"row offset", func(h *HostMatrix) { h.ScaleRow0 = 2 }, "UploadMatrix w: fp8 first row offset 2 outside a block of 2 rows"},
		{"data", func(h *HostMatrix) { h.Data = h.Data[:99] }, "UploadMatrix w: 99 bytes, want 100 for 5x20 fp8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := fp8Host()
			tc.edit(&h)
			_, err := CheckParts([]HostMatrix{h})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestSliceRowsFP8(t *testing.T) {
	h := fp8Host()
	for i := range h.Data {
		h.Data[i] = byte(i)
	}
	for _, tc := range []struct {
		r0, r1, row0 int
		scales       []float32
	}{
		{0, 5, 0, []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{1, 3, 1, []float32{1, 2, 3, 4, 5, 6}}, // rows 1, 2: blocks 0 and 1
		{2, 4, 0, []float32{4, 5, 6}},
		{4, 5, 0, []float32{7, 8, 9}},
	} {
		s := h.SliceRows(tc.r0, tc.r1, "part")
		assert.Equal(t, "part", s.Name)
		assert.Equal(t, tc.r1-tc.r0, s.Rows)
		assert.Equal(t, byte(tc.r0*20), s.Data[0])
		assert.Len(t, s.Data, (tc.r1-tc.r0)*20)
		assert.Equal(t, tc.row0, s.ScaleRow0)
		assert.Equal(t, tc.scales, s.Scales)
		_, err := CheckParts([]HostMatrix{s})
		require.NoError(t, err)
		// Every row of the slice sees the scales of the same row of h.
		for r := range s.Rows {
			assert.Equal(t, h.BlockScales(tc.r0+r), s.BlockScales(r), "row %d", r)
		}
	}
	// Other dtypes: rows of data, and of the scales for int8.
	q := HostMatrix{Name: "q", Rows: 3, Cols: 2, DType: Int8, Data: []byte{1, 2, 3, 4, 5, 6}, Scales: []float32{1, 2, 3}}
	s := q.SliceRows(1, 3, "q1")
	assert.Equal(t, []byte{3, 4, 5, 6}, s.Data)
	assert.Equal(t, []float32{2, 3}, s.Scales)
}

// TestSliceCols: every value of a column slice and (fp8) its block scale
// are those of the same column of h, for slices on block boundaries, a
// partial last block and a row slice starting inside a block; cuts inside
// an fp8 block are refused.
func TestSliceCols(t *testing.T) {
	h := fp8Host()
	for i := range h.Data {
		h.Data[i] = byte(i)
	}
	rowCut := h.SliceRows(1, 4, "rows") // ScaleRow0 1
	for _, tc := range []struct {
		h      HostMatrix
		c0, c1 int
		want   string
	}{
		{h, 0, 8, ""}, {h, 8, 16, ""}, {h, 16, 20, ""}, {h, 8, 20, ""}, {h, 0, 20, ""}, {rowCut, 8, 16, ""},
		{h, 4, 8, "do not start and end on blocks of 8"}, {h, 0, 12, "do not start and end"},
		{h, 8, 21, "columns [8, 21) of 20"}, {h, 8, 8, "columns [8, 8)"},
	} {
		t.Run(fmt.Sprintf("%s/%d:%d", tc.h.Name, tc.c0, tc.c1), func(t *testing.T) {
			s, err := tc.h.SliceCols(tc.c0, tc.c1, "cut")
			if tc.want != "" {
				require.ErrorContains(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "cut", s.Name)
			_, err = CheckParts([]HostMatrix{s})
			require.NoError(t, err)
			require.Equal(t, tc.c1-tc.c0, s.Cols)
			for r := range s.Rows {
				for c := range s.Cols {
					assert.Equal(t, tc.h.Data[r*tc.h.Cols+tc.c0+c], s.Data[r*s.Cols+c], "(%d, %d)", r, c)
					assert.Equal(t, tc.h.BlockScales(r)[(tc.c0+c)/8], s.BlockScales(r)[c/8], "(%d, %d)", r, c)
				}
			}
		})
	}
	// Other dtypes: columns of each row; int8 keeps its row scales.
	q := HostMatrix{Name: "q", Rows: 2, Cols: 3, DType: Int8, Data: []byte{1, 2, 3, 4, 5, 6}, Scales: []float32{1, 2}}
	s, err := q.SliceCols(1, 3, "q1")
	require.NoError(t, err)
	assert.Equal(t, []byte{2, 3, 5, 6}, s.Data)
	assert.Equal(t, []float32{1, 2}, s.Scales)
	b := HostMatrix{Name: "b", Rows: 2, Cols: 2, DType: BF16, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	s, err = b.SliceCols(1, 2, "b1")
	require.NoError(t, err)
	assert.Equal(t, []byte{3, 4, 7, 8}, s.Data)
}

type fp8Backend struct{ Backend }

func (fp8Backend) SupportsDType(d DType) bool { return d == FP8 }

func TestSupports(t *testing.T) {
	var plain Backend
	for _, d := range []DType{F32, F16, BF16, Int8} {
		assert.True(t, Supports(plain, d), "%v", d)
	}
	assert.False(t, Supports(plain, FP8))
	assert.True(t, Supports(fp8Backend{}, FP8))
	assert.Equal(t, "fp8", FP8.String())
	assert.Equal(t, 1, FP8.Size())
}
