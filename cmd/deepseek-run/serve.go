package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/serve"
	"github.com/deepseek-go/deepseek-go/third_party/stories260k"
)

// modelFlags collects repeated -m name=DIR flags.
type modelFlags []serve.Source

func (m *modelFlags) String() string { return "" }

func (m *modelFlags) Set(v string) error {
	name, dir, ok := strings.Cut(v, "=")
	if !ok { // -m DIR: the folder's name is the model's
		dir = v
		name = filepath.Base(filepath.Clean(v))
	}
	if name == "" || dir == "" {
		return fmt.Errorf("want name=DIR, got %q", v)
	}
	*m = append(*m, serve.Source{Name: name, Dir: dir})
	return nil
}

// sizeFlag is a byte count written as 4MiB, 8GiB, 512MB or plain bytes.
type sizeFlag int64

func (s *sizeFlag) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	*s = sizeFlag(n)
	return err
}

func parseSize(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("want a size such as 4MiB or 8GiB, got %q", v)
	}
	return int64(f * float64(mult)), nil
}

const serveUsage = `usage: deepseek-run serve [--addr HOST:PORT] [-m name=DIR ...] [--models-dir DIR] [flags]

Serves an OpenAI-compatible API (/v1/chat/completions, /v1/completions,
/v1/models) with Prometheus metrics at /metrics, /health and /ready. With
no -m and no --models-dir it serves the embedded stories260K demo model as
"stories260k". SIGTERM or Ctrl-C stops accepting and finishes in-flight
requests (up to --shutdown-timeout).

Flags:
`

// runServe implements "deepseek-run serve".
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var models modelFlags
	budget, maxBody, kvBytes := sizeFlag(0), sizeFlag(4<<20), sizeFlag(0)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address `HOST:PORT` (port 0 picks a free one)")
	fs.Var(&models, "m", "serve the checkpoint `name=DIR` as model name (repeatable; -m DIR names it after the folder)")
	modelsDir := fs.String("models-dir", "", "serve each subfolder of `DIR` as a model named after it, loaded on first use")
	fs.Var(&budget, "memory-budget", "cap on loaded model bytes (weights and KV budget, e.g. 24GiB); idle models are evicted least recently used first (0 = no cap)")
	replicas := fs.Int("replicas", 1, "copies of each model, balanced by least outstanding requests")
	device := fs.String("device", "auto", "device of each replica: auto, cpu or cuda; a comma list is assigned to replicas in turn (cuda,cpu)")
	int8 := fs.Bool("int8", false, "quantise weights to int8 when loading")
	threads := fs.Int("threads", 0, "CPU threads per replica (0 = all cores)")
	apiKey := fs.String("api-key", os.Getenv("DEEPSEEK_API_KEY"), "require Authorization: Bearer `KEY` on /v1 (default $DEEPSEEK_API_KEY; /health, /ready and /metrics stay open)")
	fs.Var(&maxBody, "max-body", "request body limit; larger bodies get 413")
	timeout := fs.Duration("timeout", 10*time.Minute, "per-request limit, queueing included")
	maxRunning := fs.Int("max-running", 64, "sequences a replica batches per step")
	tokenBudget := fs.Int("token-budget", 0, "rows a replica's step computes, decode rows and prompt chunks together (0 = engine default, 512; at least --max-running)")
	maxWaiting := fs.Int("max-waiting", 256, "requests a replica queues beyond --max-running; more get 429 with Retry-After")
	fs.Var(&kvBytes, "kv-bytes", "KV cache budget per replica (0 = engine default)")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long in-flight requests may finish after SIGTERM")
	logFormat := fs.String("log-format", "text", "request log format on stderr: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, serveUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return errHelp
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("serve: unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *replicas < 1:
		return usagef("--replicas must be at least 1, got %d", *replicas)
	case *maxRunning < 1 || *maxWaiting < 0 || *tokenBudget < 0:
		return usagef("--max-running must be at least 1, --max-waiting and --token-budget at least 0")
	case *timeout <= 0 || *shutdown <= 0:
		return usagef("--timeout and --shutdown-timeout must be positive")
	case maxBody <= 0:
		return usagef("--max-body must be positive")
	}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(stderr, nil)
	case "json":
		handler = slog.NewJSONHandler(stderr, nil)
	default:
		return usagef("--log-format must be text or json, got %q", *logFormat)
	}
	for _, m := range models {
		if _, err := os.Stat(filepath.Join(m.Dir, "config.json")); err != nil {
			return usagef("-m %s=%s: no config.json in that directory", m.Name, m.Dir)
		}
	}
	if len(models) == 0 && *modelsDir == "" {
		models = append(models, serve.Source{Name: "stories260k", FS: stories260k.FS()})
	}
	eo := serve.EngineOptions{Devices: strings.Split(*device, ","), Int8: *int8, Threads: *threads,
		Scheduler: engine.SchedulerOptions{MaxSeqs: *maxRunning, TokenBudget: *tokenBudget, KVBytes: int64(kvBytes)}}
	srv, err := serve.New(serve.Options{
		Models: models, ModelsDir: *modelsDir, Replicas: *replicas, MemoryBudget: int64(budget),
		Open: serve.EngineOpener(eo), APIKey: *apiKey, MaxBodyBytes: int64(maxBody), RequestTimeout: *timeout,
		MaxRunning: *maxRunning, MaxWaiting: *maxWaiting, ShutdownTimeout: *shutdown, Logger: slog.New(handler),
	})
	if err != nil {
		return usageError{err.Error()}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve: listening on --addr %s: %w", *addr, err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	names := make([]string, 0, len(models)+1)
	for _, m := range models {
		names = append(names, m.Name)
	}
	if *modelsDir != "" {
		names = append(names, "the models in "+*modelsDir)
	}
	fmt.Fprintf(stdout, "deepseek-run: serving %s on http://%s (OpenAI API at /v1, metrics at /metrics)\n", strings.Join(names, ", "), ln.Addr())
	go func() {
		// Loading happens while /health already answers; /ready turns
		// 200 once a model is loaded. Failures are logged by the server.
		_ = srv.Preload(ctx)
	}()
	return srv.Serve(ctx, ln)
}
