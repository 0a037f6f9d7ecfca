package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testdata = "../../testdata"

// rawFile assembles a safetensors file from a literal JSON header and a data
// section, padding nothing: tests control every byte.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

// jsonFile builds a valid-looking file from a header value.
func jsonFile(t *testing.T, hdr map[string]any, data []byte) []byte {
	t.Helper()
	js, err := json.Marshal(hdr)
	require.NoError(t, err)
	return rawFile(string(js), data)
}

func ent(dtype string, shape []int, begin, end int) map[string]any {
	return map[string]any{"dtype": dtype, "shape": shape, "data_offsets": []int{begin, end}}
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// rawHeader re-reads a file's header with plain encoding/json, independently
// of the package's parser, to cross-check what Open returns.
func rawHeader(t *testing.T, path string) (map[string]json.RawMessage, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	n := binary.LittleEndian.Uint64(b)
	var h map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b[8:8+n], &h))
	return h, b[8+n:]
}

func TestOpenFixtures(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(testdata, "models", "*"))
	require.NoError(t, err)
	dirs = append(dirs, filepath.Join(testdata, "stories260K"))
	require.GreaterOrEqual(t, len(dirs), 12, "fixtures missing")
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			c, err := Open(dir)
			require.NoError(t, err)
			defer func() { assert.NoError(t, c.Close()) }()
			require.Positive(t, c.Len())
			assert.True(t, c.Has("model.embed_tokens.weight"))
			assert.Equal(t, "pt", c.Metadata()["format"])

			// Every tensor agrees with an independent parse of its file.
			seen := 0
			for _, f := range c.Files() {
				hdr, data := rawHeader(t, f)
				for name, raw := range hdr {
					if name == metadataKey {
						continue
					}
					var r struct {
						DType       string `json:"dtype"`
						Shape       []int  `json:"shape"`
						DataOffsets []int  `json:"data_offsets"`
					}
					require.NoError(t, json.Unmarshal(raw, &r))
					tn, err := c.Tensor(name)
					require.NoError(t, err, name)
					assert.Equal(t, f, tn.File)
					assert.Equal(t, DType(r.DType), tn.DType, name)
					assert.Equal(t, r.Shape, tn.Shape, name)
					assert.Equal(t, data[r.DataOffsets[0]:r.DataOffsets[1]], tn.Data, name)
					require.NoError(t, tn.ExpectShape(r.Shape...))
					if tn.DType.IsFloat() {
						v, err := tn.Float32()
						require.NoError(t, err, name)
						assert.Len(t, v, tn.NumElements())
					}
					seen++
				}
			}
			assert.Equal(t, c.Len(), seen, "every tensor comes from exactly one file")

			ref, err := OpenFile(filepath.Join(dir, "reference.safetensors"))
			if filepath.Base(dir) == "stories260K" {
				require.ErrorIs(t, err, os.ErrNotExist)
				return
			}
			require.NoError(t, err)
			defer ref.Close()
			ids, err := ref.Tensor("input_ids")
			require.NoError(t, err)
			in, err := ids.Int64s()
			require.NoError(t, err)
			assert.Len(t, in, 11)
			logits, err := ref.Tensor("logits")
			require.NoError(t, err)
			require.NoError(t, logits.ExpectShape(11, 512))
		})
	}
}

