package jinja

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/internal/testutil"
)

// TestJinjaFeatures compares the interpreter with Jinja2 (configured as
// transformers) on templates exercising whitespace control, loops,
// scoping, macros, expressions, string methods, filters, tests and tojson;
// see testdata/gen_features.py.
func TestJinjaFeatures(t *testing.T) {
	var g struct {
		Conversations [][]map[string]any `json:"conversations"`
		Cases         []struct {
			Name     string  `json:"name"`
			Template string  `json:"template"`
			Conv     int     `json:"conv"`
			Text     *string `json:"text"`
			Error    *string `json:"error"`
		} `json:"cases"`
	}
	testutil.DecodeJSONFile(t, "testdata/features.json", &g)
	require.NotEmpty(t, g.Cases)
	for _, c := range g.Cases {
		name := fmt.Sprintf("%s/conv%d", c.Name, c.Conv)
		tmpl, err := Parse(c.Template)
		require.NoError(t, err, name)
		got, err := tmpl.Render(map[string]any{"messages": g.Conversations[c.Conv], "bos_token": "<s>", "eos_token": "</s>",
			"x": 1, "add_generation_prompt": true, "builtin_tools": []string{"brave_search", "code_interpreter", "wolfram"}})
		if c.Error != nil {
			assert.Error(t, err, "%s: Jinja2 raised %s", name, *c.Error)
			continue
		}
		require.NoError(t, err, name)
		assert.Equal(t, *c.Text, got, name)
	}
}

func TestJinjaGenerationTag(t *testing.T) {
	tmpl, err := Parse("{% for m in messages %}{% generation %}[{{ m }}]{% endgeneration %}{% endfor %}")
	require.NoError(t, err)
	got, err := tmpl.Render(map[string]any{"messages": []any{"a", "b"}})
	require.NoError(t, err)
	assert.Equal(t, "[a][b]", got)
}

func TestJinjaErrors(t *testing.T) {
	tests := []struct{ src, want string }{
		{"{% if x %}", "unclosed if"},
		{"{% raw %}x{% endraw", "unclosed endraw"},
		{"{% raw %}x", "unclosed raw"},
		{"{# x", "unclosed comment"},
		{"{{ 'abc }}", "unterminated string"},
		{"{{ a[1:2:3:4] }}", "bad slice"},
		{"{{ 'ab' * 4611686018427387904 }}", "too large"},
		{"{{ 'x' | indent(10000000000) }}", "out of range"},
		{"{{ }}", "unexpected"},
		{"{{ x ", "missing"},
		{"{% for %}", "expected a name"},
		{"{% foo %}", "unsupported tag"},
		{"{{ 'a' | nosuchfilter }}", "unsupported filter"},
		{"{{ raise_exception('boom') }}", "boom"},
		{"{{ 1 / 0 }}", "division by zero"},
		{"{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion too deep"},
		{"{% for i in range(100000000) %}{% endfor %}", "too many"},
		{"{{ " + repeatStr("(", 300) + "1" + repeatStr(")", 300) + " }}", "nested too deeply"},
	}
	for _, tc := range tests {
		tmpl, err := Parse(tc.src)
		if err == nil {
			_, err = tmpl.Render(nil)
		}
		require.Error(t, err, tc.src)
		assert.Contains(t, err.Error(), tc.want, tc.src)
	}
}

func repeatStr(s string, n int) string {
	out := ""
	for i := 0; i < n; i++ {
		out += s
	}
	return out
}

// TestMessageValue pins how Go chat messages look to a template: a dict with
// role before content, whether passed alone, in a slice or inside a map.
func TestMessageValue(t *testing.T) {
	m := Message{Role: "user", Content: "hi"}
	tests := []struct {
		name string
		vars map[string]any
		want string
	}{
		{"slice", map[string]any{"messages": []Message{m}}, `[{"role": "user", "content": "hi"}]`},
		{"alone", map[string]any{"messages": m}, `{"role": "user", "content": "hi"}`},
		{"nested", map[string]any{"messages": map[string]any{"m": m}}, `{"m": {"role": "user", "content": "hi"}}`},
	}
	tmpl, err := Parse("{{ messages | tojson }}")
	require.NoError(t, err)
	for _, tc := range tests {
		got, err := tmpl.Render(tc.vars)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, got, tc.name)
	}
}
