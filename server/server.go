// Package server is unitok's HTTP service: the tokenizer's operations over
// a dynamic batcher (package batch), with request limits, JSON errors,
// optional bearer-token auth, Prometheus metrics and a graceful drain.
// Wire types and a Go client are in package api.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/api"
	"github.com/unitok/unitok/batch"
)

// Config configures a Server. Engine is required; zero values elsewhere
// take the defaults.
type Config struct {
	// Engine runs the model; *unitok.Tokenizer is one. If it also
	// implements batch.ImageEngine with a nil ImageModel, the image routes
	// are served, else they answer 501.
	Engine batch.FeatureEngine
	// Batch configures the batcher the server runs over Engine.
	Batch batch.Options
	// Checkpoint names the model in /v1/info.
	Checkpoint string

	// Registerer receives the server's metrics (not the global registry
	// unless passed). Gatherer serves /metrics. If both are nil a fresh
	// registry is used for both.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// ProcessMetrics adds the Go runtime and process collectors to the
	// fresh registry made when Registerer and Gatherer are nil.
	ProcessMetrics bool
	// GPUStats, if set, is called at each scrape for per-GPU gauges
	// (nil or empty when there is no GPU).
	GPUStats func() []GPUStat

	// AuthToken, if not empty, is the bearer token every route but the
	// OpenPaths requires.
	AuthToken string
	// OpenPaths skip authentication. Default: /healthz, /readyz, /metrics.
	// Set to a non-nil empty slice to protect everything.
	OpenPaths []string

	MaxBodyBytes   int64         // default 64 MiB
	MaxImages      int           // images per request, default 64
	MaxPixels      int           // pixels per image, default 4096*4096
	RequestTimeout time.Duration // per request, default 30s; expiry answers 504
	// DrainDelay is how long /readyz answers 503 before the listener
	// closes, so that load balancers stop sending. Default 0.
	DrainDelay time.Duration

	// DecodeImage decodes one uploaded image, refusing more than maxPixels
	// with an error matching ErrTooManyPixels. Default: DecodeStd.
	DecodeImage func(r io.Reader, maxPixels int) (image.Image, error)
	// EncodePNG writes one (3, S, S) image in [-1, 1] as PNG. Default:
	// EncodePNGStd.
	EncodePNG func(w io.Writer, x []float32, S int) error

	Logger  *slog.Logger
	Version string
}

// Server serves the API. Create it with New, serve Handler (or call Serve).
type Server struct {
	cfg      Config
	b        *batch.Batcher
	m        *metrics
	gatherer prometheus.Gatherer
	open     map[string]bool
	tokenSum [32]byte
	draining atomic.Bool
	log      *slog.Logger
	handler  http.Handler
}

