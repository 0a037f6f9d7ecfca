package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteRoundTrip(t *testing.T) {
	// Re-write every tensor of the bf16 sharded fixture into one file and
	// read it back: names, dtypes, shapes and bytes survive, and the data
	// section is 8-byte aligned.
	src, err := Open(filepath.Join(testdata, "models", "llama-mha-bf16-sharded"))
	require.NoError(t, err)
	defer src.Close()
	var ts []*Tensor
	for _, n := range src.Names() {
		tn, err := src.Tensor(n)
		require.NoError(t, err)
		ts = append(ts, tn)
	}
	ts = append(ts,
		&Tensor{Name: "scalar", DType: I64, Data: []byte{1, 0, 0, 0, 0, 0, 0, 0}},
		&Tensor{Name: "empty", DType: F16, Shape: []int{0, 3}, Data: nil},
		&Tensor{Name: "odd", DType: U8, Shape: []int{3}, Data: []byte{1, 2, 3}},
	)
	path := filepath.Join(t.TempDir(), "out.safetensors")
	require.NoError(t, WriteFile(path, ts, map[string]string{"format": "pt"}))

	back, err := OpenFile(path)
	require.NoError(t, err)
	defer back.Close()
	assert.Equal(t, len(ts), back.Len())
	assert.Equal(t, map[string]string{"format": "pt"}, back.Metadata())
	for _, want := range ts {
		got, err := back.Tensor(want.Name)
		require.NoError(t, err)
		assert.Equal(t, want.DType, got.DType, want.Name)
		assert.Equal(t, len(want.Shape), len(got.Shape), want.Name)
		if len(want.Shape) > 0 {
			assert.Equal(t, want.Shape, got.Shape, want.Name)
		}
		assert.Equal(t, len(want.Data), len(got.Data), want.Name)
		if len(want.Data) > 0 {
			assert.Equal(t, want.Data, got.Data, want.Name)
		}
	}
	v, err := back.Tensor("scalar")
	require.NoError(t, err)
	ids, err := v.Int64s()
	require.NoError(t, err)
	assert.Equal(t, []int64{1}, ids)
	hdr, _ := rawHeader(t, path)
	assert.NotEmpty(t, hdr)
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, ts, nil))
	assert.Zero(t, binary.LittleEndian.Uint64(buf.Bytes())%8, "header padded to 8 bytes")
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrors(t *testing.T) {
	ok := &Tensor{Name: "a", DType: F32, Shape: []int{1}, Data: make([]byte, 4)}
	cases := []struct {
		name string
		ts   []*Tensor
		want string
	}{
		{"size mismatch", []*Tensor{{Name: "w", DType: BF16, Shape: []int{3}, Data: make([]byte, 4)}}, `tensor "w": shape [3] of BF16 needs 6 bytes, have 4`},
		{"unknown dtype", []*Tensor{{Name: "w", DType: "F128", Shape: []int{1}, Data: make([]byte, 16)}}, `unknown dtype "F128"`},
		{"duplicate", []*Tensor{ok, ok}, `tensor "a": given twice`},
		{"reserved name", []*Tensor{{Name: metadataKey, DType: U8, Shape: []int{0}}}, "reserved"},
		{"negative dim", []*Tensor{{Name: "w", DType: U8, Shape: []int{-1}}}, "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorContains(t, Write(&bytes.Buffer{}, tc.ts, nil), tc.want)
		})
	}
	assert.ErrorContains(t, Write(failWriter{}, []*Tensor{ok}, nil), "disk full")
	assert.ErrorContains(t, WriteFile(filepath.Join(t.TempDir(), "no", "dir.safetensors"), []*Tensor{ok}, nil), "dir.safetensors")
}
