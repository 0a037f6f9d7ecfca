// Package tokenizer implements Hugging Face tokenizer.json BPE tokenizers
// (byte-level as in DeepSeek-V3/Qwen2/Llama-3, and SentencePiece-style with
// ▁ metaspace and byte fallback as in Llama-2) exactly to the token, plus
// streaming decode and chat templates.
//
// The encode pipeline mirrors HF tokenizers: added tokens are split out
// first (leftmost-longest, honouring lstrip/rstrip/single_word/normalized),
// then the normalizer, the pre-tokenizer and the BPE model run on the rest.
// Split patterns of real checkpoints use the look-ahead `\s+(?!\S)`, which
// Go's regexp cannot express, so the DeepSeek-V3, Qwen2 and Llama-3
// patterns are scanned by hand; other patterns go through Go's regexp with
// Oniguruma's Unicode classes and a hand-handled `\s+(?!\S)|\s+` tail.
// Simple class-run patterns (A?B+, as in deepseek-llm/coder) skip the
// regexp engine. Unsupported components fail Load with an error naming
// them: models other than BPE (WordPiece, Unigram), BPE dropout, NFKC/NFKD
// and Bert normalizers, pre-tokenizers other than Split, ByteLevel, Digits,
// Metaspace, WhitespaceSplit and Sequence, and look-around in patterns other
// than the `\s+(?!\S)|\s+` tail. Decode does not apply transformers'
// clean_up_tokenization_spaces (DeepSeek and Qwen set it to false).
//
// Chat templates are rendered by a small Jinja2 interpreter (package jinja)
// rather than per-family Go renderers: checkpoints ship their template in
// tokenizer_config.json and users bring new ones (V3.1, V3.2, R1 variants
// differ in details such as where <think> goes), so executing the template
// is the only way to stay exact without code changes per release. The
// interpreter covers what DeepSeek/Qwen/Llama templates use (namespace,
// loops with loop.*, macros, filters such as tojson, string methods, slices)
// with transformers' settings (trim_blocks, lstrip_blocks).
//
// A Tokenizer is safe for concurrent use.
package tokenizer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tokenizer encodes text to token ids and back.
type Tokenizer struct {
	model       *bpe
	normalizer  normalizer
	pre         preTokenizer
	preNotFirst preTokenizer // pre for text not at offset 0, when they differ
	decoder     decoder

	added          []addedToken
	addedByID      map[int]*addedToken
	addedByContent map[string]*addedToken
	rawTrie        *trie // added tokens with normalized=false
	normTrie       *trie // added tokens with normalized=true (normalized content)

	prefixIDs, suffixIDs []int // added by Encode(..., true)
	bos                  int   // -1 when none
	eos                  []int
	bosToken, eosToken   string
	vocabSize            int

	chatTemplate  string
	namedTemplate map[string]string

	// EncodeReader (encode_stream.go): whether text may be cut after a
	// line break, and the normalizer for text that continues a segment.
	cuttable bool
	normCont normalizer
}

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type rawTokenizer struct {
	Version       string          `json:"version"`
	AddedTokens   []addedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

// Load reads dir/tokenizer.json and, if present, dir/tokenizer_config.json.
func Load(dir string) (*Tokenizer, error) {
	tj := filepath.Join(dir, "tokenizer.json")
	data, err := os.ReadFile(tj)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		cfg = nil
	}
	t, err := FromBytes(data, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tj, err)
	}
	return t, nil
}

// FromBytes builds a Tokenizer from the contents of tokenizer.json and
// tokenizer_config.json (configJSON may be nil).
func FromBytes(tokenizerJSON, configJSON []byte) (*Tokenizer, error) {
	var r rawTokenizer
	dec := json.NewDecoder(bytes.NewReader(tokenizerJSON))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if isNull(r.Model) {
		return nil, fmt.Errorf("tokenizer.json: missing model")
	}
	t := &Tokenizer{bos: -1, addedByID: map[int]*addedToken{}, addedByContent: map[string]*addedToken{}}
	var err error
	if t.model, err = parseBPE(r.Model); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if t.normalizer, err = parseNormalizer(r.Normalizer); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if t.pre, err = parsePreTokenizer(r.PreTokenizer); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if t.decoder, err = parseDecoder(r.Decoder); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if err := t.foldByteLevel(); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	t.preNotFirst = metaspaceNotFirst(t.pre)
	t.vocabSize = len(t.model.idToToken)
	for i, a := range r.AddedTokens {
		if a.ID < 0 || a.ID >= 1<<24 {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d] %q: bad id %d", i, a.Content, a.ID)
		}
		if a.Content == "" {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d]: empty content", i)
		}
		t.added = append(t.added, a)
		if a.ID >= t.vocabSize {
			t.vocabSize = a.ID + 1
		}
	}
	t.rawTrie, t.normTrie = &trie{}, &trie{}
	for i := range t.added {
		a := &t.added[i]
		t.addedByID[a.ID] = a
		if _, dup := t.addedByContent[a.Content]; !dup {
			t.addedByContent[a.Content] = a
		}
		if a.Normalized {
			content := a.Content
			if t.normalizer != nil {
				content = t.normalizer.normalize(content)
			}
			if content != "" {
				t.normTrie.add(content, a)
			}
		} else {
			t.rawTrie.add(a.Content, a)
		}
	}
	t.cuttable, t.normCont = t.cutRules()
	if err := t.parsePostProcessor(r.PostProcessor); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if configJSON != nil {
		if err := t.applyConfig(configJSON); err != nil {
			return nil, fmt.Errorf("tokenizer_config.json: %w", err)
		}
	}
	return t, nil
}