// New builds a Server and starts its batcher.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil {
		return nil, errors.New("server: no engine")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if cfg.MaxImages <= 0 {
		cfg.MaxImages = 64
	}
	if cfg.MaxPixels <= 0 {
		cfg.MaxPixels = 4096 * 4096
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.DecodeImage == nil {
		cfg.DecodeImage = DecodeStd
	}
	if cfg.EncodePNG == nil {
		cfg.EncodePNG = EncodePNGStd
	}
	if cfg.OpenPaths == nil {
		cfg.OpenPaths = []string{api.PathHealth, api.PathReady, api.PathMetrics}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	reg, gat := cfg.Registerer, cfg.Gatherer
	if reg == nil && gat == nil {
		r := prometheus.NewRegistry()
		if cfg.ProcessMetrics {
			r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		}
		reg, gat = r, r
	} else if gat == nil {
		if g, ok := reg.(prometheus.Gatherer); ok {
			gat = g
		} else {
			return nil, errors.New("server: a Registerer without a Gatherer to serve /metrics")
		}
	} else if reg == nil {
		return nil, errors.New("server: a Gatherer without a Registerer")
	}
	s := &Server{cfg: cfg, gatherer: gat, open: map[string]bool{}, log: cfg.Logger}
	for _, p := range cfg.OpenPaths {
		s.open[p] = true
	}
	if cfg.AuthToken != "" {
		s.tokenSum = sha256.Sum256([]byte(cfg.AuthToken))
	}
	m, err := newMetrics(reg, func() *batch.Batcher { return s.b }, cfg.GPUStats)
	if err != nil {
		return nil, fmt.Errorf("server: metrics: %w", err)
	}
	s.m = m
	bo := cfg.Batch
	user := bo.Observer
	bo.Observer = func(bi batch.BatchInfo) {
		m.observeBatch(bi)
		if user != nil {
			user(bi)
		}
	}
	s.b = batch.New(cfg.Engine, bo)
	s.handler = s.routes()
	return s, nil
}

// Batcher is the server's batcher (for direct calls in the same process).
func (s *Server) Batcher() *batch.Batcher { return s.b }

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// StartDrain makes /readyz and every API route answer 503 from now on.
func (s *Server) StartDrain() { s.draining.Store(true) }

// Close stops the batcher, answering what is queued (see batch.Close).
func (s *Server) Close(ctx context.Context) error { return s.b.Close(ctx) }

// Serve serves on ln until ctx is done, then drains: /readyz and new API
// requests get 503, after DrainDelay the listener closes, and requests in
// flight (with their queued batch calls) finish within drainTimeout. It
// returns nil after a clean drain. With certFile and keyFile it serves TLS.
func (s *Server) Serve(ctx context.Context, ln net.Listener, drainTimeout time.Duration, certFile, keyFile string) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() {
		if certFile != "" || keyFile != "" {
			errc <- hs.ServeTLS(ln, certFile, keyFile)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		s.b.Close(context.Background())
		return err
	case <-ctx.Done():
	}
	s.log.Info("draining", "timeout", drainTimeout)
	s.StartDrain()
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if s.cfg.DrainDelay > 0 {
		select {
		case <-time.After(s.cfg.DrainDelay):
		case <-dctx.Done():
		}
	}
	err := hs.Shutdown(dctx)
	berr := s.b.Close(dctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err == nil && berr == nil {
		s.log.Info("drained")
	}
	return errors.Join(err, berr)
}

// routes builds the mux and wraps it with recovery, metrics and auth.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	apiRoute := func(path string, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(path, s.wrap(path, true, h))
	}
	plain := func(path string, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(path, s.wrap(path, false, h))
	}
	apiRoute("/v1/encode", s.handleEncode)
	apiRoute("/v1/decode", s.handleDecode)
	apiRoute("/v1/quantize", s.handleQuantize)
	apiRoute("/v1/lookup", s.handleLookup)
	apiRoute("/v1/tokenize", s.handleTokenize)
	apiRoute("/v1/embed", s.handleEmbed)
	apiRoute("/v1/detokenize", s.handleDetokenize)
	plain("/v1/info", s.handleInfo)
	plain("/healthz", func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, err := io.WriteString(w, "ok\n")
		return err
	})
	plain("/readyz", func(w http.ResponseWriter, r *http.Request) error {
		if s.draining.Load() {
			return &httpError{http.StatusServiceUnavailable, "draining", "draining"}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, err := io.WriteString(w, "ready\n")
		return err
	})
	prom := promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{})
	plain("/metrics", func(w http.ResponseWriter, r *http.Request) error {
		prom.ServeHTTP(w, r)
		return nil
	})
	mux.Handle("/", s.wrap("other", false, func(w http.ResponseWriter, r *http.Request) error {
		return &httpError{http.StatusNotFound, api.KindNotFound, "no route " + r.Method + " " + r.URL.Path}
	}))
	return mux
}

