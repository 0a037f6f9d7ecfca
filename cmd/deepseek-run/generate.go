package main

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// genOptions holds the generation command's flags.
type genOptions struct {
	model   string
	prompt  string
	n       int
	ctx     int
	temp    float64
	topK    int
	topP    float64
	minP    float64
	repeat  float64
	seed    seedFlag
	system  string
	chat    bool
	raw     bool
	device  string
	int8    bool
	threads int
	stats   bool
	json    bool
	verbose bool

	set        map[string]bool // flags given on the command line
	deviceNote string          // "running on cpu" line, printed when generation starts
}

func newGenerateFlags(stderr io.Writer, o *genOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("deepseek-run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.model, "m", "", "checkpoint `DIR` (config.json, *.safetensors, tokenizer.json); default: the embedded stories260K demo model")
	fs.StringVar(&o.prompt, "p", "", "`PROMPT` text; default: read stdin (empty when stdin is a terminal)")
	fs.IntVar(&o.n, "n", 256, "generate at most `N` tokens; -1 = until end of text or the context is full")
	fs.IntVar(&o.ctx, "ctx", 4096, "context size in `N` tokens (prompt + reply; bounds the KV cache), at most the model's max_position_embeddings (the default is lowered to it)")
	fs.Float64Var(&o.temp, "temp", 0, "sampling temperature `T`; 0 = greedy (default: the checkpoint's generation_config.json, else 0)")
	fs.IntVar(&o.topK, "top-k", 0, "keep the `K` most likely tokens; 0 = off (default: generation_config.json)")
	fs.Float64Var(&o.topP, "top-p", 0, "nucleus sampling: keep the most likely tokens up to `P` probability mass, in (0, 1]; 0 = off (default: generation_config.json)")
	fs.Float64Var(&o.minP, "min-p", 0, "drop tokens less likely than `P` × the most likely one; 0 = off")
	fs.Float64Var(&o.repeat, "repeat-penalty", 1, "`R` > 1 discourages repeats: divides the positive logits of tokens already in the text by R, multiplies negative ones; 1 = off, must be > 0")
	o.seed = seedFlag{random: true}
	fs.Var(&o.seed, "seed", "random `SEED`: the same seed and settings give the same text; -1 = a random seed, printed with the timings so the run can be repeated")
	fs.StringVar(&o.system, "system", "", "system `MESSAGE` (uses the chat template)")
	fs.BoolVar(&o.chat, "chat", false, "interactive multi-turn chat with the checkpoint's chat template (/bye quits, /clear forgets, Ctrl-C stops a reply)")
	fs.BoolVar(&o.raw, "raw", false, "treat -p as raw text even when the checkpoint has a chat template")
	fs.StringVar(&o.device, "device", "auto", "`DEVICE`: auto (a GPU when usable, else CPU), cpu or cuda (any case)")
	fs.BoolVar(&o.int8, "int8", false, "quantise projection weights to per-channel int8 at load (half the memory of bf16)")
	fs.IntVar(&o.threads, "threads", 0, "`N` CPU threads, at most the machine's cores; 0 = all cores")
	fs.BoolVar(&o.stats, "stats", false, "print MoE expert usage per layer after generating")
	fs.BoolVar(&o.json, "json", false, "print one JSON object with the text, ids and timings instead of streaming")
	fs.BoolVar(&o.verbose, "v", false, "verbose: say in full why no GPU is used")
	return fs
}

// parseFlags parses args with fs, turning flag errors into usage errors and
// rejecting stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) (map[string]bool, error) {
	fs.Usage = func() {} // errors are reported in one line by report
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (quote the prompt and pass it with -p)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set, nil
}

// parseCommandFlags is parseFlags for a subcommand: on -h it writes usage
// and the flags' defaults to stdout and returns errHelp.
func parseCommandFlags(fs *flag.FlagSet, args []string, stdout io.Writer, usage string) (map[string]bool, error) {
	set, err := parseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return nil, errHelp
	}
	return set, err
}

