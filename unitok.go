// Package unitok is the core of the UniTok visual tokenizer: the attention
// projection of encoder features down to a multi-codebook latent, the
// quantizer that turns latents into K codes per token, the lookup of codes
// back to latents, and the projection back up. A pure-Go CPU engine and,
// in builds with the cuda tag, a CUDA engine compute the same function.
//
// All arrays are flat row-major float32 or int32 slices with explicit
// shapes. A Tokenizer is immutable after Open and safe for concurrent use.
package unitok

import (
	"math"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/unitok/unitok/internal/ckpt"
	"github.com/unitok/unitok/internal/safetensors"
)

// Metric selects how a latent chunk is matched to a codeword.
type Metric int

const (
	// Cosine is UniTok's metric: argmax of the dot product with the
	// L2-normalized codewords (the chunk's own norm does not change it).
	Cosine Metric = iota
	// L2 is argmin of the squared Euclidean distance to the raw codewords,
	// for other product-quantization users.
	L2
)

func (m Metric) String() string {
	if m == L2 {
		return "l2"
	}
	return "cosine"
}

// ParseMetric reads "cosine" or "l2".
func ParseMetric(s string) (Metric, error) {
	switch s {
	case "cosine", "cos", "":
		return Cosine, nil
	case "l2", "L2":
		return L2, nil
	}
	return 0, badInput("metric", "unknown metric %q (want cosine or l2)", s)
}

// Layout is the order of the code axes in Encode/Decode/Quantize/Lookup.
type Layout int

const (
	// TokenMajor orders codes (B, N, K): the K codes of a token are adjacent.
	TokenMajor Layout = iota
	// CodebookMajor orders codes (B, K, N), as UniTok's own tensors do.
	// For Quantize and Lookup (no batch axis) it means (K, M).
	CodebookMajor
)

type options struct {
	device  string
	causal  *bool
	heads   int
	metric  Metric
	layout  Layout
	threads int
	streams int

	// maxPixels bounds the image calls (image_api.go); 0: DefaultMaxPixels.
	maxPixels int64
}

// Option configures Open and New.
type Option func(*options)

// WithDevice selects "cpu", "cuda" or "cuda:N"; "" or "auto" (the default)
// means CUDA when built with it and a GPU is present, else CPU.
func WithDevice(d string) Option { return func(o *options) { o.device = d } }

// WithCausal overrides the checkpoint's attention mode.
func WithCausal(causal bool) Option { return func(o *options) { o.causal = &causal } }

// WithHeads overrides the checkpoint's number of attention heads.
func WithHeads(h int) Option { return func(o *options) { o.heads = h } }

// WithMetric selects the quantizer metric (Cosine by default).
func WithMetric(m Metric) Option { return func(o *options) { o.metric = m } }

// WithLayout selects the code layout (TokenMajor by default).
func WithLayout(l Layout) Option { return func(o *options) { o.layout = l } }

// WithThreads bounds the CPU engine's parallelism (default GOMAXPROCS).
func WithThreads(n int) Option { return func(o *options) { o.threads = n } }

// WithStreams sets how many CUDA streams (and workspaces) serve concurrent
// calls on the GPU (default 2). Ignored on the CPU.
func WithStreams(n int) Option { return func(o *options) { o.streams = n } }

// Tokenizer runs UniTok's tokenizer core on one device.
type Tokenizer struct {
	model   *Model
	opts    options
	be      backend
	closed  atomic.Bool
	cleanup runtime.Cleanup
	image   atomic.Pointer[imageModel] // the ViTamin image path (image.go), set by img() on first use, dropped by Close
	imgLoad imageState                 // how and whether the image path is loaded
}