// TestFixtureValues checks decoded values against sums computed in Python
// (struct module, fp8 by its definition) from the same files.
func TestFixtureValues(t *testing.T) {
	cases := []struct {
		dir, tensor string
		dtype       DType
		shape       []int
		sum, abs    float64
		first       []float32
	}{
		{"stories260K", "model.embed_tokens.weight", F32, []int{512, 64}, -752.3677446640068, 7820.582960873879, []float32{-0.29474878311157227, 0.5618956089019775, 0.1754225343465805}},
		{"models/llama-mha-bf16-sharded", "model.layers.0.self_attn.q_proj.weight", BF16, []int{64, 64}, -6.07564640045166, 613.4233312606812, []float32{0.103515625, 0.0810546875, -0.041259765625}},
		{"models/deepseek-v2-lite-fp16", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight", F16, []int{40, 64}, 1.6328396201133728, 381.9353156685829, []float32{-0.077880859375, -0.170166015625, 0.054046630859375}},
		{"models/deepseek-v3-fp8", "model.layers.0.self_attn.q_b_proj.weight", F8E4M3, []int{96, 48}, 8063.6171875, 542888.4609375, []float32{320, -96, 128}},
		{"models/deepseek-v3-fp8", "model.layers.0.self_attn.q_b_proj.weight_scale_inv", F32, []int{6, 3}, 0.02661375026218593, 0.02661375026218593, []float32{0.0015670092543587089, 0.0011946993181481957, 0.0013731383951380849}},
	}
	for _, tc := range cases {
		t.Run(tc.dir+"/"+tc.tensor, func(t *testing.T) {
			c, err := Open(filepath.Join(testdata, tc.dir))
			require.NoError(t, err)
			defer c.Close()
			tn, err := c.Tensor(tc.tensor)
			require.NoError(t, err)
			assert.Equal(t, tc.dtype, tn.DType)
			require.NoError(t, tn.ExpectShape(tc.shape...))
			v, err := tn.Float32()
			require.NoError(t, err)
			var sum, abs float64
			for _, x := range v {
				sum += float64(x)
				abs += math.Abs(float64(x))
			}
			assert.InDelta(t, tc.sum, sum, 1e-6*tc.abs)
			assert.InDelta(t, tc.abs, abs, 1e-6*tc.abs)
			assert.Equal(t, tc.first, v[:3])
		})
	}
}

func TestShardedIndex(t *testing.T) {
	dir := filepath.Join(testdata, "models", "llama-mha-bf16-sharded")
	c, err := Open(dir)
	require.NoError(t, err)
	defer c.Close()
	assert.Len(t, c.Files(), 3)
	assert.Equal(t, filepath.Join(dir, IndexFileName), c.String())
	var idx index
	b, err := os.ReadFile(filepath.Join(dir, IndexFileName))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &idx))
	assert.Len(t, c.Names(), len(idx.WeightMap))
	for name, shard := range idx.WeightMap {
		tn, err := c.Tensor(name)
		require.NoError(t, err)
		assert.Equal(t, filepath.Join(dir, shard), tn.File)
	}
}

func TestOpenFSAndFromBytes(t *testing.T) {
	dir := filepath.Join(testdata, "models", "llama-mha-bf16-sharded")
	disk, err := Open(dir)
	require.NoError(t, err)
	defer disk.Close()

	fsys := fstest.MapFS{}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		fsys[e.Name()] = &fstest.MapFile{Data: b}
	}
	mem, err := OpenFS(fsys)
	require.NoError(t, err)
	defer mem.Close()
	require.Equal(t, disk.Names(), mem.Names())
	for _, n := range disk.Names() {
		a, err := disk.Tensor(n)
		require.NoError(t, err)
		b, err := mem.Tensor(n)
		require.NoError(t, err)
		assert.Equal(t, a.Data, b.Data, n)
		assert.Equal(t, a.Shape, b.Shape, n)
	}

	raw, err := os.ReadFile(filepath.Join(testdata, "stories260K", "model.safetensors"))
	require.NoError(t, err)
	fb, err := FromBytes("embedded.safetensors", raw)
	require.NoError(t, err)
	tn, err := fb.Tensor("model.norm.weight")
	require.NoError(t, err)
	assert.Equal(t, "embedded.safetensors", tn.File)
	require.NoError(t, tn.ExpectShape(64))

	// A single non-standard file name in a directory is found too.
	only := t.TempDir()
	writeFile(t, only, "consolidated.safetensors", raw)
	c, err := Open(only)
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, fb.Names(), c.Names())
	assert.Equal(t, filepath.Join(only, "consolidated.safetensors"), c.String())
}