func runGenerate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var o genOptions
	fs := newGenerateFlags(stderr, &o)
	set, err := parseFlags(fs, args)
	if err == flag.ErrHelp {
		printUsage(stdout)
		return errHelp
	}
	if err != nil {
		return err
	}
	o.set = set
	if err := o.check(); err != nil {
		return err
	}
	mo := modelOptions{device: o.device, int8: o.int8, threads: o.threads, verbose: o.verbose,
		onNote: func(n string) { o.deviceNote = n }}
	m, loadTime, err := loadModel(ctx, o.model, mo, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	maxPos := contextLength(m)
	if o.set["ctx"] && o.ctx > maxPos {
		return usagef("--ctx %d is more than this model's context of %d tokens (max_position_embeddings in config.json): use --ctx %d or less", o.ctx, maxPos, maxPos)
	}
	if !o.chat && !o.set["p"] {
		p, err := readPrompt(ctx, stdin, m.Tokenizer(), min(o.ctx, maxPos), maxPos)
		if err != nil {
			return err
		}
		o.prompt = p
	}
	sampling, err := o.sampling(m)
	if err != nil {
		return err
	}
	if o.chat {
		return runChat(ctx, m, &o, sampling, stdin, stdout, stderr)
	}
	return generateOnce(ctx, m, &o, sampling, loadTime, stdout, stderr)
}

// check validates flag combinations before anything is loaded.
func (o *genOptions) check() error {
	if o.n == 0 || o.n < -1 {
		return usagef("-n must be positive or -1 (until the end of text), got %d", o.n)
	}
	if o.ctx <= 0 {
		return usagef("--ctx must be positive, got %d", o.ctx)
	}
	if err := checkThreads(o.threads); err != nil {
		return err
	}
	dev, err := checkDevice(o.device)
	if err != nil {
		return err
	}
	o.device = dev
	// The sampler takes 0 as "unset" (no penalty), which would show a
	// typed 0 as 1: refuse it like any other non-positive value.
	if o.set["repeat-penalty"] && !(o.repeat > 0) {
		return usagef("--repeat-penalty must be > 0 (1 = off), got %g", o.repeat)
	}
	if o.chat && o.json {
		return usagef("--json cannot be combined with --chat")
	}
	if o.chat && o.set["p"] {
		return usagef("--chat reads the turns from stdin; drop -p (or drop --chat for a single reply)")
	}
	if o.chat && o.raw {
		return usagef("--raw cannot be combined with --chat")
	}
	if o.raw && o.system != "" {
		return usagef("--system needs the chat template; drop --raw")
	}
	// Validate the sampling flags given now, so a bad value never waits
	// for a large checkpoint to load.
	if err := o.explicitSampling(engine.SamplerOptions{}).Validate(); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// explicitSampling overrides base with the sampling flags that were set.
func (o *genOptions) explicitSampling(base engine.SamplerOptions) engine.SamplerOptions {
	s := base
	if o.set["temp"] {
		s.Temperature = float32(o.temp)
	}
	if o.set["top-k"] {
		s.TopK = o.topK
	}
	if o.set["top-p"] {
		s.TopP = float32(o.topP)
	}
	if o.set["min-p"] {
		s.MinP = float32(o.minP)
	}
	if o.set["repeat-penalty"] {
		s.RepeatPenalty = float32(o.repeat)
	}
	if !o.seed.random {
		s.Seed = o.seed.v
	}
	return s
}

// seedFlag is --seed: a uint64, or -1 for a random one (as in llama.cpp).
type seedFlag struct {
	v      uint64
	random bool // -1 or not given
}

func (f *seedFlag) String() string {
	if f == nil || f.random {
		return "-1"
	}
	return strconv.FormatUint(f.v, 10)
}

func (f *seedFlag) Set(s string) error {
	if strings.TrimSpace(s) == "-1" {
		f.v, f.random = 0, true
		return nil
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return errors.New("want a number from 0 to 18446744073709551615, or -1 for a random seed")
	}
	f.v, f.random = v, false
	return nil
}

// checkThreads refuses a negative --threads and one above the cores this
// process may use: more goroutines per op than cores only adds overhead.
func checkThreads(n int) error {
	if n < 0 {
		return usagef("--threads must be >= 0 (0 = all cores), got %d", n)
	}
	if cores := runtime.NumCPU(); n > cores {
		return usagef("--threads %d is more than the %d CPU cores of this machine; use --threads %d or less (0 = all)", n, cores, cores)
	}
	return nil
}

// checkDevice returns the lower-cased --device, or a usage error.
func checkDevice(d string) (string, error) {
	switch l := strings.ToLower(strings.TrimSpace(d)); l {
	case "auto", "cpu", "cuda":
		return l, nil
	}
	return "", usagef("--device must be auto, cpu or cuda, got %q", d)
}

// sampling returns the sampler settings: the checkpoint's
// generation_config.json defaults, overridden by the flags, with a random
// seed unless --seed was given.
func (o *genOptions) sampling(m *engine.Model) (engine.SamplerOptions, error) {
	s := o.explicitSampling(m.Config().DefaultSampling())
	if o.seed.random {
		var b [8]byte
		if _, err := crand.Read(b[:]); err != nil {
			return s, fmt.Errorf("seeding the sampler: %w", err)
		}
		s.Seed = binary.LittleEndian.Uint64(b[:]) >> 1 // fits an int64 for JSON consumers
		o.seed.v = s.Seed
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("sampling settings from generation_config.json: %w", err)
	}
	return s, nil
}

// readPrompt reads the prompt from stdin, unless it is a terminal: then
// nobody is piping a prompt and the model starts from an empty prompt.
// The tokens are counted while reading, and reading stops as soon as they
// fill the context of ctxLen tokens (maxPos is the model's), so a huge
// input is refused without encoding or holding all of it. Text with no
// place to cut (see tokenizer.EncodeReader) is refused past
// maxPromptBytesPerToken bytes a token of context.
func readPrompt(ctx context.Context, stdin io.Reader, tok *tokenizer.Tokenizer, ctxLen, maxPos int) (string, error) {
	if f, ok := stdin.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return "", nil
		}
	}
	if stdin == nil {
		return "", nil
	}
	var text strings.Builder
	in := &cappedReader{r: stdin, w: &text, max: int64(ctxLen) * maxPromptBytesPerToken}
	tooLong := func(what string) error {
		if ctxLen < maxPos {
			return fmt.Errorf("the prompt on stdin is %s but the context is %d tokens: shorten it or raise --ctx (the model allows %d)", what, ctxLen, maxPos)
		}
		return fmt.Errorf("the prompt on stdin is %s but the model's context is %d tokens: shorten it", what, ctxLen)
	}
	if tok == nil { // prepare says why a text prompt cannot be used
		if _, err := io.Copy(io.Discard, in); err != nil {
			return "", fmt.Errorf("reading the prompt from stdin: %w", err)
		}
		return "", nil
	}
	// The trailing line break that is trimmed below may count for up to
	// two tokens, so the count stops 2 tokens later; prepare makes the
	// exact check on the trimmed text.
	const slack = 2
	n := 0
	err := tok.EncodeReader(ctx, in, true, func(ids []int) error {
		if n += len(ids); n >= ctxLen+slack {
			return errPromptFull
		}
		return nil
	})
	switch {
	case errors.Is(err, errPromptFull):
		return "", tooLong(fmt.Sprintf("at least %d tokens (counted in its first %s)", n-slack, humanBytes(in.n)))
	case errors.Is(err, errPromptBytes):
		return "", tooLong(fmt.Sprintf("over %s (far more than %d tokens)", humanBytes(in.max), ctxLen))
	case err != nil && in.err != nil:
		return "", fmt.Errorf("reading the prompt from stdin: %w", in.err)
	case err != nil:
		return "", fmt.Errorf("tokenizing the prompt: %w", err)
	}
	return strings.TrimRight(text.String(), "\r\n"), nil
}