// Open loads a checkpoint (safetensors, or a PyTorch zip checkpoint where
// supported) and prepares it on the selected device.
func Open(path string, opts ...Option) (*Tokenizer, error) {
	r, err := openCheckpoint(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	t, err := openReader(r, opts...)
	if err != nil {
		return nil, err
	}
	// The image path is read from the file on first use, so core-only
	// users never pay for the encoder and decoder.
	t.imgLoad.open = func() (ckpt.Reader, error) { return openCheckpoint(path) }
	return t, nil
}

// openReader loads the core from r; the image path is loaded from r on
// first use (so r must stay readable; Open points it at the file instead).
func openReader(r ckpt.Reader, opts ...Option) (*Tokenizer, error) {
	o := buildOptions(opts)
	m, err := LoadModel(r, opts...)
	if err != nil {
		return nil, err
	}
	t, err := newTokenizer(m, o)
	if err != nil {
		return nil, err
	}
	t.imgLoad.open = func() (ckpt.Reader, error) { return keepOpen{r}, nil }
	return t, nil
}

// checkpointOpeners lets other formats (PyTorch zip) plug in by magic bytes.
var checkpointOpeners []func(path string, head []byte) (ckpt.Reader, bool, error)

func openCheckpoint(path string) (ckpt.Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badInput("checkpoint", "%v", err)
	}
	head := make([]byte, 8)
	n, _ := f.Read(head)
	f.Close()
	for _, op := range checkpointOpeners {
		if r, ok, err := op(path, head[:n]); ok {
			if err != nil {
				return nil, badInput("checkpoint", "%s: %v", path, err)
			}
			return r, nil
		}
	}
	r, err := safetensors.Open(path)
	if err != nil {
		return nil, badInput("checkpoint", "%s: %v", path, err)
	}
	return r, nil
}

// LoadModel reads the tokenizer core from an opened checkpoint, inferring the
// sizes from tensor shapes and heads/causal from options or metadata. When
// neither gives the head count it is C/D, as UniTok's UniTok class builds
// the projections (see UniTokHeads).
func LoadModel(r ckpt.Reader, opts ...Option) (*Model, error) {
	o := buildOptions(opts)
	s := &tensorSet{r: r, infos: map[string]ckpt.Info{}}
	for _, t := range r.Tensors() {
		s.infos[t.Name] = t
	}
	c, _, err := inferConfig(s, r.Metadata(), o.heads)
	if err != nil {
		return nil, err
	}
	if o.causal != nil {
		c.Causal = *o.causal
	}
	return loadModel(s, c)
}

func buildOptions(opts []Option) options {
	o := options{streams: 2}
	for _, f := range opts {
		f(&o)
	}
	if o.threads <= 0 {
		o.threads = runtime.GOMAXPROCS(0)
	}
	return o
}

// New prepares an already loaded model on the selected device. Options that
// change the model (causal, heads) apply to a copy of its config.
func New(m *Model, opts ...Option) (*Tokenizer, error) {
	if m == nil {
		return nil, badInput("new", "nil model")
	}
	o := buildOptions(opts)
	mm := *m
	if o.causal != nil {
		mm.Causal = *o.causal
	}
	if o.heads > 0 && o.heads != mm.NumHeads {
		return nil, badInput("new", "cannot change heads of a loaded model (%d -> %d); pass WithHeads to Open", mm.NumHeads, o.heads)
	}
	return newTokenizer(&mm, o)
}

func newTokenizer(m *Model, o options) (*Tokenizer, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if o.metric != Cosine && o.metric != L2 {
		return nil, badInput("metric", "unknown metric %d", o.metric)
	}
	be, err := openBackend(m, &o)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{model: m, opts: o, be: be}
	// Safety net: a Tokenizer dropped without Close still frees its device
	// memory. The cleanup must not reference t.
	t.cleanup = runtime.AddCleanup(t, func(b backend) { b.Close() }, be)
	return t, nil
}

// Config returns the model's configuration (after option overrides).
func (t *Tokenizer) Config() Config { return t.model.Config }

// Model returns the loaded weights. Callers must not modify them.
func (t *Tokenizer) Model() *Model { return t.model }

// Device names the engine in use: "cpu" or "cuda:N".
func (t *Tokenizer) Device() string { return t.be.Name() }

// Metric returns the quantizer metric in use.
func (t *Tokenizer) Metric() Metric { return t.opts.metric }

// Layout returns the code layout in use.
func (t *Tokenizer) Layout() Layout { return t.opts.layout }

// Close releases the engine's memory. It is idempotent and nil-safe; calls
// made after Close return ErrClosed.
func (t *Tokenizer) Close() error {
	if t == nil || !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	t.cleanup.Stop()
	// The image path (gigabytes at vitamin_large) goes with the tokenizer,
	// even while the closed Tokenizer value is still referenced; a call
	// already running keeps its own reference until it returns. The
	// activations its engine keeps for the next call go now.
	t.image.Swap(nil).trim()
	return t.be.Close()
}

func (t *Tokenizer) check(op string) error {
	if t == nil {
		return &Error{Op: op, Msg: "nil tokenizer", Kind: ErrBadInput}
	}
	if t.closed.Load() {
		return closedErr(op)
	}
	return nil
}

