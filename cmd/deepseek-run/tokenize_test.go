package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const tokDir = "../../testdata/tokenizers/deepseek-v3"

func TestRunTokenize(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		stdin    string
		code     int
		stdout   string
		errMatch string
	}{
		{name: "plain", args: []string{"-m", tokDir}, stdin: "Hello world", code: 0, stdout: "[19923, 2058]\n"},
		{name: "plain special adds BOS", args: []string{"-m", tokDir, "--special"}, stdin: "Hello world", code: 0, stdout: "[0, 19923, 2058]\n"},
		{name: "plain empty", args: []string{"-m", tokDir}, stdin: "", code: 0, stdout: "[]\n"},
		{name: "jsonl", args: []string{"-m", tokDir, "--jsonl"},
			stdin: "{\"text\": \"Hello world\"}\n{\"text\": \" Hello World!\"}\n{\"text\": \"\"}\n", code: 0,
			stdout: "{\"ids\": [19923, 2058]}\n{\"ids\": [45948, 4495, 3]}\n{\"ids\": []}\n"},
		{name: "jsonl bad line", args: []string{"-m", tokDir, "--jsonl"}, stdin: "{\"text\": \"a\"}\nnot json\n", code: 1, errMatch: "line 2"},
		{name: "jsonl missing text", args: []string{"-m", tokDir, "--jsonl"}, stdin: "{\"x\": 1}\n", code: 1, errMatch: `missing "text"`},
		{name: "missing -m", args: nil, code: 2, errMatch: "-m DIR is required"},
		{name: "unknown flag", args: []string{"-m", tokDir, "--nope"}, code: 2, errMatch: "flag provided but not defined"},
		{name: "extra arg", args: []string{"-m", tokDir, "extra"}, code: 2, errMatch: "unexpected argument"},
		{name: "bad dir", args: []string{"-m", "does-not-exist"}, stdin: "x", code: 1, errMatch: "tokenizer.json"},
		{name: "invalid utf8", args: []string{"-m", tokDir}, stdin: "\xff", code: 1, errMatch: "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runTokenize(context.Background(), tc.args, strings.NewReader(tc.stdin), &out, &errb)
			assert.Equal(t, tc.code, code, "stderr: %s", errb.String())
			if tc.stdout != "" {
				assert.Equal(t, tc.stdout, out.String())
			}
			if tc.errMatch != "" {
				assert.Contains(t, errb.String(), tc.errMatch)
				assert.Equal(t, 1, strings.Count(errb.String(), "\n"), "one-line reason")
			}
			if tc.code == 0 {
				// output must be valid JSON (array or JSON lines)
				for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
					var v any
					require.NoError(t, json.Unmarshal([]byte(line), &v), line)
				}
			}
		})
	}
}