func TestBadFiles(t *testing.T) {
	f32 := make([]byte, 16)
	cases := []struct {
		name   string
		file   func(t *testing.T) []byte
		tensor string // must appear in the error when set
		want   string // substring of the error
	}{
		{"empty", func(*testing.T) []byte { return nil }, "", "too short"},
		{"truncated length", func(*testing.T) []byte { return []byte{1, 2, 3} }, "", "too short"},
		{"truncated data", func(t *testing.T) []byte {
			b := jsonFile(t, map[string]any{"w": ent("F32", []int{4}, 0, 16)}, f32)
			return b[:len(b)-5]
		}, "w", "run past"},
		{"header length past EOF", func(*testing.T) []byte { return rawFile(`{}`, nil)[:9] }, "", "past the end"},
		{"huge header length", func(*testing.T) []byte {
			b := binary.LittleEndian.AppendUint64(nil, math.MaxUint64)
			return append(b, "{}"...)
		}, "", "exceeds"},
		{"header just over limit", func(*testing.T) []byte {
			b := binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1)
			return append(b, "{}"...)
		}, "", "exceeds"},
		{"invalid JSON", func(*testing.T) []byte { return rawFile(`{"w": {"dtype": "F32",`, f32) }, "", "not valid JSON"},
		{"not an object", func(*testing.T) []byte { return rawFile(`[1, 2]`, f32) }, "", "not a JSON object"},
		{"trailing garbage", func(*testing.T) []byte { return rawFile(`{} x`, f32) }, "", "trailing"},
		{"invalid UTF-8", func(*testing.T) []byte { return rawFile("{\"w\xff\": 1}", f32) }, "", "UTF-8"},
		{"record not an object", func(*testing.T) []byte { return rawFile(`{"w": [1]}`, f32) }, "w", "bad record"},
		{"no dtype", func(*testing.T) []byte { return rawFile(`{"w": {"shape": [4], "data_offsets": [0, 16]}}`, f32) }, "w", "no dtype"},
		{"no shape", func(*testing.T) []byte { return rawFile(`{"w": {"dtype": "F32", "data_offsets": [0, 16]}}`, f32) }, "w", "no shape"},
		{"no offsets", func(*testing.T) []byte { return rawFile(`{"w": {"dtype": "F32", "shape": [4]}}`, f32) }, "w", "no data_offsets"},
		{"negative dim", func(*testing.T) []byte {
			return rawFile(`{"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}`, f32)
		}, "w", "bad record"},
		{"three offsets", func(t *testing.T) []byte {
			return rawFile(`{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}}`, f32)
		}, "w", "3 values"},
		{"offsets reversed", func(t *testing.T) []byte {
			return jsonFile(t, map[string]any{"w": ent("F32", []int{0}, 16, 0)}, f32)
		}, "w", "end before"},
		{"span out of range", func(t *testing.T) []byte {
			return jsonFile(t, map[string]any{"w": ent("F32", []int{4}, 4, 20)}, f32)
		}, "w", "run past"},
		{"overlapping spans", func(t *testing.T) []byte {
			return jsonFile(t, map[string]any{"a": ent("F32", []int{2}, 0, 8), "b": ent("F32", []int{2}, 4, 12)}, f32)
		}, "b", "overlap"},
		{"identical spans", func(t *testing.T) []byte {
			return jsonFile(t, map[string]any{"a": ent("F32", []int{2}, 0, 8), "b": ent("F32", []int{2}, 0, 8)}, f32)
		}, "b", "overlap"},
		{"unknown dtype", func(t *testing.T) []byte {
			return jsonFile(t, map[string]any{"w": ent("F128", []int{1}, 0, 16)}, f32)
		}, "w", `unknown dtype "F128"`},
		{"shape size mismatch", func(t *testing.T) []byte {
			return jsonFile(t, map[string]any{"w": ent("BF16", []int{2, 3}, 0, 16)}, f32)
		}, "w", "needs 12 bytes"},
		{"shape overflow", func(t *testing.T) []byte {
			return rawFile(`{"w": {"dtype": "F32", "shape": [1073741824, 1073741824, 1073741824], "data_offsets": [0, 16]}}`, f32)
		}, "w", "2^64"},
		{"huge dimension", func(t *testing.T) []byte {
			return rawFile(`{"w": {"dtype": "F32", "shape": [0, 18446744073709551615], "data_offsets": [0, 0]}}`, f32)
		}, "w", "too large"},
		{"duplicate tensor", func(t *testing.T) []byte {
			return rawFile(`{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}`, f32)
		}, "w", "twice"},
		{"metadata not strings", func(t *testing.T) []byte {
			return rawFile(`{"__metadata__": {"total": 3}}`, f32)
		}, "", "__metadata__"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := tc.file(t)
			p := writeFile(t, dir, SingleFileName, b)
			check := func(err error, where string) {
				t.Helper()
				require.Error(t, err)
				t.Log(err)
				assert.ErrorIs(t, err, ErrFormat)
				assert.Contains(t, err.Error(), where)
				assert.Contains(t, err.Error(), tc.want)
				if tc.tensor != "" {
					assert.Contains(t, err.Error(), `tensor "`+tc.tensor+`"`)
				}
			}
			c, err := OpenFile(p)
			assert.Nil(t, c)
			check(err, p)
			_, err = Open(dir)
			check(err, p)
			_, err = FromBytes("mem.safetensors", b)
			check(err, "mem.safetensors")
		})
	}
}

