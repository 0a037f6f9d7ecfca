package serve

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure a Server. The zero value of each field means its
// default.
type Options struct {
	Models    []Source // served models, loaded at start (-m name=DIR)
	ModelsDir string   // each subfolder is a model, loaded on first use
	Replicas  int      // copies of each model (default 1)
	// MemoryBudget caps the bytes of loaded models (weights, by their
	// size on disk, times replicas); idle models are evicted least
	// recently used first to load another. 0 = no cap.
	MemoryBudget int64
	Open         Opener // loads a replica (required)

	APIKey            string        // when set, /v1 needs "Authorization: Bearer KEY"
	MaxBodyBytes      int64         // request body limit (default 4 MiB)
	RequestTimeout    time.Duration // per request, queueing included (default 10 min)
	MaxRunning        int           // generations a replica runs at once (default 64)
	MaxWaiting        int           // generations a replica queues beyond those (default 256); more get 429
	ReadHeaderTimeout time.Duration // slow-loris guard (default 10 s)
	BodyTimeout       time.Duration // time to receive a request body (default 30 s)
	IdleTimeout       time.Duration // keep-alive connections (default 2 min)
	ShutdownTimeout   time.Duration // in-flight work gets this long after SIGTERM (default 30 s)
	Logger            *slog.Logger  // default: slog.Default()
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.MaxRunning <= 0 {
		o.MaxRunning = 64
	}
	if o.MaxWaiting <= 0 {
		o.MaxWaiting = 256
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	def(&o.RequestTimeout, 10*time.Minute)
	def(&o.ReadHeaderTimeout, 10*time.Second)
	def(&o.BodyTimeout, 30*time.Second)
	def(&o.IdleTimeout, 2*time.Minute)
	def(&o.ShutdownTimeout, 30*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Server is the OpenAI-compatible HTTP server.
type Server struct {
	opts     Options
	log      *slog.Logger
	models   *registry
	metrics  *metrics
	handler  http.Handler
	keyHash  [32]byte
	draining atomic.Bool
	inflight sync.WaitGroup // handlers running
}

// New checks o and returns a server; it loads nothing until Preload or
// the first request.
func New(o Options) (*Server, error) {
	o.defaults()
	if o.Open == nil {
		return nil, errors.New("serve: Options.Open is required")
	}
	if len(o.Models) == 0 && o.ModelsDir == "" {
		return nil, errors.New("serve: no models (give -m name=DIR or --models-dir DIR)")
	}
	reg, err := newRegistry(&o, o.Logger)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	s := &Server{opts: o, log: o.Logger, models: reg}
	s.metrics = newMetrics(reg)
	s.keyHash = sha256.Sum256([]byte(o.APIKey))
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Preload loads the -m models and waits for them (or ctx).
func (s *Server) Preload(ctx context.Context) error { return s.models.preload(ctx) }

// Close unloads every model. Serve calls it on shutdown.
func (s *Server) Close() { s.models.close() }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() || !s.models.ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}))
	registerUI(mux, s.opts.APIKey != "") // the chat page at / and /ui/ (ui.go), open like /metrics
	api := http.NewServeMux()
	api.HandleFunc("GET /v1/models", s.listModels)
	api.HandleFunc("GET /v1/models/{model...}", s.getModel)
	api.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	api.HandleFunc("POST /v1/completions", s.completions)
	for _, p := range []string{"/v1/models", "/v1/chat/completions", "/v1/completions"} {
		api.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
				Message: fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)})
		})
	}
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
			Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
	})
	mux.Handle("/", s.auth(api))
	return s.observe(mux)
}

// reqInfo is what a handler tells the request log.
type reqInfo struct {
	id                       string
	model, finish            string
	promptTokens, completion int
}

type infoKey struct{}

func infoOf(ctx context.Context) *reqInfo {
	if ri, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{id: "unknown"}
}

// observe gives each request an id, logs it, and turns a panic into a 500
// logged with that id (the client never sees the panic).
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Done()
		t0 := time.Now()
		ri := &reqInfo{id: requestID(r.Header.Get("X-Request-Id"))}
		sw := &statusWriter{ResponseWriter: w}
		sw.Header().Set("X-Request-Id", ri.id)
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic serving request", "request_id", ri.id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !sw.wrote {
					writeError(sw, errInternal(ri.id))
				}
			}
			if r.URL.Path == "/metrics" || r.URL.Path == "/health" || r.URL.Path == "/ready" {
				return // probes would drown the log
			}
			attrs := []any{"request_id", ri.id, "method", r.Method, "path", r.URL.Path, "status", sw.status(),
				"duration_ms", time.Since(t0).Milliseconds(), "remote", r.RemoteAddr}
			if ri.model != "" {
				attrs = append(attrs, "model", ri.model, "prompt_tokens", ri.promptTokens, "completion_tokens", ri.completion, "finish", ri.finish)
			}
			s.log.Info("request", attrs...)
		}()
		next.ServeHTTP(sw, r)
	})
}

// requestID keeps a client's X-Request-Id when it is short and printable,
// else makes one.
func requestID(h string) string {
	if h != "" && len(h) <= 64 && strings.IndexFunc(h, func(r rune) bool { return r <= ' ' || r > '~' }) < 0 {
		return h
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// auth checks the Bearer key in constant time (comparing SHA-256 digests
// so neither the content nor the length leaks).
func (s *Server) auth(next http.Handler) http.Handler {
	if s.opts.APIKey == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(key)))
		if !ok || subtle.ConstantTimeCompare(got[:], s.keyHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="deepseek-run"`)
			writeError(w, &apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key",
				Message: "missing or invalid API key: send Authorization: Bearer KEY"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// statusWriter records the status for the log; it forwards Flush and
// exposes the writer to http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.code, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.code
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// readBody reads a request body within the size limit and the body
// timeout (a slow sender cannot hold a handler forever).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if r.ContentLength > s.opts.MaxBodyBytes {
		return nil, errTooLarge(s.opts.MaxBodyBytes)
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.opts.BodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		// Close the connection after the error: the rest of the body is
		// not worth reading (and a stalled sender would never finish).
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return nil, errTooLarge(s.opts.MaxBodyBytes)
		case errors.As(err, &ne) && ne.Timeout():
			return nil, &apiError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "body_timeout",
				Message: fmt.Sprintf("the request body did not arrive within %s", s.opts.BodyTimeout)}
		}
		return nil, invalidf("", "reading the request body: %v", err)
	}
	_ = rc.SetReadDeadline(time.Time{}) // generation may take longer
	return body, nil
}

func errTooLarge(limit int64) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
		Message: fmt.Sprintf("the request body exceeds the limit of %d bytes", limit)}
}

// Serve serves on ln until ctx is cancelled (SIGTERM), then shuts down
// gracefully: it stops accepting, lets in-flight requests finish for up to
// ShutdownTimeout, cancels what is left, and unloads the models.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	genCtx, cancelGen := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelGen()
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return genCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.log.Info("shutting down: finishing in-flight requests", "timeout", s.opts.ShutdownTimeout)
	shCtx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(shCtx)
	if err != nil {
		s.log.Warn("shutdown deadline passed: cancelling the remaining requests")
		cancelGen()
		_ = hs.Close()
		waitTimeout(&s.inflight, 5*time.Second)
	}
	s.Close()
	<-errc // http.ErrServerClosed
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	return nil
}

// waitTimeout waits for wg at most d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
