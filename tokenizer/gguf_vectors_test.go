package tokenizer

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// ggufVocab is the tokenizer part of a llama.cpp vocab-only GGUF file.
type ggufVocab struct {
	tokens   []string
	merges   []string
	types    []int32
	bos, eos int
}

// readGGUFVocab parses just enough of GGUF v3 (metadata key/values) to get
// the tokenizer arrays; tensors are absent from vocab-only files.
func readGGUFVocab(t testing.TB, path string) ggufVocab {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	r := &ggufReader{r: bufio.NewReader(f)}
	require.Equal(t, "GGUF", string(r.bytes(4)))
	require.Equal(t, uint32(3), r.u32(), "GGUF version")
	_ = r.u64() // tensors
	nkv := r.u64()
	v := ggufVocab{bos: -1, eos: -1}
	for i := uint64(0); i < nkv && r.err == nil; i++ {
		key := r.str()
		val := r.value(r.u32())
		switch key {
		case "tokenizer.ggml.tokens":
			for _, x := range val.([]any) {
				v.tokens = append(v.tokens, x.(string))
			}
		case "tokenizer.ggml.merges":
			for _, x := range val.([]any) {
				v.merges = append(v.merges, x.(string))
			}
		case "tokenizer.ggml.token_type":
			for _, x := range val.([]any) {
				v.types = append(v.types, int32(x.(int64)))
			}
		case "tokenizer.ggml.bos_token_id":
			v.bos = int(val.(int64))
		case "tokenizer.ggml.eos_token_id":
			v.eos = int(val.(int64))
		}
	}
	require.NoError(t, r.err)
	require.NotEmpty(t, v.tokens)
	require.Len(t, v.types, len(v.tokens))
	return v
}

type ggufReader struct {
	r   io.Reader
	err error
}

func (g *ggufReader) bytes(n uint64) []byte {
	if g.err != nil || n > 1<<26 {
		if g.err == nil {
			g.err = fmt.Errorf("gguf: length %d too large", n)
		}
		return nil
	}
	b := make([]byte, n)
	_, g.err = io.ReadFull(g.r, b)
	return b
}
func (g *ggufReader) u32() uint32 { return binary.LittleEndian.Uint32(pad(g.bytes(4), 4)) }
func (g *ggufReader) u64() uint64 { return binary.LittleEndian.Uint64(pad(g.bytes(8), 8)) }
func (g *ggufReader) str() string { return string(g.bytes(g.u64())) }

func pad(b []byte, n int) []byte {
	if len(b) < n {
		return make([]byte, n)
	}
	return b
}

// value reads one GGUF metadata value of type typ.
func (g *ggufReader) value(typ uint32) any {
	switch typ {
	case 0, 1, 7: // uint8, int8, bool
		return int64(g.bytes(1)[0])
	case 2, 3: // uint16, int16
		return int64(binary.LittleEndian.Uint16(pad(g.bytes(2), 2)))
	case 4:
		return int64(g.u32())
	case 5:
		return int64(int32(g.u32()))
	case 6:
		return float64(math.Float32frombits(g.u32()))
	case 8:
		return g.str()
	case 9:
		et, n := g.u32(), g.u64()
		if n > 1<<24 {
			g.err = fmt.Errorf("gguf: array of %d", n)
			return nil
		}
		out := make([]any, 0, n)
		for i := uint64(0); i < n && g.err == nil; i++ {
			out = append(out, g.value(et))
		}
		return out
	case 10, 11:
		return int64(g.u64())
	case 12:
		return math.Float64frombits(g.u64())
	}
	g.err = fmt.Errorf("gguf: unknown value type %d", typ)
	return nil
}