func TestValidEdgeCases(t *testing.T) {
	cases := []struct {
		name string
		file []byte
		n    int
	}{
		{"empty header", rawFile(`{}`, nil), 0},
		{"padded header", rawFile(`{"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}    `, []byte{1, 2}), 1},
		{"scalar", rawFile(`{"w": {"dtype": "I32", "shape": [], "data_offsets": [0, 4]}}`, []byte{1, 0, 0, 0}), 1},
		{"empty tensors share an offset", rawFile(`{"a": {"dtype": "F32", "shape": [0, 4], "data_offsets": [4, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "c": {"dtype": "F16", "shape": [0], "data_offsets": [4, 4]}}`, make([]byte, 4)), 3},
		{"hole between tensors", rawFile(`{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "b": {"dtype": "U8", "shape": [1], "data_offsets": [3, 4]}}`, make([]byte, 4)), 2},
		{"unknown record fields ignored", rawFile(`{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "extra": true}}`, []byte{7}), 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromBytes("x.safetensors", tc.file)
			require.NoError(t, err)
			assert.Equal(t, tc.n, c.Len())
		})
	}
}

func TestIndexErrors(t *testing.T) {
	shard := func(t *testing.T, names ...string) []byte {
		hdr := map[string]any{}
		for i, n := range names {
			hdr[n] = ent("F32", []int{1}, 4*i, 4*i+4)
		}
		return jsonFile(t, hdr, make([]byte, 4*len(names)))
	}
	index := func(m map[string]string) []byte {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 8}, "weight_map": m})
		return b
	}
	cases := []struct {
		name   string
		files  map[string][]byte
		errIs  error
		want   []string
		tensor string
	}{
		{"missing shard", map[string][]byte{
			IndexFileName:    index(map[string]string{"a": "s1.safetensors", "b": "s2.safetensors"}),
			"s1.safetensors": shard(t, "a"),
		}, os.ErrNotExist, []string{IndexFileName, "s2.safetensors"}, ""},
		{"tensor not in shard", map[string][]byte{
			IndexFileName:    index(map[string]string{"a": "s1.safetensors", "b": "s1.safetensors"}),
			"s1.safetensors": shard(t, "a"),
		}, ErrFormat, []string{"s1.safetensors", IndexFileName}, "b"},
		{"shard escapes directory", map[string][]byte{
			IndexFileName: index(map[string]string{"a": "../s1.safetensors"}),
		}, ErrFormat, []string{IndexFileName, "../s1.safetensors"}, "a"},
		{"invalid index JSON", map[string][]byte{
			IndexFileName: []byte(`{"weight_map": `),
		}, ErrFormat, []string{IndexFileName, "JSON"}, ""},
		{"empty weight map", map[string][]byte{
			IndexFileName: index(nil),
		}, ErrFormat, []string{IndexFileName, "weight_map"}, ""},
		{"bad shard", map[string][]byte{
			IndexFileName:    index(map[string]string{"a": "s1.safetensors"}),
			"s1.safetensors": rawFile(`{"a": `, nil),
		}, ErrFormat, []string{"s1.safetensors", "JSON"}, ""},
		{"duplicate tensor without index", map[string][]byte{
			"s1.safetensors": shard(t, "a"),
			"s2.safetensors": shard(t, "a", "b"),
		}, ErrFormat, []string{"s1.safetensors", "s2.safetensors"}, "a"},
		{"no safetensors at all", map[string][]byte{
			"config.json": []byte(`{}`),
		}, ErrNotFound, []string{"*.safetensors"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fsys := fstest.MapFS{}
			for n, b := range tc.files {
				writeFile(t, dir, n, b)
				fsys[n] = &fstest.MapFile{Data: b}
			}
			for _, open := range []func() (*Checkpoint, error){
				func() (*Checkpoint, error) { return Open(dir) },
				func() (*Checkpoint, error) { return OpenFS(fsys) },
			} {
				c, err := open()
				assert.Nil(t, c)
				require.Error(t, err)
				t.Log(err)
				assert.ErrorIs(t, err, tc.errIs)
				for _, w := range tc.want {
					assert.Contains(t, err.Error(), w)
				}
				if tc.tensor != "" {
					assert.Contains(t, err.Error(), `tensor "`+tc.tensor+`"`)
				}
			}
		})
	}
}

