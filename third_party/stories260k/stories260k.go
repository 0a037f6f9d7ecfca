// Package stories260k embeds the stories260K model (karpathy/tinyllamas,
// MIT licence, see LICENSE and README.md) as a Hugging Face checkpoint
// directory: a 260K-parameter Llama trained on TinyStories with its 512-token
// SentencePiece-style tokenizer. It is deepseek-run's offline default model,
// there to show the engine working, not to be useful.
package stories260k

import (
	"embed"
	"io/fs"
)

//go:embed config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json LICENSE
var files embed.FS

// FS returns the checkpoint directory: config.json, generation_config.json,
// model.safetensors, tokenizer.json, tokenizer_config.json and LICENSE at
// its root. The returned fs.FS is read-only and safe for concurrent use.
func FS() fs.FS { return files }
