package tokenizer

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Tokenizer is shared by concurrent sessions: encodes (which fill the
// merge cache) and decodes must be race-free and agree with serial results.
func TestConcurrentUse(t *testing.T) {
	tok := loadTok(t, dirDeepSeekV3)
	tok.model.resetCache()
	texts := []string{"Hello world", "我想在apple工作1314151天～", " this is 🦙.cpp", "func main() {\n\tfmt.Println(\"hi\")\n}"}
	want := make([][]int, len(texts))
	for i, s := range texts {
		want[i], _ = tok.Encode(s, false)
	}
	tok.model.resetCache()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := 0; k < 50; k++ {
				i := (g + k) % len(texts)
				ids, err := tok.Encode(texts[i], false)
				assert.NoError(t, err)
				assert.Equal(t, want[i], ids)
				assert.Equal(t, texts[i], tok.Decode(ids))
			}
		}(g)
	}
	wg.Wait()
}

func TestEncodeContextCancelled(t *testing.T) {
	tok := loadTok(t, dirDeepSeekV3)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := tok.EncodeContext(ctx, strings.Repeat("word ", 20000), false)
	require.ErrorIs(t, err, context.Canceled)
	ids, err := tok.EncodeContext(context.Background(), "Hello world", false)
	require.NoError(t, err)
	assert.Equal(t, []int{19923, 2058}, ids)
}
