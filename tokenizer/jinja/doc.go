// Package jinja is a Jinja2 subset interpreter for chat templates, with the
// settings transformers uses: trim_blocks, lstrip_blocks, loopcontrols, a
// tojson that does not HTML-escape, and raise_exception/strftime_now
// globals.
//
// It covers what DeepSeek, Qwen and Llama templates use (namespace, loops
// with loop.*, macros, filters, tests, string/list/dict methods, slices,
// Python-style % and format). Parsing and rendering are bounded (nesting
// depth, execution steps, output size) so a hostile template fails with an
// error instead of exhausting the stack or memory. Package tokenizer renders
// chat messages with it.
//
// The grammar and filters are checked against Jinja2 itself:
// testdata/features.json is written by testdata/gen_features.py.
package jinja