// foldByteLevel lets the model work on raw bytes when ByteLevel is the last
// pre-tokenizer, avoiding a rune-mapped copy of every word.
func (t *Tokenizer) foldByteLevel() error {
	switch p := t.pre.(type) {
	case preByteLevel:
		p.mapBytes = false
		t.pre = p
		return t.model.enableByteLevel()
	case preSequence:
		if len(p) == 0 {
			return nil
		}
		if last, ok := p[len(p)-1].(preByteLevel); ok {
			last.mapBytes = false
			seq := append(preSequence(nil), p...)
			seq[len(seq)-1] = last
			t.pre = seq
			return t.model.enableByteLevel()
		}
	}
	return nil
}

type rawTemplateItem struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

type rawPostProcessor struct {
	Type          string            `json:"type"`
	Single        []rawTemplateItem `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
	Processors []json.RawMessage `json:"processors"`
	Sep        []json.RawMessage `json:"sep"`
	Cls        []json.RawMessage `json:"cls"`
}

func (t *Tokenizer) parsePostProcessor(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var r rawPostProcessor
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("post_processor: %w", err)
	}
	switch r.Type {
	case "ByteLevel":
		return nil // offsets only
	case "Sequence":
		for i, p := range r.Processors {
			if err := t.parsePostProcessor(p); err != nil {
				return fmt.Errorf("post_processor Sequence[%d]: %w", i, err)
			}
		}
		return nil
	case "TemplateProcessing":
		seenSeq := false
		for _, it := range r.Single {
			switch {
			case it.Sequence != nil:
				seenSeq = true
			case it.SpecialToken != nil:
				st, ok := r.SpecialTokens[it.SpecialToken.ID]
				if !ok {
					return fmt.Errorf("post_processor TemplateProcessing: special token %q not listed", it.SpecialToken.ID)
				}
				if seenSeq {
					t.suffixIDs = append(t.suffixIDs, st.IDs...)
				} else {
					t.prefixIDs = append(t.prefixIDs, st.IDs...)
				}
			}
		}
		if len(t.prefixIDs) > 0 {
			t.bos = t.prefixIDs[0]
		}
		return nil
	case "RobertaProcessing", "BertProcessing":
		var cls, sep int
		if len(r.Cls) != 2 || len(r.Sep) != 2 ||
			json.Unmarshal(r.Cls[1], &cls) != nil || json.Unmarshal(r.Sep[1], &sep) != nil {
			return fmt.Errorf("post_processor %s: bad cls/sep", r.Type)
		}
		t.prefixIDs = append(t.prefixIDs, cls)
		t.suffixIDs = append(t.suffixIDs, sep)
		t.bos = cls
		return nil
	case "":
		return fmt.Errorf("post_processor: missing type")
	}
	return fmt.Errorf("post_processor %q: unsupported", r.Type)
}

type rawConfig struct {
	AddBOSToken  *bool           `json:"add_bos_token"`
	AddEOSToken  *bool           `json:"add_eos_token"`
	BOSToken     json.RawMessage `json:"bos_token"`
	EOSToken     json.RawMessage `json:"eos_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
}

// tokenContent reads "tok" or {"content": "tok"} or null.
func tokenContent(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var o struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return "", err
	}
	return o.Content, nil
}