// Encode turns features (B, N, C) into codes (B, N, K), or (B, K, N) with
// CodebookMajor. Features must be finite.
func (t *Tokenizer) Encode(features []float32, B, N int) ([]int32, error) {
	if err := t.check("encode"); err != nil {
		return nil, err
	}
	dst := make([]int32, B*N*t.model.NumCodebooks)
	return dst, t.EncodeInto(dst, features, B, N)
}

// EncodeInto is Encode writing into dst, which must hold B*N*K codes.
func (t *Tokenizer) EncodeInto(dst []int32, features []float32, B, N int) error {
	const op = "encode"
	if err := t.check(op); err != nil {
		return err
	}
	c := t.model.Config
	if err := checkShape(op, "features", len(features), B, N, c.InDim); err != nil {
		return err
	}
	if err := checkDst(op, len(dst), B*N*c.NumCodebooks); err != nil {
		return err
	}
	if err := checkFinite(op, "features", features, c.InDim); err != nil {
		return err
	}
	if t.opts.layout == TokenMajor {
		return t.run(op, t.be.Encode(dst, features, B, N))
	}
	tmp := make([]int32, len(dst))
	if err := t.run(op, t.be.Encode(tmp, features, B, N)); err != nil {
		return err
	}
	transposeCodes(dst, tmp, B, N, c.NumCodebooks)
	return nil
}

// Decode turns codes (B, N, K) (or (B, K, N) with CodebookMajor) into
// features (B, N, C). Every code must be in [0, V).
func (t *Tokenizer) Decode(codes []int32, B, N int) ([]float32, error) {
	if err := t.check("decode"); err != nil {
		return nil, err
	}
	dst := make([]float32, B*N*t.model.InDim)
	return dst, t.DecodeInto(dst, codes, B, N)
}

// DecodeInto is Decode writing into dst, which must hold B*N*C floats.
func (t *Tokenizer) DecodeInto(dst []float32, codes []int32, B, N int) error {
	const op = "decode"
	if err := t.check(op); err != nil {
		return err
	}
	c := t.model.Config
	if err := checkShape(op, "codes", len(codes), B, N, c.NumCodebooks); err != nil {
		return err
	}
	if err := checkDst(op, len(dst), B*N*c.InDim); err != nil {
		return err
	}
	codes, err := t.tokenMajorCodes(op, codes, B, N)
	if err != nil {
		return err
	}
	return t.run(op, t.be.Decode(dst, codes, B, N))
}

// Quantize turns latents (M, D) into codes (M, K) (or (K, M) with
// CodebookMajor).
func (t *Tokenizer) Quantize(latents []float32, M int) ([]int32, error) {
	if err := t.check("quantize"); err != nil {
		return nil, err
	}
	dst := make([]int32, M*t.model.NumCodebooks)
	return dst, t.QuantizeInto(dst, latents, M)
}

// QuantizeInto is Quantize writing into dst, which must hold M*K codes.
func (t *Tokenizer) QuantizeInto(dst []int32, latents []float32, M int) error {
	const op = "quantize"
	if err := t.check(op); err != nil {
		return err
	}
	c := t.model.Config
	if err := checkShape(op, "latents", len(latents), 1, M, c.LatentDim); err != nil {
		return err
	}
	if err := checkDst(op, len(dst), M*c.NumCodebooks); err != nil {
		return err
	}
	if err := checkFinite(op, "latents", latents, c.LatentDim); err != nil {
		return err
	}
	if t.opts.layout == TokenMajor {
		return t.run(op, t.be.Quantize(dst, latents, M))
	}
	tmp := make([]int32, len(dst))
	if err := t.run(op, t.be.Quantize(tmp, latents, M)); err != nil {
		return err
	}
	transposeCodes(dst, tmp, 1, M, c.NumCodebooks)
	return nil
}

// Lookup turns codes (M, K) (or (K, M) with CodebookMajor) into latents
// (M, D): the normalized codewords concatenated, UniTok's idx_to_f.
func (t *Tokenizer) Lookup(codes []int32, M int) ([]float32, error) {
	if err := t.check("lookup"); err != nil {
		return nil, err
	}
	dst := make([]float32, M*t.model.LatentDim)
	return dst, t.LookupInto(dst, codes, M)
}

