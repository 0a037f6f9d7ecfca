package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/kernels/cuda"
	"github.com/deepseek-go/deepseek-go/third_party/stories260k"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// demoNotice is printed when no -m is given.
const demoNotice = "deepseek-run: no -m given, using the embedded stories260K demo model (260K parameters, writes tiny stories); " +
	"for real work download a DeepSeek checkpoint and pass its directory, e.g. -m ~/models/DeepSeek-R1-Distill-Qwen-1.5B (see README.md)"

type modelOptions struct {
	device  string
	int8    bool
	threads int
	verbose bool // the device note gives the full reason
	// onNote receives the one-line "running on cpu" note when "auto" finds
	// no GPU, for the caller to print when the device starts to matter;
	// nil prints it to stderr once the model has loaded.
	onNote func(note string)
}

// resolveDevice turns "auto" into "cpu" when no CUDA device is usable, so
// that the CLI, not the engine, says so: once, short, and in full with -v.
// With a device present it stays "auto" (the engine still falls back, in
// its own words, if the device then fails to open).
func resolveDevice(device string, verbose bool) (dev, note string) {
	if device != "auto" {
		return device, ""
	}
	devs, err := cuda.Devices()
	if err == nil && len(devs) > 0 {
		return device, ""
	}
	if err == nil {
		err = errors.New("the CUDA driver reports no device")
	}
	if verbose {
		return "cpu", "deepseek-run: running on cpu: " + oneLine(err.Error())
	}
	return "cpu", "deepseek-run: running on cpu (no usable GPU; -v says why)"
}

// loadModel opens the checkpoint in dir (the embedded demo model when dir is
// empty), checking first what a user most often gets wrong so the message
// names it: a path that does not exist, a file instead of a directory, a
// directory that is not a Hugging Face checkpoint.
func loadModel(ctx context.Context, dir string, mo modelOptions, stderr io.Writer) (m *engine.Model, d time.Duration, err error) {
	device, note := resolveDevice(mo.device, mo.verbose)
	defer func() {
		if err != nil || note == "" {
			return
		}
		if mo.onNote != nil {
			mo.onNote(note)
		} else {
			fmt.Fprintln(stderr, note)
		}
	}()
	opts := []engine.Option{engine.WithDevice(device), engine.WithInt8(mo.int8)}
	if mo.threads > 0 {
		opts = append(opts, engine.WithThreads(mo.threads))
	}
	start := time.Now()
	if dir == "" {
		fmt.Fprintln(stderr, demoNotice)
		m, err = engine.LoadFS(stories260k.FS(), opts...)
		if err != nil {
			return nil, 0, fmt.Errorf("loading the embedded stories260K model: %w", err)
		}
		return m, time.Since(start), nil
	}
	if err := checkModelDir(dir); err != nil {
		return nil, 0, err
	}
	if bar := newProgressBar(stderr); bar != nil {
		opts = append(opts, engine.WithProgress(bar.update))
		defer bar.finish()
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	m, err = engine.Load(dir, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("loading %s: %w", dir, err)
	}
	return m, time.Since(start), nil
}

func checkModelDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("model directory %s does not exist", dir)
	case err != nil:
		return fmt.Errorf("model directory: %w", err)
	case !st.IsDir():
		return fmt.Errorf("%s is a file; -m takes the checkpoint directory that holds config.json and the *.safetensors files", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s has no config.json, so it is not a Hugging Face checkpoint directory "+
				"(expected config.json, *.safetensors and tokenizer.json, as downloaded by huggingface-cli download)", dir)
		}
		return fmt.Errorf("reading %s: %w", filepath.Join(dir, "config.json"), err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if len(matches) == 0 {
		hint := ""
		if b, _ := filepath.Glob(filepath.Join(dir, "*.bin")); len(b) > 0 {
			hint = " (found *.bin PyTorch files: only safetensors checkpoints are supported)"
		} else if g, _ := filepath.Glob(filepath.Join(dir, "*.gguf")); len(g) > 0 {
			hint = " (found *.gguf: GGUF is llama.cpp's format; download the Hugging Face safetensors checkpoint instead)"
		}
		return fmt.Errorf("%s has no *.safetensors weight files%s", dir, hint)
	}
	return nil
}

// progressBar draws loading progress on a terminal.
type progressBar struct {
	w     io.Writer
	mu    sync.Mutex
	last  int // last percentage drawn
	start time.Time
	drawn bool
}

// newProgressBar returns nil unless w is a terminal: redirected stderr
// should not fill up with carriage returns.
func newProgressBar(w io.Writer) *progressBar {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &progressBar{w: w, last: -1, start: time.Now()}
}

// minBarBytes: small checkpoints load too quickly for a bar to help.
const minBarBytes = 256 << 20

func (p *progressBar) update(done, total int64) {
	if total < minBarBytes || done < 0 {
		return
	}
	pct := int(min(done*100/total, 100))
	p.mu.Lock()
	defer p.mu.Unlock()
	if pct == p.last {
		return
	}
	p.last = pct
	const width = 30
	fill := pct * width / 100
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	rate := float64(done) / max(time.Since(p.start).Seconds(), 1e-3) / 1e9
	fmt.Fprintf(p.w, "\rloading [%s] %3d%%  %.2f / %.2f GB  %.2f GB/s ", bar, pct, float64(done)/1e9, float64(total)/1e9, rate)
	p.drawn = true
}

func (p *progressBar) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// contextLength is the most tokens a sequence may hold.
func contextLength(m *engine.Model) int { return m.Config().MaxPositionEmbeddings }

// hasChatTemplate reports whether the tokenizer_config.json has a chat template.
func hasChatTemplate(t *tokenizer.Tokenizer) bool { return t.ChatTemplate() != "" }