// tokenizerJSONFromGGUF rebuilds the checkpoint's tokenizer.json: vocab and
// merges from the GGUF, control/user-defined tokens as added tokens, and
// the pre-tokenizer Split sequence the HF tokenizer.json declares (llama.cpp
// copies these patterns in llm_tokenizer_bpe).
func tokenizerJSONFromGGUF(t testing.TB, v ggufVocab, splits []string) []byte {
	t.Helper()
	vocab := make(map[string]int, len(v.tokens))
	var added []map[string]any
	for i, tok := range v.tokens {
		if v.types[i] == 3 || v.types[i] == 4 { // control, user-defined
			added = append(added, map[string]any{"id": i, "content": tok, "special": v.types[i] == 3,
				"normalized": v.types[i] == 4, "lstrip": false, "rstrip": false, "single_word": false})
			continue
		}
		vocab[tok] = i
	}
	var pre []any
	for _, s := range splits {
		pre = append(pre, map[string]any{"type": "Split", "pattern": map[string]any{"Regex": s}, "behavior": "Isolated", "invert": false})
	}
	pre = append(pre, map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false})
	js, err := json.Marshal(map[string]any{
		"added_tokens":  added,
		"normalizer":    map[string]any{"type": "Sequence", "normalizers": []any{}},
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": pre},
		"decoder":       map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model":         map[string]any{"type": "BPE", "vocab": vocab, "merges": v.merges},
	})
	require.NoError(t, err)
	return js
}

// deepseekLLMSplits are the Split patterns of the deepseek-llm tokenizer.json.
var deepseekLLMSplits = []string{
	"[\r\n]",
	// Non-ASCII as escapes: NFC-normalizing copies fold some of these
	// code points (U+1F7D ώ, U+212A K, ...) and break the ranges.
	"\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+",
	"\\s?[!-/:-~！-／：-～‘-‟　-。]+",
	"\\s+$",
	"[一-龥ࠀ-一가-퟿]+",
	"\\p{N}+",
}

// TestGGUFVocabVectors checks the older DeepSeek tokenizers (deepseek-llm
// for V1/V2, deepseek-coder), whose Split patterns take the generic Go
// regexp path (including Oniguruma's line-anchored `\s+$`), against
// llama.cpp's HF-generated .inp/.out vectors.
func TestGGUFVocabVectors(t *testing.T) {
	tests := []struct {
		name   string
		splits []string
	}{
		{"deepseek-llm", deepseekLLMSplits},
		{"deepseek-coder", []string{
			"[\r\n]",
			"\\s?\\p{L}+",
			"\\s?\\p{P}+",
			"[一-龥ࠀ-一가-퟿]+",
			"\\p{N}",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := readGGUFVocab(t, filepath.Join("testdata/gguf-vocab", "ggml-vocab-"+tc.name+".gguf"))
			tok, err := FromBytes(tokenizerJSONFromGGUF(t, v, tc.splits), nil)
			require.NoError(t, err)
			vs := readGGML(t, filepath.Join(dirVectors, "ggml-vocab-"+tc.name+".gguf.inp"), filepath.Join(dirVectors, "ggml-vocab-"+tc.name+".gguf.out"))
			fails := 0
			for _, x := range vs {
				got, err := tok.Encode(x.Text, false)
				require.NoError(t, err)
				if !equalIDs(got, x.IDs) {
					if fails++; fails <= 5 {
						t.Errorf("%s: encode %q\n got  %v\n want %v", x.Name, x.Text, got, x.IDs)
					}
				}
				if dec := tok.Decode(got); dec != x.Text {
					if fails++; fails <= 5 {
						t.Errorf("%s: decode(encode(x)) = %q, want %q", x.Name, dec, x.Text)
					}
				}
			}
			require.Zero(t, fails, "%d/%d mismatches", fails, len(vs))
		})
	}
}

// BenchmarkEncodeDeepSeekLLM measures the generic Go-regexp Split path
// (the V1/V2 tokenizer), warm cache.
func BenchmarkEncodeDeepSeekLLM(b *testing.B) {
	v := readGGUFVocab(b, "testdata/gguf-vocab/ggml-vocab-deepseek-llm.gguf")
	tok, err := FromBytes(tokenizerJSONFromGGUF(b, v, deepseekLLMSplits), nil)
	if err != nil {
		b.Fatal(err)
	}
	text := benchCorpus(b, "deepseek-v3.encode.jsonl")
	if _, err := tok.Encode(text, false); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tok.Encode(text, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(text))*float64(b.N)/b.Elapsed().Seconds()/1e6, "MB/s")
}