// statusWriter remembers the status and whether a header went out.
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

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrap adds panic recovery, auth, the drain check (API routes), the
// request deadline, error responses and metrics.
func (s *Server) wrap(route string, isAPI bool, h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		s.m.inflight.Inc()
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					s.m.inflight.Dec()
					panic(p)
				}
				s.log.Error("handler panic", "route", route, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				s.m.errors.WithLabelValues("panic").Inc()
				if !w.wrote {
					s.writeError(w, &httpError{http.StatusInternalServerError, api.KindInternal, "internal error (panic); see the server log"})
				}
			}
			s.m.inflight.Dec()
			if !w.wrote {
				w.code = http.StatusOK
			}
			s.m.observeRequest(route, w.code, time.Since(start))
		}()
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="unitok"`)
			s.writeError(w, &httpError{http.StatusUnauthorized, api.KindUnauthorized, "missing or wrong bearer token"})
			return
		}
		if isAPI {
			if r.Method != http.MethodPost {
				w.Header().Set("Allow", http.MethodPost)
				s.writeError(w, &httpError{http.StatusMethodNotAllowed, api.KindMethod, r.Method + " " + r.URL.Path + ": want POST"})
				return
			}
			if s.draining.Load() {
				w.Header().Set("Connection", "close")
				s.writeError(w, &httpError{http.StatusServiceUnavailable, api.KindDraining, "server is draining; retry elsewhere"})
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		} else if route != "other" && r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			s.writeError(w, &httpError{http.StatusMethodNotAllowed, api.KindMethod, r.Method + " " + r.URL.Path + ": want GET"})
			return
		}
		if err := h(w, r); err != nil && !w.wrote {
			s.writeError(w, s.classify(r, err))
		}
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.AuthToken == "" || s.open[r.URL.Path] {
		return true
	}
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}

// httpError is an error with its status and kind.
type httpError struct {
	status int
	kind   string
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, api.KindBadInput, fmt.Sprintf(format, args...)}
}

// classify maps an error to its status and kind.
func (s *Server) classify(r *http.Request, err error) *httpError {
	var he *httpError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &mbe):
		return &httpError{http.StatusRequestEntityTooLarge, api.KindTooLarge, fmt.Sprintf("body exceeds %d bytes", mbe.Limit)}
	case errors.Is(err, ErrTooManyPixels):
		return &httpError{http.StatusRequestEntityTooLarge, api.KindTooLarge, err.Error()}
	case errors.Is(err, batch.ErrOverloaded):
		return &httpError{http.StatusTooManyRequests, api.KindOverloaded, err.Error()}
	case errors.Is(err, unitok.ErrClosed):
		return &httpError{http.StatusServiceUnavailable, api.KindDraining, err.Error()}
	case errors.Is(err, batch.ErrNoImageModel):
		return &httpError{http.StatusNotImplemented, api.KindNoImageModel, err.Error()}
	case errors.Is(err, unitok.ErrBadInput):
		return &httpError{http.StatusBadRequest, api.KindBadInput, err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &httpError{http.StatusGatewayTimeout, api.KindDeadline, err.Error()}
	case errors.Is(err, context.Canceled):
		return &httpError{499, api.KindCanceled, err.Error()}
	case errors.Is(err, unitok.ErrOutOfMemory), errors.Is(err, unitok.ErrNoDevice):
		return &httpError{http.StatusInternalServerError, api.KindDevice, err.Error()}
	}
	s.log.Error("internal error", "path", r.URL.Path, "err", err)
	return &httpError{http.StatusInternalServerError, api.KindInternal, err.Error()}
}

func (s *Server) writeError(w http.ResponseWriter, e *httpError) {
	s.m.errors.WithLabelValues(e.kind).Inc()
	switch e.status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, api.ErrorBody{Error: api.ErrorDetail{Status: e.status, Kind: e.kind, Message: oneLine(e.msg)}})
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) error {
	c := s.b.Config()
	o := s.b.Options()
	info := api.Info{
		Model: api.ModelInfo{Checkpoint: s.cfg.Checkpoint, InDim: c.InDim, LatentDim: c.LatentDim,
			NumCodebooks: c.NumCodebooks, CodebookSize: c.CodebookSize, NumHeads: c.NumHeads, Causal: c.Causal},
		Device: "unknown", Layout: "bnk", Metric: "cosine",
		Limits: api.Limits{MaxBodyBytes: s.cfg.MaxBodyBytes, MaxImages: s.cfg.MaxImages, MaxPixels: s.cfg.MaxPixels,
			RequestTimeoutMS: s.cfg.RequestTimeout.Milliseconds()},
		Batch: api.BatchInfo{MaxBatch: o.MaxBatch, MaxTokens: o.MaxTokens, MaxWaitUS: o.MaxWait.Microseconds(),
			QueueSize: o.QueueSize, Workers: o.Workers},
		Version: s.cfg.Version,
	}
	if d, ok := s.cfg.Engine.(interface{ Device() string }); ok {
		info.Device = d.Device()
	}
	if m, ok := s.cfg.Engine.(interface{ Metric() unitok.Metric }); ok {
		info.Metric = m.Metric().String()
	}
	if s.cfg.Engine.Layout() == unitok.CodebookMajor {
		info.Layout = "bkn"
	}
	if ie := s.b.ImageEngine(); ie != nil {
		info.Images, info.ImageSz = true, ie.ImageSize()
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}
