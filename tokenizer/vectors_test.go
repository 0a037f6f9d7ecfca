package tokenizer

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	dirDeepSeekV3 = "../testdata/tokenizers/deepseek-v3"
	dirQwen2      = "../testdata/tokenizers/qwen2-r1-distill"
	dirStories    = "../testdata/stories260K"
	dirVectors    = "../testdata/vectors"
)

// Loading the 8–11 MB tokenizer.json files dominates test time, so each
// is loaded once per test binary.
var loaded = map[string]func() (*Tokenizer, error){
	dirDeepSeekV3: sync.OnceValues(func() (*Tokenizer, error) { return Load(dirDeepSeekV3) }),
	dirQwen2:      sync.OnceValues(func() (*Tokenizer, error) { return Load(dirQwen2) }),
	dirStories:    sync.OnceValues(func() (*Tokenizer, error) { return Load(dirStories) }),
}

func loadTok(t testing.TB, dir string) *Tokenizer {
	t.Helper()
	tok, err := loaded[dir]()
	require.NoError(t, err)
	return tok
}

type vector struct {
	Name string
	Text string `json:"text"`
	IDs  []int  `json:"ids"`
}

func readJSONL(t testing.TB, path string) []vector {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []vector
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		var v vector
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v), "%s:%d", path, n)
		v.Name = fmt.Sprintf("%s:%d", filepath.Base(path), n)
		out = append(out, v)
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, out)
	return out
}

// readGGML reads llama.cpp's .inp/.out pair: texts separated by
// "\n__ggml_vocab_test__\n", one line of space-separated ids per text.
func readGGML(t testing.TB, inp, outFile string) []vector {
	t.Helper()
	in, err := os.ReadFile(inp)
	require.NoError(t, err)
	texts := strings.Split(string(in), "\n__ggml_vocab_test__\n")
	require.Equal(t, "", texts[len(texts)-1], "inp must end with the separator")
	texts = texts[:len(texts)-1]
	out, err := os.ReadFile(outFile)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	require.Len(t, lines, len(texts), "%s vs %s", inp, outFile)
	vs := make([]vector, len(texts))
	for i, text := range texts {
		ids := []int{}
		for _, f := range strings.Fields(lines[i]) {
			id, err := strconv.Atoi(f)
			require.NoError(t, err)
			ids = append(ids, id)
		}
		vs[i] = vector{Name: fmt.Sprintf("%s#%d", filepath.Base(outFile), i), Text: text, IDs: ids}
	}
	return vs
}

func readJSONVectors(t testing.TB, path string) []vector {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var vs []vector
	require.NoError(t, json.Unmarshal(data, &vs))
	for i := range vs {
		vs[i].Name = fmt.Sprintf("%s[%d]", filepath.Base(path), i)
	}
	return vs
}

func readExtraVectors(t testing.TB, path string) []vector {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var x struct {
		Chk        vector   `json:"llama_cpp_chktxt"`
		ThirdParty []vector `json:"third_party"`
	}
	require.NoError(t, json.Unmarshal(data, &x))
	x.Chk.Name = "llama_cpp_chktxt"
	out := []vector{x.Chk}
	for i, v := range x.ThirdParty {
		v.Name = fmt.Sprintf("third_party[%d]", i)
		out = append(out, v)
	}
	require.Len(t, out, 1+len(x.ThirdParty))
	return out
}

func vectorSets(t *testing.T) []struct {
	name, dir string
	vs        []vector
} {
	v := func(p string) string { return filepath.Join(dirVectors, p) }
	return []struct {
		name, dir string
		vs        []vector
	}{
		{"deepseek-v3.encode.jsonl", dirDeepSeekV3, readJSONL(t, v("deepseek-v3.encode.jsonl"))},
		{"qwen2.encode.jsonl", dirQwen2, readJSONL(t, v("qwen2.encode.jsonl"))},
		{"stories260K.encode.jsonl", dirStories, readJSONL(t, v("stories260K.encode.jsonl"))},
		{"deepseek-v3.vectors.json", dirDeepSeekV3, readJSONVectors(t, v("deepseek-v3.vectors.json"))},
		{"deepseek-v3.extra-vectors.json", dirDeepSeekV3, readExtraVectors(t, v("deepseek-v3.extra-vectors.json"))},
		{"deepseek-v3.llama-cpp-inp.out", dirDeepSeekV3, readGGML(t, v("ggml-vocab-llama-bpe.gguf.inp"), v("deepseek-v3.llama-cpp-inp.out"))},
		{"ggml-vocab-qwen2", dirQwen2, readGGML(t, v("ggml-vocab-qwen2.gguf.inp"), v("ggml-vocab-qwen2.gguf.out"))},
		{"ggml-vocab-deepseek-r1-qwen", dirQwen2, readGGML(t, v("ggml-vocab-deepseek-r1-qwen.gguf.inp"), v("ggml-vocab-deepseek-r1-qwen.gguf.out"))},
	}
}

// TestVectors requires every reference encoding to match exactly and
// decode(encode(x)) == x.
func TestVectors(t *testing.T) {
	for _, set := range vectorSets(t) {
		t.Run(set.name, func(t *testing.T) {
			tok := loadTok(t, set.dir)
			fails := 0
			for _, v := range set.vs {
				got, err := tok.Encode(v.Text, false)
				require.NoError(t, err, v.Name)
				if !equalIDs(got, v.IDs) {
					fails++
					if fails <= 5 {
						t.Errorf("%s: encode %q\n got  %v\n want %v", v.Name, v.Text, got, v.IDs)
					}
				}
				if dec := tok.Decode(v.IDs); dec != v.Text {
					fails++
					if fails <= 5 {
						t.Errorf("%s: decode(reference ids) = %q, want %q", v.Name, dec, v.Text)
					}
				}
				if dec := tok.Decode(got); dec != v.Text {
					fails++
					if fails <= 5 {
						t.Errorf("%s: decode(encode(x)) = %q, want %q", v.Name, dec, v.Text)
					}
				}
			}
			if fails > 0 {
				t.Errorf("%d/%d mismatches", fails, len(set.vs))
			}
		})
	}
}

func equalIDs(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
