package serve

import (
	"strings"
)

// piece is the text one generated token adds, with the token's logprob
// entry (nil when logprobs were not asked for). Text may be "" while the
// decoder waits for the rest of a UTF-8 character.
type piece struct {
	text string
	lp   *TokenLogprob
}

// stopMatcher finds stop strings in generated text across token
// boundaries. It holds back a tail that could still become a stop string,
// so text that turns out to start one is never emitted.
type stopMatcher struct {
	stops   []string
	pending []piece
}

// push adds p and returns the pieces now safe to emit. When a stop string
// completed, stopped is true and out ends right before it.
func (m *stopMatcher) push(p piece) (out []piece, stopped bool) {
	if len(m.stops) == 0 {
		return []piece{p}, false
	}
	m.pending = append(m.pending, p)
	var sb strings.Builder
	for _, q := range m.pending {
		sb.WriteString(q.text)
	}
	text := sb.String()
	// The earliest match wins: nothing after it is emitted.
	at := -1
	for _, s := range m.stops {
		if i := strings.Index(text, s); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at >= 0 {
		out = m.take(at, true)
		m.pending = nil
		return out, true
	}
	return m.take(len(text)-m.holdBack(text), false), false
}

// holdBack is the length of the longest suffix of text that is a proper
// prefix of a stop string.
func (m *stopMatcher) holdBack(text string) int {
	best := 0
	for _, s := range m.stops {
		for n := min(len(s)-1, len(text)); n > best; n-- {
			if strings.HasSuffix(text, s[:n]) {
				best = n
				break
			}
		}
	}
	return best
}

// take removes and returns the pending pieces that lie within the first n
// bytes of the pending text; with cut, a piece straddling n is cut there
// and returned too (its token did produce the text before the stop).
func (m *stopMatcher) take(n int, cut bool) []piece {
	var out []piece
	pos, i := 0, 0
	for ; i < len(m.pending); i++ {
		q := m.pending[i]
		end := pos + len(q.text)
		if end > n {
			if cut && pos < n {
				q.text = q.text[:n-pos]
				out = append(out, q)
			}
			break
		}
		out = append(out, q)
		pos = end
	}
	m.pending = m.pending[i:]
	return out
}

// flush returns what is still held back once generation has ended.
func (m *stopMatcher) flush() []piece {
	out := m.pending
	m.pending = nil
	return out
}

// thinkSplitter separates a reasoning model's thinking from its answer:
// text up to "</think>" is reasoning, the rest content. It is used when
// the chat template opened the <think> block in the prompt.
type thinkSplitter struct {
	inThink bool
	held    string // reasoning tail that may begin "</think>"
}

const thinkEnd = "</think>"

// split returns the reasoning and content parts of the next text.
func (t *thinkSplitter) split(text string) (reasoning, content string) {
	if !t.inThink {
		return "", text
	}
	text = t.held + text
	t.held = ""
	if i := strings.Index(text, thinkEnd); i >= 0 {
		t.inThink = false
		return text[:i], text[i+len(thinkEnd):]
	}
	for n := min(len(thinkEnd)-1, len(text)); n > 0; n-- {
		if strings.HasSuffix(text, thinkEnd[:n]) {
			t.held = text[len(text)-n:]
			return text[:len(text)-n], ""
		}
	}
	return text, ""
}

// flush returns held reasoning text at the end of generation.
func (t *thinkSplitter) flush() string {
	s := t.held
	t.held = ""
	return s
}
