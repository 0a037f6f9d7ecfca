package serve

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// runStops feeds pieces through a stopMatcher the way runChoice does and
// returns the emitted text and whether a stop string ended it.
func runStops(stops []string, pieces []string) (string, bool) {
	m := &stopMatcher{stops: stops}
	var sb strings.Builder
	for _, p := range pieces {
		out, hit := m.push(piece{text: p})
		for _, q := range out {
			sb.WriteString(q.text)
		}
		if hit {
			return sb.String(), true
		}
	}
	for _, q := range m.flush() {
		sb.WriteString(q.text)
	}
	return sb.String(), false
}

func TestStopMatcher(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stops  []string
		pieces []string
		want   string
		hit    bool
	}{
		{"no stops", nil, []string{"a", "b"}, "ab", false},
		{"inside one piece", []string{"END"}, []string{"abENDcd"}, "ab", true},
		{"across three pieces", []string{"END"}, []string{"ab", "E", "N", "Dxx"}, "ab", true},
		{"partial match released", []string{"END"}, []string{"ab", "EN", "x", "y"}, "abENxy", false},
		{"partial match at the end is flushed", []string{"END"}, []string{"ab", "EN"}, "abEN", false},
		{"earliest of several", []string{"zz", "b"}, []string{"a", "bzz"}, "a", true},
		{"overlapping prefixes", []string{"aab"}, []string{"a", "a", "a", "b"}, "a", true},
		{"multibyte", []string{"é!"}, []string{"caf", "é", "!", "x"}, "caf", true},
		{"stop at start", []string{"x"}, []string{"xyz"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, hit := runStops(tc.stops, tc.pieces)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.hit, hit)
		})
	}
}

// A partial match is never emitted before it is resolved: the text out so
// far never ends with a proper prefix of a stop string that then completes.
func TestStopMatcherHoldsBack(t *testing.T) {
	m := &stopMatcher{stops: []string{"</s>"}}
	out, hit := m.push(piece{text: "hi <"})
	assert.False(t, hit)
	assert.Equal(t, "", joinPieces(out), "'hi <' may start the stop string: the whole piece waits")
	out, hit = m.push(piece{text: "/"})
	assert.False(t, hit)
	assert.Empty(t, joinPieces(out))
	out, hit = m.push(piece{text: "s>"})
	assert.True(t, hit)
	assert.Equal(t, "hi ", joinPieces(out))
}

func joinPieces(ps []piece) string {
	var sb strings.Builder
	for _, p := range ps {
		sb.WriteString(p.text)
	}
	return sb.String()
}

func TestThinkSplitter(t *testing.T) {
	for _, tc := range []struct {
		name             string
		pieces           []string
		reasoning, reply string
	}{
		{"tag in one piece", []string{"hmm", "</think>", "\n\nyes"}, "hmm", "\n\nyes"},
		{"tag across pieces", []string{"hmm</th", "in", "k>ok"}, "hmm", "ok"},
		{"false start", []string{"a</th", "x", "</think>b"}, "a</thx", "b"},
		{"never closed", []string{"still ", "think</"}, "still think</", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &thinkSplitter{inThink: true}
			var r, c strings.Builder
			for _, p := range tc.pieces {
				a, b := s.split(p)
				r.WriteString(a)
				c.WriteString(b)
			}
			r.WriteString(s.flush())
			assert.Equal(t, tc.reasoning, r.String())
			assert.Equal(t, tc.reply, c.String())
		})
	}
}