func (t *Tokenizer) applyConfig(data []byte) error {
	var c rawConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return err
	}
	var err error
	if t.bosToken, err = tokenContent(c.BOSToken); err != nil {
		return fmt.Errorf("bos_token: %w", err)
	}
	if t.eosToken, err = tokenContent(c.EOSToken); err != nil {
		return fmt.Errorf("eos_token: %w", err)
	}
	bosID, hasBOS := t.TokenID(t.bosToken)
	if t.bosToken != "" && !hasBOS {
		return fmt.Errorf("bos_token %q is not in the vocabulary", t.bosToken)
	}
	if hasBOS {
		t.bos = bosID
	}
	if t.eosToken != "" {
		id, ok := t.TokenID(t.eosToken)
		if !ok {
			return fmt.Errorf("eos_token %q is not in the vocabulary", t.eosToken)
		}
		t.eos = []int{id}
	}
	// transformers' Llama-style tokenizers rebuild the post-processor from
	// add_bos_token/add_eos_token, so these override tokenizer.json.
	if c.AddBOSToken != nil {
		t.prefixIDs = nil
		if *c.AddBOSToken && hasBOS {
			t.prefixIDs = []int{bosID}
		}
	}
	if c.AddEOSToken != nil {
		t.suffixIDs = nil
		if *c.AddEOSToken && len(t.eos) > 0 {
			t.suffixIDs = []int{t.eos[0]}
		}
	}
	if !isNull(c.ChatTemplate) {
		var s string
		if err := json.Unmarshal(c.ChatTemplate, &s); err == nil {
			t.chatTemplate = s
		} else {
			var named []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if err := json.Unmarshal(c.ChatTemplate, &named); err != nil {
				return fmt.Errorf("chat_template: expected a string or a list of {name, template}")
			}
			t.namedTemplate = map[string]string{}
			for _, n := range named {
				t.namedTemplate[n.Name] = n.Template
			}
			t.chatTemplate = t.namedTemplate["default"]
		}
	}
	return nil
}

// Encode returns the token ids of text. With addSpecial it adds the
// tokens the checkpoint adds by default (BOS for DeepSeek/Llama, none for
// Qwen2), following tokenizer_config.json's add_bos_token/add_eos_token
// or else tokenizer.json's post-processor. Special tokens written in the
// text (e.g. a rendered chat template) are always recognised; encode a
// rendered template with addSpecial=false since it already holds the BOS.
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int, error) {
	return t.EncodeContext(context.Background(), text, addSpecial)
}

// EncodeContext is Encode that stops early with ctx's error when ctx is
// cancelled (checked every few thousand words, for huge inputs).
func (t *Tokenizer) EncodeContext(ctx context.Context, text string, addSpecial bool) ([]int, error) {
	if !utf8.ValidString(text) {
		return nil, fmt.Errorf("tokenizer: encode: input is not valid UTF-8")
	}
	ids := make([]int, 0, min(len(text)/3, 1<<20)+4) // grows past 1M ids if needed
	if addSpecial {
		ids = append(ids, t.prefixIDs...)
	}
	ids, err := t.encodeAppend(ctx, text, ids, false)
	if err != nil {
		return nil, err
	}
	if addSpecial {
		ids = append(ids, t.suffixIDs...)
	}
	return ids, nil
}

// encodeAppend appends the ids of text (valid UTF-8) to ids, without the
// special tokens of addSpecial. cont says that text continues a segment
// cut by EncodeReader: it is not the start of the input (Metaspace
// "first" does not prepend) nor of a segment (Prepend normalizers do not
// apply to the text before its first added token).
func (t *Tokenizer) encodeAppend(ctx context.Context, text string, ids []int, cont bool) ([]int, error) {
	var ctxErr error
	words := 0
	encodeWord := func(w string) {
		if ctxErr != nil {
			return
		}
		if words++; words%4096 == 0 {
			if ctxErr = ctx.Err(); ctxErr != nil {
				return
			}
		}
		ids = t.model.encodeWord(w, ids)
	}
	t.rawTrie.split(text, func(seg string, rawOff int, tok *addedToken) {
		if tok != nil {
			ids = append(ids, tok.ID)
			return
		}
		switch {
		case cont && rawOff == 0 && t.normCont != nil:
			seg = t.normCont.normalize(seg)
		case t.normalizer != nil:
			seg = t.normalizer.normalize(seg)
		}
		t.normTrie.split(seg, func(seg string, off int, tok *addedToken) {
			pre := t.pre
			if t.preNotFirst != nil && (cont || rawOff > 0 || off > 0) {
				pre = t.preNotFirst // Metaspace prepend_scheme "first"
			}
			switch {
			case tok != nil:
				ids = append(ids, tok.ID)
			case pre != nil:
				pre.split(seg, encodeWord)
			case seg != "":
				encodeWord(seg)
			}
		})
	})
	if ctxErr != nil {
		return nil, fmt.Errorf("tokenizer: encode: %w", ctxErr)
	}
	return ids, nil
}

// tokenString returns the string of id: added tokens first, then the model.
func (t *Tokenizer) tokenString(id int) (string, bool) {
	if a, ok := t.addedByID[id]; ok {
		return a.Content, true
	}
	if id >= 0 && id < len(t.model.idToToken) {
		if s := t.model.idToToken[id]; s != "" {
			return s, true
		}
	}
	return "", false
}