// LookupInto is Lookup writing into dst, which must hold M*D floats.
func (t *Tokenizer) LookupInto(dst []float32, codes []int32, M int) error {
	const op = "lookup"
	if err := t.check(op); err != nil {
		return err
	}
	c := t.model.Config
	if err := checkShape(op, "codes", len(codes), 1, M, c.NumCodebooks); err != nil {
		return err
	}
	if err := checkDst(op, len(dst), M*c.LatentDim); err != nil {
		return err
	}
	codes, err := t.tokenMajorCodes(op, codes, 1, M)
	if err != nil {
		return err
	}
	return t.run(op, t.be.Lookup(dst, codes, M))
}

// QuantProj runs the encode-side projection alone: features (B, N, C) ->
// latents (B, N, D).
func (t *Tokenizer) QuantProj(features []float32, B, N int) ([]float32, error) {
	const op = "quant_proj"
	if err := t.check(op); err != nil {
		return nil, err
	}
	c := t.model.Config
	if err := checkShape(op, "features", len(features), B, N, c.InDim); err != nil {
		return nil, err
	}
	if err := checkFinite(op, "features", features, c.InDim); err != nil {
		return nil, err
	}
	dst := make([]float32, B*N*c.LatentDim)
	return dst, t.run(op, t.be.QuantProj(dst, features, B, N))
}

// PostQuantProj runs the decode-side projection alone: latents (B, N, D) ->
// features (B, N, C).
func (t *Tokenizer) PostQuantProj(latents []float32, B, N int) ([]float32, error) {
	const op = "post_quant_proj"
	if err := t.check(op); err != nil {
		return nil, err
	}
	c := t.model.Config
	if err := checkShape(op, "latents", len(latents), B, N, c.LatentDim); err != nil {
		return nil, err
	}
	if err := checkFinite(op, "latents", latents, c.LatentDim); err != nil {
		return nil, err
	}
	dst := make([]float32, B*N*c.InDim)
	return dst, t.run(op, t.be.PostQuantProj(dst, latents, B, N))
}

func (t *Tokenizer) run(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*Error); ok {
		return err
	}
	return &Error{Op: op, Msg: err.Error()}
}

// tokenMajorCodes validates the code range and returns codes in (.., N, K)
// order, copying only when the layout needs a transpose.
func (t *Tokenizer) tokenMajorCodes(op string, codes []int32, B, N int) ([]int32, error) {
	c := t.model.Config
	K, V := c.NumCodebooks, int32(c.CodebookSize)
	for i, v := range codes {
		if v < 0 || v >= V {
			return nil, badInput(op, "code %d at flat index %d (codebook %d) is out of range [0, %d)", v, i, codebookOf(i, N, K, t.opts.layout), V)
		}
	}
	if t.opts.layout == TokenMajor {
		return codes, nil
	}
	out := make([]int32, len(codes))
	untransposeCodes(out, codes, B, N, K)
	return out, nil
}

func codebookOf(flat, N, K int, l Layout) int {
	if l == TokenMajor {
		return flat % K
	}
	return (flat / N) % K
}

// transposeCodes writes src (B, N, K) into dst as (B, K, N).
func transposeCodes(dst, src []int32, B, N, K int) {
	for b := 0; b < B; b++ {
		s, d := src[b*N*K:(b+1)*N*K], dst[b*N*K:(b+1)*N*K]
		for n := 0; n < N; n++ {
			for k := 0; k < K; k++ {
				d[k*N+n] = s[n*K+k]
			}
		}
	}
}

// untransposeCodes writes src (B, K, N) into dst as (B, N, K).
func untransposeCodes(dst, src []int32, B, N, K int) {
	for b := 0; b < B; b++ {
		s, d := src[b*N*K:(b+1)*N*K], dst[b*N*K:(b+1)*N*K]
		for k := 0; k < K; k++ {
			for n := 0; n < N; n++ {
				d[n*K+k] = s[k*N+n]
			}
		}
	}
}

func checkShape(op, what string, n, B, N, W int) error {
	if B <= 0 || N <= 0 {
		return badInput(op, "%s: batch and token counts must be positive, got B=%d N=%d", what, B, N)
	}
	if n != B*N*W {
		return badInput(op, "%s: have %d values, want %d x %d x %d = %d", what, n, B, N, W, B*N*W)
	}
	return nil
}

func checkDst(op string, have, want int) error {
	if have != want {
		return badInput(op, "destination holds %d values, want %d", have, want)
	}
	return nil
}

// checkFinite rejects NaN and Inf, naming the first bad element's row.
func checkFinite(op, what string, x []float32, width int) error {
	for i, v := range x {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return badInput(op, "%s: non-finite value %v at row %d, column %d", what, v, i/width, i%width)
		}
	}
	return nil
}
