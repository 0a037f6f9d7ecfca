package serving

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
)

// ReadJSONL reads prompts, one JSON object a line: {"prompt": "text" or
// [token ids], "max_tokens": N}; "output_len" is accepted for max_tokens
// and "input_len" records the prompt's token count when known. Blank lines
// are skipped; errors name the line.
func ReadJSONL(r io.Reader, name string) ([]Prompt, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20) // long prompts
	var out []Prompt
	for ln := 1; sc.Scan(); ln++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var rec struct {
			Prompt    json.RawMessage `json:"prompt"`
			MaxTokens *int            `json:"max_tokens"`
			OutputLen *int            `json:"output_len"`
			InputLen  int             `json:"input_len"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, ln, err)
		}
		var p Prompt
		switch {
		case len(rec.Prompt) == 0:
			return nil, fmt.Errorf("%s:%d: no \"prompt\" field", name, ln)
		case rec.Prompt[0] == '"':
			if err := json.Unmarshal(rec.Prompt, &p.Text); err != nil {
				return nil, fmt.Errorf("%s:%d: prompt: %w", name, ln, err)
			}
		case rec.Prompt[0] == '[':
			if err := json.Unmarshal(rec.Prompt, &p.IDs); err != nil {
				return nil, fmt.Errorf("%s:%d: prompt: want a string or a list of token ids: %w", name, ln, err)
			}
			if len(p.IDs) == 0 {
				return nil, fmt.Errorf("%s:%d: prompt: empty token list", name, ln)
			}
			p.InputLen = len(p.IDs)
		default:
			return nil, fmt.Errorf("%s:%d: prompt: want a string or a list of token ids, got %s", name, ln, truncate(string(rec.Prompt), 40))
		}
		if rec.InputLen > 0 {
			p.InputLen = rec.InputLen
		}
		switch {
		case rec.MaxTokens != nil:
			p.MaxTokens = *rec.MaxTokens
		case rec.OutputLen != nil:
			p.MaxTokens = *rec.OutputLen
		}
		if p.MaxTokens < 0 {
			return nil, fmt.Errorf("%s:%d: max_tokens %d is negative", name, ln, p.MaxTokens)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no prompts", name)
	}
	return out, nil
}

// SyntheticOptions describe random prompts of given token lengths, as
// vLLM's "random" dataset.
type SyntheticOptions struct {
	NumPrompts int
	InputLen   int
	OutputLen  int
	// RangeRatio spreads lengths uniformly over [len·(1−r), len·(1+r)]
	// (0 = exact).
	RangeRatio float64
	// Text makes text prompts (chat endpoints; about one token a word)
	// instead of token-id prompts.
	Text bool
	// TokenLo and TokenHi bound the random ids, [lo, hi): ids every
	// vocabulary of the benchmarked model has, outside its special tokens.
	TokenLo, TokenHi int
	Seed             uint64
}

// words make text prompts; each is one token in common BPE vocabularies
// when preceded by a space.
var words = strings.Fields(`the of and to in is that it was for on are with as his they be at one
have this from or had by hot word but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them write would like so these her
long make thing see him two has look more day could go come did number sound no most people my over
know water than call first who may down side been now find`)

// Synthetic makes n prompts of the given lengths, deterministic for Seed.
func Synthetic(o SyntheticOptions) ([]Prompt, error) {
	if o.NumPrompts <= 0 || o.InputLen <= 0 || o.OutputLen <= 0 {
		return nil, fmt.Errorf("synthetic prompts: num prompts (%d), input len (%d) and output len (%d) must be positive", o.NumPrompts, o.InputLen, o.OutputLen)
	}
	if o.RangeRatio < 0 || o.RangeRatio >= 1 {
		return nil, fmt.Errorf("synthetic prompts: range ratio %g must be in [0, 1)", o.RangeRatio)
	}
	if !o.Text && (o.TokenLo < 0 || o.TokenHi <= o.TokenLo) {
		return nil, fmt.Errorf("synthetic prompts: token range [%d, %d) is empty", o.TokenLo, o.TokenHi)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0xda7a5e7))
	length := func(n int) int {
		if o.RangeRatio == 0 {
			return n
		}
		lo, hi := int(float64(n)*(1-o.RangeRatio)), int(float64(n)*(1+o.RangeRatio))
		return max(1, lo+rng.IntN(hi-lo+1))
	}
	out := make([]Prompt, o.NumPrompts)
	for i := range out {
		in := length(o.InputLen)
		p := Prompt{MaxTokens: length(o.OutputLen), InputLen: in}
		if o.Text {
			ws := make([]string, in)
			for j := range ws {
				ws[j] = words[rng.IntN(len(words))]
			}
			p.Text = strings.Join(ws, " ")
		} else {
			p.IDs = make([]int, in)
			for j := range p.IDs {
				p.IDs[j] = o.TokenLo + rng.IntN(o.TokenHi-o.TokenLo)
			}
		}
		out[i] = p
	}
	return out, nil
}

// ErrNoPrompts is returned by Take for an empty prompt list.
var ErrNoPrompts = errors.New("no prompts")

// Take returns n prompts from ps, cycling through them when n exceeds
// len(ps) (a small JSONL file can drive a long run).
func Take(ps []Prompt, n int) ([]Prompt, error) {
	if len(ps) == 0 {
		return nil, ErrNoPrompts
	}
	out := make([]Prompt, n)
	for i := range out {
		out[i] = ps[i%len(ps)]
	}
	return out, nil
}