// maxPromptBytesPerToken bounds the stdin read for a prompt: real text
// averages 3 to 5 bytes a token, so a prompt this long cannot fit.
const maxPromptBytesPerToken = 1 << 10

var (
	errPromptFull  = errors.New("the prompt fills the context")
	errPromptBytes = errors.New("the prompt is too long")
)

// cappedReader copies what it reads to w, and fails with errPromptBytes
// past max bytes.
type cappedReader struct {
	r   io.Reader
	w   io.Writer
	n   int64
	max int64
	err error // the underlying read error, if any
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.n >= c.max {
		return 0, errPromptBytes
	}
	n, err := c.r.Read(p[:min(int64(len(p)), c.max-c.n)])
	c.n += int64(n)
	c.w.Write(p[:n])
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// jsonResult is --json's output.
type jsonResult struct {
	Model           string  `json:"model"`
	Backend         string  `json:"backend,omitempty"`
	Prompt          string  `json:"prompt"`
	Text            string  `json:"text"`
	IDs             []int   `json:"ids"`
	PromptTokens    int     `json:"prompt_tokens"`
	GeneratedTokens int     `json:"generated_tokens"`
	Stop            string  `json:"stop"` // "eos", "length", "context" or "interrupted"
	Seed            uint64  `json:"seed"`
	Temperature     float32 `json:"temperature"`
	LoadMS          float64 `json:"load_ms"`
	PromptMS        float64 `json:"prompt_ms"`
	PromptTokPerS   float64 `json:"prompt_tok_per_s"`
	GenMS           float64 `json:"gen_ms"`
	GenTokPerS      float64 `json:"gen_tok_per_s"`
}

// prepared is a prompt ready to generate from.
type prepared struct {
	msgs     []tokenizer.Message // non-nil: chat template
	prompt   string              // raw text (when msgs is nil)
	tokens   int                 // prompt length in tokens
	maxTok   int                 // tokens that may be generated
	ctxLen   int                 // the context: prompt + reply tokens
	ctxBound bool                // maxTok is the room left in the context, not -n
	echo     string              // text printed before the reply
	template bool
}

// prepare decides raw text vs chat template, counts the prompt's tokens and
// fits -n into the context, so an over-long prompt gets a clear message
// before any compute.
func prepare(m *engine.Model, o *genOptions, msgs []tokenizer.Message) (*prepared, error) {
	tok := m.Tokenizer()
	if tok == nil {
		return nil, fmt.Errorf("the checkpoint has no tokenizer.json, so it cannot take a text prompt (it can still be checked with deepseek-run verify, or driven with token ids through engine.GenerateIDs)")
	}
	p := &prepared{}
	var ids []int
	var err error
	if msgs == nil && !o.raw && (o.system != "" || hasChatTemplate(tok)) {
		if o.system != "" {
			msgs = append(msgs, tokenizer.Message{Role: "system", Content: o.system})
		}
		msgs = append(msgs, tokenizer.Message{Role: "user", Content: o.prompt})
	}
	if msgs != nil {
		text, terr := tok.ApplyChatTemplate(msgs, true)
		if terr != nil {
			return nil, fmt.Errorf("applying the chat template: %w", terr)
		}
		ids, err = tok.Encode(text, false)
		p.msgs = msgs
		p.template = true
	} else {
		ids, err = tok.Encode(o.prompt, true)
		p.prompt = o.prompt
		p.echo = o.prompt
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizing the prompt: %w", err)
	}
	p.tokens = len(ids)
	if p.tokens == 0 {
		return nil, fmt.Errorf("the prompt is empty and this tokenizer adds no BOS token, so there is nothing to continue: give a prompt with -p")
	}
	maxPos := contextLength(m)
	ctxLen := min(o.ctx, maxPos)
	if p.tokens >= ctxLen {
		if ctxLen < maxPos {
			return nil, fmt.Errorf("the prompt is %d tokens but the context is %d tokens: shorten it or raise --ctx (the model allows %d)", p.tokens, ctxLen, maxPos)
		}
		return nil, fmt.Errorf("the prompt is %d tokens but the model's context is %d tokens: shorten it", p.tokens, ctxLen)
	}
	p.ctxLen = ctxLen
	p.maxTok = ctxLen - p.tokens
	p.ctxBound = true
	if o.n > 0 && o.n <= p.maxTok {
		p.maxTok, p.ctxBound = o.n, false
	}
	return p, nil
}

// stream runs the prepared generation, calling emit with each piece of text
// as it arrives, and returns the ids generated.
func stream(ctx context.Context, m *engine.Model, p *prepared, s engine.SamplerOptions, st *engine.Stats, emit func(string) error) ([]int, error) {
	opts := engine.GenerateOptions{MaxTokens: p.maxTok, Sampling: s, Stats: st}
	var seq func(func(engine.Token, error) bool)
	if p.msgs != nil {
		seq = m.Chat(ctx, p.msgs, opts)
	} else {
		seq = m.Generate(ctx, p.prompt, opts)
	}
	var ids []int
	for t, err := range seq {
		if err != nil {
			return ids, err
		}
		if t.ID >= 0 {
			ids = append(ids, t.ID)
		}
		if t.Text != "" {
			if err := emit(t.Text); err != nil {
				return ids, err
			}
		}
	}
	return ids, nil
}

func generateOnce(ctx context.Context, m *engine.Model, o *genOptions, s engine.SamplerOptions, loadTime time.Duration, stdout, stderr io.Writer) error {
	p, err := prepare(m, o, nil)
	if err != nil {
		return err
	}
	if o.deviceNote != "" {
		fmt.Fprintln(stderr, o.deviceNote)
	}
	var st engine.Stats
	var text strings.Builder
	emit := func(piece string) error {
		text.WriteString(piece)
		if o.json {
			return nil
		}
		_, err := io.WriteString(stdout, piece)
		return err
	}
	if !o.json && p.echo != "" {
		if _, err := io.WriteString(stdout, p.echo); err != nil {
			return err
		}
	}
	ids, genErr := stream(ctx, m, p, s, &st, emit)
	if genErr != nil && !(ctx.Err() != nil && len(ids) > 0) {
		if !o.json {
			fmt.Fprintln(stdout)
		}
		return fmt.Errorf("generating: %w", genErr)
	}
	stop := stopReason(p, len(ids), genErr)
	if o.json {
		r := jsonResult{
			Model: modelName(o.model), Backend: m.Info().Backend, Prompt: o.prompt, Text: text.String(), IDs: ids,
			PromptTokens: p.tokens, GeneratedTokens: len(ids), Stop: stop, Seed: s.Seed, Temperature: s.Temperature,
			LoadMS: ms(loadTime), PromptMS: ms(st.Prefill), PromptTokPerS: st.PrefillTokensPerSec(),
			GenMS: ms(st.Decode), GenTokPerS: st.DecodeTokensPerSec(),
		}
		if r.IDs == nil {
			r.IDs = []int{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		if out := p.echo + text.String(); !strings.HasSuffix(out, "\n") {
			fmt.Fprintln(stdout)
		}
		if stop == stopContext {
			fmt.Fprintln(stderr, contextFullNote(p, len(ids), contextLength(m)))
		}
		printTimings(stderr, loadTime, &st, s)
	}
	if o.stats {
		printExpertStats(stderr, m)
	}
	// An interrupted run has printed what it generated and its timings,
	// and still exits non-zero.
	return genErr
}

// Stop reasons of --json's "stop".
const (
	stopEOS         = "eos"         // the model ended its text
	stopLength      = "length"      // -n tokens were generated
	stopContext     = "context"     // the context filled up before -n
	stopInterrupted = "interrupted" // Ctrl-C (or a failure after some tokens)
)

// stopReason says why a generation of n tokens ended. The engine's
// generation stops at MaxTokens without saying why, so the context case is
// recognised here: maxTok was the room left in the context, not -n.
func stopReason(p *prepared, n int, genErr error) string {
	switch {
	case genErr != nil:
		return stopInterrupted
	case n < p.maxTok:
		return stopEOS
	case p.ctxBound:
		return stopContext
	}
	return stopLength
}

// contextFullNote is the line that says the reply was cut by the context.
func contextFullNote(p *prepared, generated, maxPos int) string {
	hint := "use a shorter prompt"
	if p.ctxLen < maxPos {
		hint = fmt.Sprintf("raise --ctx (the model allows %d) or use a shorter prompt", maxPos)
	}
	return fmt.Sprintf("deepseek-run: stopped: the context is full (%d tokens: %d of prompt, %d generated); %s",
		p.ctxLen, p.tokens, generated, hint)
}

// decodeTokens is the number of tokens produced by decode steps: the first
// generated token comes out of the prefill.
func decodeTokens(st engine.Stats) int { return max(st.GeneratedTokens-1, 0) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

func perSec(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// printTimings writes llama.cpp-style timings.
func printTimings(w io.Writer, load time.Duration, st *engine.Stats, s engine.SamplerOptions) {
	line := func(name string, d time.Duration, n int, unit string) {
		if n <= 0 {
			fmt.Fprintf(w, "%-14s = %10.2f ms\n", name, ms(d))
			return
		}
		fmt.Fprintf(w, "%-14s = %10.2f ms / %5d %-6s (%8.2f ms per token, %9.2f tokens per second)\n",
			name, ms(d), n, unit, ms(d)/float64(n), perSec(n, d))
	}
	fmt.Fprintln(w)
	line("load time", load, 0, "")
	line("prompt eval", st.Prefill, st.PromptTokens, "tokens")
	line("eval time", st.Decode, decodeTokens(*st), "runs")
	line("total time", load+st.Prefill+st.Decode, 0, "")
	if s.Temperature == 0 {
		fmt.Fprintln(w, "sampling       = greedy")
	} else {
		rp := s.RepeatPenalty
		if rp == 0 {
			rp = 1
		}
		fmt.Fprintf(w, "sampling       = temp %g, top-k %d, top-p %g, min-p %g, repeat-penalty %g, seed %d\n",
			s.Temperature, s.TopK, s.TopP, s.MinP, rp, s.Seed)
	}
}

func modelName(dir string) string {
	if dir == "" {
		return "stories260K (embedded)"
	}
	return dir
}