// Decode returns the text of ids, special tokens included; unknown ids
// are skipped as HF does.
func (t *Tokenizer) Decode(ids []int) string {
	return t.decode(ids, false)
}

// DecodeSkipSpecial is Decode without special tokens (BOS, EOS, ...), as
// HF's skip_special_tokens=True.
func (t *Tokenizer) DecodeSkipSpecial(ids []int) string {
	return t.decode(ids, true)
}

func (t *Tokenizer) decode(ids []int, skipSpecial bool) string {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		if skipSpecial && t.IsSpecial(id) {
			continue
		}
		if s, ok := t.tokenString(id); ok {
			tokens = append(tokens, s)
		}
	}
	if t.decoder == nil {
		return strings.Join(tokens, " ")
	}
	return strings.Join(t.decoder.decodeChain(tokens), "")
}

// BOS returns the beginning-of-sequence id, if the tokenizer has one.
func (t *Tokenizer) BOS() (int, bool) { return t.bos, t.bos >= 0 }

// EOS returns the end-of-sequence ids from tokenizer_config.json (the
// engine adds generation_config.json's eos_token_id list).
func (t *Tokenizer) EOS() []int { return append([]int(nil), t.eos...) }

// VocabSize is one more than the largest id, added tokens included.
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool {
	a, ok := t.addedByID[id]
	return ok && a.Special
}

// TokenID returns the id of a token string (added tokens first).
func (t *Tokenizer) TokenID(tok string) (int, bool) {
	if tok == "" {
		return 0, false
	}
	if a, ok := t.addedByContent[tok]; ok {
		return a.ID, true
	}
	id, ok := t.model.vocab[tok]
	return int(id), ok
}

// TokenString returns the vocabulary string of id (in the model's
// alphabet, e.g. "Ġthe" for byte-level BPE).
func (t *Tokenizer) TokenString(id int) (string, bool) { return t.tokenString(id) }

// trie is a byte trie over added-token contents for leftmost-longest search.
type trie struct {
	root  trieNode
	first [256]bool
	n     int
}

type trieNode struct {
	next map[byte]*trieNode
	tok  *addedToken
}

func (tr *trie) add(s string, tok *addedToken) {
	n := &tr.root
	for i := 0; i < len(s); i++ {
		if n.next == nil {
			n.next = map[byte]*trieNode{}
		}
		c, ok := n.next[s[i]]
		if !ok {
			c = &trieNode{}
			n.next[s[i]] = c
		}
		n = c
	}
	if n.tok == nil { // first listed wins on duplicate content
		n.tok = tok
	}
	tr.first[s[0]] = true
	tr.n++
}

// longestAt returns the longest token starting at s[i:].
func (tr *trie) longestAt(s string, i int) (*addedToken, int) {
	n := &tr.root
	var best *addedToken
	bestLen := 0
	for j := i; j < len(s); j++ {
		c, ok := n.next[s[j]]
		if !ok {
			break
		}
		n = c
		if n.tok != nil {
			best, bestLen = n.tok, j+1-i
		}
	}
	return best, bestLen
}

// split calls f for each segment of s: plain text (tok == nil) and added
// tokens, as HF's AddedVocabulary::find_matches.
func (tr *trie) split(s string, f func(seg string, off int, tok *addedToken)) {
	if tr.n == 0 {
		f(s, 0, nil)
		return
	}
	startOffset := 0
	for i := 0; i < len(s); {
		if !tr.first[s[i]] {
			i++
			continue
		}
		tok, n := tr.longestAt(s, i)
		if tok == nil {
			i++
			continue
		}
		start, stop := i, i+n
		if tok.SingleWord {
			startSpace := start == 0 || !endsWithWord(s[:start])
			stopSpace := stop == len(s) || !startsWithWord(s[stop:])
			if !startSpace || !stopSpace {
				// HF filters the non-overlapping matches after the search, so
				// the search resumes after the rejected match.
				i = stop
				continue
			}
		}
		if tok.LStrip {
			ns := len(strings.TrimRightFunc(s[:start], unicode.IsSpace))
			start = max(ns, startOffset)
		}
		if tok.RStrip {
			stop += len(s[stop:]) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
		}
		if start > startOffset {
			f(s[startOffset:start], startOffset, nil)
		}
		f(s[start:stop], start, tok)
		startOffset = stop
		i = stop
	}
	if startOffset < len(s) || len(s) == 0 {
		f(s[startOffset:], startOffset, nil)
	}
}

// isWordChar is Rust regex's Unicode \w (HF's single_word check):
// Alphabetic, marks, decimal digits, connector punctuation, join controls.
func isWordChar(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) || unicode.Is(unicode.Nl, r) ||
		unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Other_Alphabetic, r) || r == 0x200C || r == 0x200D
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return s != "" && isWordChar(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return s != "" && isWordChar(r)
}
