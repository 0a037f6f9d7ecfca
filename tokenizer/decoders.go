package tokenizer

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns token strings back into text pieces (HF decode_chain).
type decoder interface {
	decodeChain(tokens []string) []string
}

type decSequence []decoder

func (d decSequence) decodeChain(tokens []string) []string {
	for _, x := range d {
		tokens = x.decodeChain(tokens)
	}
	return tokens
}

// decByteLevel maps the GPT-2 alphabet back to bytes; a token holding any
// other rune (e.g. an added token) contributes its UTF-8 bytes unchanged.
type decByteLevel struct{}

func (decByteLevel) decodeChain(tokens []string) []string {
	n := 0
	for _, t := range tokens {
		n += len(t)
	}
	buf := make([]byte, 0, n)
	for _, t := range tokens {
		start := len(buf)
		ok := true
		for _, r := range t {
			b, found := runeToByte[r]
			if !found {
				ok = false
				break
			}
			buf = append(buf, b)
		}
		if !ok {
			buf = append(buf[:start], t...)
		}
	}
	return []string{lossyUTF8(buf)}
}

// decByteFallback turns runs of <0xXX> tokens into their UTF-8 text, or
// one U+FFFD per byte when a run is not valid UTF-8.
type decByteFallback struct{}

func (decByteFallback) decodeChain(tokens []string) []string {
	out := make([]string, 0, len(tokens))
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range tokens {
		if b, ok := parseByteToken(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

func parseByteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(t[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

type decReplace struct {
	pattern string
	re      *regexp.Regexp
	content string
}

func (d decReplace) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		if d.re != nil {
			out[i] = d.re.ReplaceAllLiteralString(t, d.content)
		} else {
			out[i] = strings.ReplaceAll(t, d.pattern, d.content)
		}
	}
	return out
}

type decFuse struct{}

func (decFuse) decodeChain(tokens []string) []string { return []string{strings.Join(tokens, "")} }

// decStrip removes up to start leading and stop trailing copies of content
// from each token.
type decStrip struct {
	content     string
	start, stop int
}

func (d decStrip) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		for k := 0; k < d.start && d.content != "" && strings.HasPrefix(t, d.content); k++ {
			t = t[len(d.content):]
		}
		for k := 0; k < d.stop && d.content != "" && strings.HasSuffix(t, d.content); k++ {
			t = t[:len(t)-len(d.content)]
		}
		out[i] = t
	}
	return out
}

// decMetaspace turns the replacement char back into spaces; as in HF, the
// first token drops every replacement char when a prefix may be added.
type decMetaspace struct {
	replacement string
	prepend     bool
}

func (d decMetaspace) decodeChain(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		if i == 0 && d.prepend {
			out[i] = strings.ReplaceAll(t, d.replacement, "")
			continue
		}
		out[i] = strings.ReplaceAll(t, d.replacement, " ")
	}
	return out
}

type rawDecoder struct {
	Type           string            `json:"type"`
	Decoders       []json.RawMessage `json:"decoders"`
	Pattern        pattern           `json:"pattern"`
	Content        string            `json:"content"`
	Start          int               `json:"start"`
	Stop           int               `json:"stop"`
	Replacement    string            `json:"replacement"`
	PrependScheme  string            `json:"prepend_scheme"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
}

func parseDecoder(raw json.RawMessage) (decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	var r rawDecoder
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	switch r.Type {
	case "Sequence":
		var seq decSequence
		for i, sub := range r.Decoders {
			d, err := parseDecoder(sub)
			if err != nil {
				return nil, fmt.Errorf("decoder Sequence[%d]: %w", i, err)
			}
			if d != nil {
				seq = append(seq, d)
			}
		}
		return seq, nil
	case "ByteLevel":
		return decByteLevel{}, nil
	case "ByteFallback":
		return decByteFallback{}, nil
	case "Fuse":
		return decFuse{}, nil
	case "Replace":
		switch {
		case r.Pattern.String != nil:
			return decReplace{pattern: *r.Pattern.String, content: r.Content}, nil
		case r.Pattern.Regex != nil:
			re, err := compileOniguruma(*r.Pattern.Regex)
			if err != nil {
				return nil, fmt.Errorf("decoder Replace: %w", err)
			}
			return decReplace{re: re, content: r.Content}, nil
		}
		return nil, fmt.Errorf("decoder Replace: missing pattern")
	case "Strip":
		if r.Start < 0 || r.Stop < 0 {
			return nil, fmt.Errorf("decoder Strip: negative start/stop")
		}
		return decStrip{content: r.Content, start: r.Start, stop: r.Stop}, nil
	case "Metaspace":
		d := decMetaspace{replacement: r.Replacement, prepend: true}
		if d.replacement == "" {
			d.replacement = "▁"
		}
		if r.PrependScheme == "never" || (r.PrependScheme == "" && r.AddPrefixSpace != nil && !*r.AddPrefixSpace) {
			d.prepend = false
		}
		return d, nil
	case "":
		return nil, fmt.Errorf("decoder: missing type")
	}
	return nil, fmt.Errorf("decoder %q: unsupported", r.Type)
}
