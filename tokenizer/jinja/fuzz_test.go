package jinja

import "testing"

// FuzzTemplate parses and renders arbitrary templates: errors are fine,
// panics, hangs and unbounded memory are not.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{
		"{{ messages[0]['content'] | tojson }}",
		"{% for m in messages %}{{ loop.index }}{{ m.role }}{% endfor %}",
		"{% set ns = namespace(a=1) %}{% set ns.a = ns.a + 1 %}{{ ns.a }}",
		"{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}",
		"{% for i in range(100000000) %}{% endfor %}",
		"{{ 'ab'[::-1] }}{{ [1,2,3][1:] }}{{ x if y else z }}",
		"{%- if a -%} {{ b }} {%- elif c %}{% else %}{% endif %}",
		"{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
		"{% set ns = namespace() %}{% set ns.x = ns %}{{ ns }}",
		"{{ ((((((((((1)))))))))) }}{{ {'a': [1, {'b': none}]} | tojson(indent=2) }}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > 1<<16 {
			return
		}
		tmpl, err := Parse(src)
		if err != nil {
			return
		}
		_, _ = tmpl.Render(map[string]any{"messages": []map[string]any{{"role": "user", "content": "hi"}}, "y": true})
	})
}
