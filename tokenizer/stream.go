package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// StreamDecoder turns ids into text one at a time for streaming output.
// It never emits a partial UTF-8 character (text whose decode still ends
// in U+FFFD is held back until more ids arrive or Flush), and the
// concatenation of everything it returns equals Decode of all ids.
//
// It decodes a short window: the ids since the last emission plus the ids
// of the previous emission as context (decoders such as SentencePiece's
// Strip or Metaspace treat the first token specially), so each step costs
// O(window), not O(all ids). Not safe for concurrent use.
type StreamDecoder struct {
	t       *Tokenizer
	ids     []int
	prefix  string // Decode(ids[:prefixN])
	prefixN int
}

// NewStreamDecoder returns a decoder for one stream of ids.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder {
	return &StreamDecoder{t: t}
}

// Next adds id and returns the newly completed text (possibly "").
func (d *StreamDecoder) Next(id int) string {
	d.ids = append(d.ids, id)
	text := d.t.Decode(d.ids)
	if len(text) <= len(d.prefix) || strings.HasSuffix(text, "\uFFFD") || !strings.HasPrefix(text, d.prefix) {
		return ""
	}
	out := text[len(d.prefix):]
	// Slide the window: keep the ids just emitted as context.
	d.ids = d.ids[d.prefixN:]
	d.prefixN = len(d.ids)
	d.prefix = d.t.Decode(d.ids)
	if !utf8.ValidString(out) {
		// cannot happen with valid decodes; keep the invariant explicit
		return strings.ToValidUTF8(out, "\uFFFD")
	}
	return out
}

// Flush returns any held-back text (e.g. a trailing invalid byte sequence
// rendered as U+FFFD) and resets the decoder.
func (d *StreamDecoder) Flush() string {
	text := d.t.Decode(d.ids)
	out := ""
	if len(text) > len(d.prefix) && strings.HasPrefix(text, d.prefix) {
		out = text[len(d.prefix):]
	}
	d.ids, d.prefix, d.prefixN = nil, "", 0
	return out
}