func TestTensorErrors(t *testing.T) {
	dir := filepath.Join(testdata, "models", "llama-mha-bf16-sharded")
	c, err := Open(dir)
	require.NoError(t, err)

	_, err = c.Tensor("model.layers.9.mlp.nope.weight")
	require.ErrorIs(t, err, ErrNotFound)
	assert.Contains(t, err.Error(), IndexFileName)
	assert.Contains(t, err.Error(), `tensor "model.layers.9.mlp.nope.weight"`)
	assert.False(t, c.Has("model.layers.9.mlp.nope.weight"))

	tn, err := c.Tensor("model.layers.0.self_attn.k_proj.weight")
	require.NoError(t, err)
	err = tn.ExpectShape(64, 32)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model-00002-of-00003.safetensors")
	assert.Contains(t, err.Error(), `tensor "model.layers.0.self_attn.k_proj.weight"`)
	assert.Contains(t, err.Error(), "[64 64], want [64 32]")
	require.NoError(t, tn.ExpectDType(BF16, F16))
	assert.ErrorContains(t, tn.ExpectDType(F32), "dtype BF16")
	_, err = tn.Int64s()
	assert.ErrorContains(t, err, "cannot be read as")

	// The view is the caller's: changing it does not change the checkpoint.
	tn.Shape[0] = 1
	again, err := c.Tensor("model.layers.0.self_attn.k_proj.weight")
	require.NoError(t, err)
	assert.Equal(t, []int{64, 64}, again.Shape)

	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	_, err = c.Tensor("model.norm.weight")
	assert.ErrorIs(t, err, ErrClosed)
}

func TestConversions(t *testing.T) {
	le := binary.LittleEndian
	f32 := le.AppendUint32(le.AppendUint32(nil, math.Float32bits(1.5)), math.Float32bits(-2))
	f64 := le.AppendUint64(le.AppendUint64(nil, math.Float64bits(1.5)), math.Float64bits(-2))
	cases := []struct {
		dtype DType
		data  []byte
		want  []float32
	}{
		{F32, f32, []float32{1.5, -2}},
		{F64, f64, []float32{1.5, -2}},
		{F16, []byte{0x00, 0x3e, 0x00, 0xc0}, []float32{1.5, -2}},
		{BF16, []byte{0xc0, 0x3f, 0x00, 0xc0}, []float32{1.5, -2}},
		{F8E4M3, []byte{0x3c, 0xc0}, []float32{1.5, -2}},
		{F8E5M2, []byte{0x3e, 0xc0}, []float32{1.5, -2}},
	}
	for _, tc := range cases {
		t.Run(string(tc.dtype), func(t *testing.T) {
			hdr := `{"w": {"dtype": "` + string(tc.dtype) + `", "shape": [2], "data_offsets": [0, ` + itoa(len(tc.data)) + `]}}`
			c, err := FromBytes("conv.safetensors", rawFile(hdr, tc.data))
			require.NoError(t, err)
			tn, err := c.Tensor("w")
			require.NoError(t, err)
			v, err := tn.Float32()
			require.NoError(t, err)
			assert.Equal(t, tc.want, v)
			v, err = tn.Float32View()
			require.NoError(t, err)
			assert.Equal(t, tc.want, v)
			_, err = tn.Int64s()
			assert.ErrorContains(t, err, `tensor "w"`)
		})
	}

	ints := []struct {
		dtype  DType
		data   []byte
		want64 []int64
		fits32 bool
	}{
		{I64, le.AppendUint64(le.AppendUint64(nil, 7), uint64(1<<40)), []int64{7, 1 << 40}, false},
		{I32, le.AppendUint32(le.AppendUint32(nil, 7), math.MaxUint32), []int64{7, -1}, true},
		{U32, le.AppendUint32(le.AppendUint32(nil, 7), math.MaxUint32), []int64{7, math.MaxUint32}, false},
		{I8, []byte{7, 0xff}, []int64{7, -1}, true},
		{U8, []byte{7, 0xff}, []int64{7, 255}, true},
		{BOOL, []byte{1, 0}, []int64{1, 0}, true},
		{I16, []byte{7, 0, 0xff, 0xff}, []int64{7, -1}, true},
		{U16, []byte{7, 0, 0xff, 0xff}, []int64{7, 65535}, true},
	}
	for _, tc := range ints {
		t.Run(string(tc.dtype), func(t *testing.T) {
			hdr := `{"w": {"dtype": "` + string(tc.dtype) + `", "shape": [2], "data_offsets": [0, ` + itoa(len(tc.data)) + `]}}`
			c, err := FromBytes("int.safetensors", rawFile(hdr, tc.data))
			require.NoError(t, err)
			tn, err := c.Tensor("w")
			require.NoError(t, err)
			v, err := tn.Int64s()
			require.NoError(t, err)
			assert.Equal(t, tc.want64, v)
			v32, err := tn.Int32s()
			if !tc.fits32 {
				assert.ErrorContains(t, err, "element 1 does not fit int32")
				return
			}
			require.NoError(t, err)
			for i := range v32 {
				assert.Equal(t, tc.want64[i], int64(v32[i]))
			}
			_, err = tn.Float32()
			assert.ErrorContains(t, err, "not a float type")
		})
	}
	u64 := le.AppendUint64(nil, math.MaxUint64)
	c, err := FromBytes("u64.safetensors", rawFile(`{"w": {"dtype": "U64", "shape": [1], "data_offsets": [0, 8]}}`, u64))
	require.NoError(t, err)
	tn, err := c.Tensor("w")
	require.NoError(t, err)
	_, err = tn.Int64s()
	assert.ErrorContains(t, err, "element 0 does not fit int64")
}

