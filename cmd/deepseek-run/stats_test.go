package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine"
)

func TestPrintExpertStats(t *testing.T) {
	m, err := engine.Load("../../testdata/models/deepseek-v3", engine.WithDevice("cpu"))
	require.NoError(t, err)
	defer m.Close()
	for _, err := range m.GenerateIDs(context.Background(), []int{1, 2, 3, 4}, engine.GenerateOptions{MaxTokens: 4}) {
		require.NoError(t, err)
	}
	var buf bytes.Buffer
	printExpertStats(&buf, m)
	out := buf.String()
	assert.Contains(t, out, "expert usage")
	// One row per MoE layer, each with tokens routed.
	rows := strings.Count(out, "expert ") - 1
	assert.Equal(t, len(m.ExpertStats()), rows, out)
	assert.NotContains(t, out, "      0  ", "every MoE layer saw tokens")

	dense := loadDense(t)
	buf.Reset()
	printExpertStats(&buf, dense)
	assert.Contains(t, buf.String(), "no routed experts")
}

func loadDense(t *testing.T) *engine.Model {
	m, err := engine.Load("../../testdata/models/llama-mha", engine.WithDevice("cpu"))
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	p := &progressBar{w: &buf, last: -1, start: time.Now()}
	p.update(10, 100) // small checkpoints draw nothing
	assert.Empty(t, buf.String())
	const total = 4 << 30
	p.update(total/4, total)
	p.update(total/4+1, total) // same percentage: no redraw
	p.update(total, total)
	p.finish()
	out := buf.String()
	assert.Equal(t, 2, strings.Count(out, "\r"), "%q", out)
	assert.Contains(t, out, " 25%")
	assert.Contains(t, out, "100%")
	assert.True(t, strings.HasSuffix(out, "\n"))
	assert.Nil(t, newProgressBar(&buf), "no bar when stderr is not a terminal")
}
