package tokenizer

import (
	"strings"
)

// StreamDecoder turns ids into text one at a time for streaming output.
// It never emits a partial UTF-8 character (text whose decode still ends
// in U+FFFD is held back until more ids arrive or Flush), and the
// concatenation of everything it returns equals Decode of all ids (or, with
// a context, the text the ids add after it).
//
// It decodes a short window: the ids since the last emission plus the ids
// of the previous emission as context (decoders such as SentencePiece's
// Strip or Metaspace treat the first token specially), so each step costs
// O(window), not O(all ids). Not safe for concurrent use.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	ids         []int
	prefix      string // decode(ids[:prefixN])
	prefixN     int
}

// StreamOptions configure NewStreamDecoderWith.
type StreamOptions struct {
	// Context holds ids already shown, e.g. the prompt: the decoder emits
	// only the text that follows them, decoded in their context (so with
	// SentencePiece-style decoders a reply's first word keeps its space).
	Context []int
	// SkipSpecial leaves special tokens (BOS, EOS, ...) out of the text, as
	// skip_special_tokens=True.
	SkipSpecial bool
}

// contextTokens bounds how much of StreamOptions.Context is decoded.
const contextTokens = 8

// NewStreamDecoder returns a decoder for one stream of ids.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder {
	return &StreamDecoder{t: t}
}

// NewStreamDecoderWith returns a decoder for ids that follow o.Context.
func (t *Tokenizer) NewStreamDecoderWith(o StreamOptions) *StreamDecoder {
	d := &StreamDecoder{t: t, skipSpecial: o.SkipSpecial}
	ctx := o.Context
	if len(ctx) > contextTokens {
		ctx = ctx[len(ctx)-contextTokens:]
	}
	// A context ending inside a character would never be a prefix of the
	// completed text: drop such trailing ids.
	for len(ctx) > 0 && strings.HasSuffix(d.decode(ctx), "\uFFFD") {
		ctx = ctx[:len(ctx)-1]
	}
	d.ids = append([]int(nil), ctx...)
	d.prefixN = len(d.ids)
	d.prefix = d.decode(d.ids)
	return d
}

func (d *StreamDecoder) decode(ids []int) string {
	if d.skipSpecial {
		return d.t.DecodeSkipSpecial(ids)
	}
	return d.t.Decode(ids)
}

// Next adds id and returns the newly completed text (possibly "").
func (d *StreamDecoder) Next(id int) string {
	d.ids = append(d.ids, id)
	text := d.decode(d.ids)
	if len(text) <= len(d.prefix) || strings.HasSuffix(text, "\uFFFD") || !strings.HasPrefix(text, d.prefix) {
		return ""
	}
	out := text[len(d.prefix):]
	// Slide the window: keep the ids just emitted as context.
	d.ids = d.ids[d.prefixN:]
	d.prefixN = len(d.ids)
	d.prefix = d.decode(d.ids)
	return out
}

// Flush returns any held-back text (e.g. a trailing invalid byte sequence
// rendered as U+FFFD) and resets the decoder.
func (d *StreamDecoder) Flush() string {
	text := d.decode(d.ids)
	out := ""
	if len(text) > len(d.prefix) && strings.HasPrefix(text, d.prefix) {
		out = text[len(d.prefix):]
	}
	d.ids, d.prefix, d.prefixN = nil, "", 0
	return out
}