func TestFloat32View(t *testing.T) {
	c, err := Open(filepath.Join(testdata, "stories260K"))
	require.NoError(t, err)
	defer c.Close()
	tn, err := c.Tensor("model.norm.weight")
	require.NoError(t, err)
	view, err := tn.Float32View()
	require.NoError(t, err)
	cp, err := tn.Float32()
	require.NoError(t, err)
	assert.Equal(t, cp, view)
	// The fixture's data section is 8-byte aligned, so the view is in place
	// and the copy is not.
	assert.Equal(t, unsafe.Pointer(&tn.Data[0]), unsafe.Pointer(&view[0]), "view aliases the mapping")
	assert.NotEqual(t, unsafe.Pointer(&tn.Data[0]), unsafe.Pointer(&cp[0]))

	// Misaligned F32 data falls back to a copy with the same values.
	data := append([]byte{0}, make([]byte, 8)...)
	binary.LittleEndian.PutUint32(data[1:], math.Float32bits(3))
	mis := &Tensor{Name: "m", DType: F32, Shape: []int{2}, Data: data[1:], File: "mem"}
	v, err := mis.Float32View()
	require.NoError(t, err)
	assert.Equal(t, []float32{3, 0}, v)

	// A hand-built tensor whose bytes do not match its shape is an error.
	bad := &Tensor{Name: "b", DType: BF16, Shape: []int{3}, Data: make([]byte, 4), File: "mem"}
	_, err = bad.Float32()
	assert.ErrorContains(t, err, `mem: tensor "b"`)
}

func TestOpenMissing(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "nope"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = OpenFile(filepath.Join(t.TempDir(), "nope.safetensors"))
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "nope.safetensors")
	assert.False(t, errors.Is(err, ErrFormat))
	// A directory where a file is expected.
	_, err = OpenFile(t.TempDir())
	require.ErrorIs(t, err, ErrFormat)
	assert.True(t, strings.Contains(err.Error(), "regular file"))
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestConcurrentReads(t *testing.T) {
	// Many goroutines reading one checkpoint (run under -race in CI).
	c, err := Open(filepath.Join(testdata, "models", "llama-mha-bf16-sharded"))
	require.NoError(t, err)
	defer c.Close()
	names := c.Names()
	sums := make([]float64, 4)
	var wg sync.WaitGroup
	for g := range sums {
		wg.Go(func() {
			for _, n := range names {
				tn, err := c.Tensor(n)
				if err != nil || !c.Has(n) {
					t.Error(err)
					return
				}
				v, err := tn.Float32()
				if err != nil {
					t.Error(err)
					return
				}
				for _, x := range v {
					sums[g] += float64(x)
				}
			}
		})
	}
	wg.Wait()
	for g := range sums {
		assert.Equal(t, sums[0], sums[g])
	}
	assert.NotZero(t, sums[0])
}
