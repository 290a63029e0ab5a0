// Package batch coalesces concurrent tokenizer calls into batches.
//
// Many callers each asking for one image or one feature set keep a GEMM (or
// a GPU) busy only when their work runs together. A Batcher queues calls,
// groups those that can share one engine call (same operation and, for the
// feature ops, the same token count N), and runs a group when it reaches
// Options.MaxBatch items or Options.MaxTokens tokens, or when its oldest
// call has waited Options.MaxWait. The batch result is split back to the
// callers. Every row of the CPU engine is computed independently of the
// other rows of its batch, so a batched call returns exactly the bits of a
// direct call (TestBitIdentical holds the engine to that).
//
// Every call takes a context: a call cancelled or expired while queued is
// dropped before its batch runs, and one cancelled while its batch runs
// returns at once, its rows discarded; the other calls of the batch are not
// disturbed. The queue is bounded: a call that finds it full fails at once
// with an error matching ErrOverloaded.
package batch

import (
	"context"
	"errors"
	"fmt"
	"image"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unitok/unitok"
)

// ErrOverloaded is the kind of the error a call gets when the queue is
// full. It is returned at once; nothing was queued.
var ErrOverloaded = errors.New("overloaded")

// ErrInternal is the kind of the error a call gets when the engine
// panicked while running its batch.
var ErrInternal = errors.New("internal error")

// FeatureEngine is the part of *unitok.Tokenizer a Batcher drives for the
// feature operations. Implementations must be safe for concurrent use.
type FeatureEngine interface {
	Config() unitok.Config
	Layout() unitok.Layout
	EncodeInto(dst []int32, features []float32, B, N int) error
	DecodeInto(dst []float32, codes []int32, B, N int) error
	QuantizeInto(dst []int32, latents []float32, M int) error
	LookupInto(dst []float32, codes []int32, M int) error
}

// ImageEngine is the optional image side of an engine: a FeatureEngine that
// also implements it (and whose ImageModel returns nil) serves
// TokenizeImages, Detokenize and EmbedImages.
// *unitok.Tokenizer implements it.
type ImageEngine interface {
	// ImageModel is nil when the checkpoint holds the image encoder and decoder.
	ImageModel() error
	// ImageSize is S, the side of the square images the model works at.
	ImageSize() int
	// TokenizeImages returns codes (B, N, K) for B images.
	TokenizeImages(ctx context.Context, imgs []image.Image) ([]int32, error)
	// Detokenize returns images (B, 3, S, S) in [-1, 1] for codes (B, N, K).
	Detokenize(ctx context.Context, codes []int32, B int) ([]float32, error)
	// EmbedImages returns embeddings (B, E).
	EmbedImages(ctx context.Context, imgs []image.Image) ([]float32, error)
}

// Options configure a Batcher. Zero values take the defaults.
type Options struct {
	// MaxBatch bounds the items of one batch: samples (B) for encode and
	// decode, rows (M) for quantize and lookup, images for the image
	// operations. Default 64. A single call larger than this runs alone.
	MaxBatch int
	// MaxTokens bounds the tokens of one batch (B*N for encode and decode,
	// M for quantize and lookup). Default 65536.
	MaxTokens int
	// MaxWait is how long the oldest queued call of a group may wait for
	// company before its batch runs anyway. Default 2ms; negative means
	// run as soon as an engine slot is free.
	MaxWait time.Duration
	// QueueSize bounds the calls waiting for a batch. Default 1024.
	QueueSize int
	// Workers is how many batches run at once. Default 1: the CPU engine
	// already uses every core on one batch; on CUDA match the streams.
	Workers int
	// RowAlign keeps encode and decode bit-identical to direct calls on
	// engines whose float results for a row depend on the row's offset
	// modulo RowAlign within the engine call. The CPU engine's GEMM runs
	// rows in blocks of 4 and its leftover rows on another path that
	// rounds differently (by an ulp), so a call's rows must start at a
	// multiple of 4 and a call whose B*N is not a multiple of 4 may only
	// be the last of its batch. Default 4; 1 turns the rule off for an
	// engine that is row-invariant.
	RowAlign int
	// Observer, if set, is told about every batch (for metrics).
	Observer func(BatchInfo)
}

// BatchInfo describes one batch run.
type BatchInfo struct {
	Op       string        // "encode", "decode", "quantize", "lookup", "tokenize", "detokenize", "embed"
	Requests int           // calls in the batch
	Items    int           // samples, rows or images
	Tokens   int           // tokens (feature ops) or images
	Wait     time.Duration // how long the oldest call waited in the queue
	Run      time.Duration // engine time
	Err      error         // the batch's engine error, if any
}

type op uint8

const (
	opEncode op = iota
	opDecode
	opQuantize
	opLookup
	opTokenize
	opDetokenize
	opEmbed
)

var opNames = [...]string{"encode", "decode", "quantize", "lookup", "tokenize", "detokenize", "embed"}

func (o op) String() string { return opNames[o] }

type key struct {
	op op
	n  int // tokens per sample for encode/decode/detokenize; 0 otherwise
}

const (
	stQueued int32 = iota
	stRunning
	stAbandoned
)

type request struct {
	ctx    context.Context
	key    key
	items  int
	tokens int
	f32    []float32
	i32    []int32
	imgs   []image.Image
	enq    time.Time
	state  int32 // guarded by Batcher.mu
	done   chan struct{}
	outF   []float32
	outI   []int32
	err    error
}

type group struct {
	q      []*request
	items  int // live (queued) items
	tokens int
}

// Batcher coalesces calls to one engine. It is safe for concurrent use.
type Batcher struct {
	eng  FeatureEngine
	img  ImageEngine // nil when the engine has no image model
	cfg  unitok.Config
	opts Options

	mu     sync.Mutex
	groups map[key]*group
	queued int
	closed bool
	wake   chan struct{}

	sem      chan struct{}
	running  sync.WaitGroup
	loopDone chan struct{}
	inflight atomic.Int64
}

// New starts a Batcher over eng. Call Close to stop it.
func New(eng FeatureEngine, opts Options) *Batcher {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 64
	}
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = 1 << 16
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = 2 * time.Millisecond
	}
	if opts.MaxWait < 0 {
		opts.MaxWait = 0
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.Workers <= 0 {
		opts.Workers = 1
	}
	if opts.RowAlign <= 0 {
		opts.RowAlign = 4
	}
	b := &Batcher{
		eng: eng, cfg: eng.Config(), opts: opts,
		groups:   map[key]*group{},
		wake:     make(chan struct{}, 1),
		sem:      make(chan struct{}, opts.Workers),
		loopDone: make(chan struct{}),
	}
	if ie, ok := eng.(ImageEngine); ok && ie.ImageModel() == nil {
		b.img = ie
	}
	go b.loop()
	return b
}

// Config is the engine's model configuration.
func (b *Batcher) Config() unitok.Config { return b.cfg }

// Options returns the options in effect (defaults filled in).
func (b *Batcher) Options() Options { return b.opts }

// ImageEngine returns the image engine, or nil when the model has none.
func (b *Batcher) ImageEngine() ImageEngine { return b.img }

// QueueDepth is the number of calls waiting for a batch.
func (b *Batcher) QueueDepth() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
}

// InFlight is the number of calls whose batch is running.
func (b *Batcher) InFlight() int { return int(b.inflight.Load()) }

// Encode turns features (B, N, C) into codes (B, N, K) (or (B, K, N) with
// the engine's CodebookMajor layout), like Tokenizer.Encode.
func (b *Batcher) Encode(ctx context.Context, features []float32, B, N int) ([]int32, error) {
	const o = opEncode
	c := b.cfg
	if err := shape(o, "features", len(features), B, N, c.InDim); err != nil {
		return nil, err
	}
	if err := finite(o, "features", features, c.InDim); err != nil {
		return nil, err
	}
	r := &request{key: key{o, N}, items: B, tokens: B * N, f32: features}
	if err := b.do(ctx, r); err != nil {
		return nil, err
	}
	return r.outI, nil
}

// Decode turns codes (B, N, K) (or (B, K, N)) into features (B, N, C).
func (b *Batcher) Decode(ctx context.Context, codes []int32, B, N int) ([]float32, error) {
	const o = opDecode
	c := b.cfg
	if err := shape(o, "codes", len(codes), B, N, c.NumCodebooks); err != nil {
		return nil, err
	}
	if err := codeRange(o, codes, c.CodebookSize); err != nil {
		return nil, err
	}
	r := &request{key: key{o, N}, items: B, tokens: B * N, i32: codes}
	if err := b.do(ctx, r); err != nil {
		return nil, err
	}
	return r.outF, nil
}

// Quantize turns latents (M, D) into codes (M, K) (or (K, M)).
func (b *Batcher) Quantize(ctx context.Context, latents []float32, M int) ([]int32, error) {
	const o = opQuantize
	c := b.cfg
	if err := shape(o, "latents", len(latents), 1, M, c.LatentDim); err != nil {
		return nil, err
	}
	if err := finite(o, "latents", latents, c.LatentDim); err != nil {
		return nil, err
	}
	r := &request{key: key{o, 0}, items: M, tokens: M, f32: latents}
	if err := b.do(ctx, r); err != nil {
		return nil, err
	}
	return r.outI, nil
}

// Lookup turns codes (M, K) (or (K, M)) into latents (M, D).
func (b *Batcher) Lookup(ctx context.Context, codes []int32, M int) ([]float32, error) {
	const o = opLookup
	c := b.cfg
	if err := shape(o, "codes", len(codes), 1, M, c.NumCodebooks); err != nil {
		return nil, err
	}
	if err := codeRange(o, codes, c.CodebookSize); err != nil {
		return nil, err
	}
	r := &request{key: key{o, 0}, items: M, tokens: M, i32: codes}
	if err := b.do(ctx, r); err != nil {
		return nil, err
	}
	return r.outF, nil
}

// TokenizeImages returns codes (B, N, K) for B images.
func (b *Batcher) TokenizeImages(ctx context.Context, imgs []image.Image) ([]int32, error) {
	if err := b.checkImages(opTokenize, imgs); err != nil {
		return nil, err
	}
	r := &request{key: key{opTokenize, 0}, items: len(imgs), tokens: len(imgs), imgs: imgs}
	if err := b.do(ctx, r); err != nil {
		return nil, err
	}
	return r.outI, nil
}

// EmbedImages returns embeddings (B, E) for B images.
func (b *Batcher) EmbedImages(ctx context.Context, imgs []image.Image) ([]float32, error) {
	if err := b.checkImages(opEmbed, imgs); err != nil {
		return nil, err
	}
	r := &request{key: key{opEmbed, 0}, items: len(imgs), tokens: len(imgs), imgs: imgs}
	if err := b.do(ctx, r); err != nil {
		return nil, err
	}
	return r.outF, nil
}

// Detokenize returns images (B, 3, S, S) in [-1, 1] for codes (B, N, K).
func (b *Batcher) Detokenize(ctx context.Context, codes []int32, B int) ([]float32, error) {
	const o = opDetokenize
	if b.img == nil {
		return nil, noImages(o)
	}
	K := b.cfg.NumCodebooks
	if B <= 0 || len(codes) == 0 || len(codes)%(B*K) != 0 {
		return nil, bad(o, "codes: have %d values, want B=%d x N x K=%d", len(codes), B, K)
	}
	if err := codeRange(o, codes, b.cfg.CodebookSize); err != nil {
		return nil, err
	}
	N := len(codes) / (B * K)
	r := &request{key: key{o, N}, items: B, tokens: B, i32: codes}
	if err := b.do(ctx, r); err != nil {
		return nil, err
	}
	return r.outF, nil
}

func (b *Batcher) checkImages(o op, imgs []image.Image) error {
	if b.img == nil {
		return noImages(o)
	}
	if len(imgs) == 0 {
		return bad(o, "no images")
	}
	for i, im := range imgs {
		if im == nil {
			return bad(o, "image %d is nil", i)
		}
		if r := im.Bounds(); r.Empty() {
			return bad(o, "image %d is empty (%v)", i, r)
		}
	}
	return nil
}

// do queues r and waits for its result or its context.
func (b *Batcher) do(ctx context.Context, r *request) error {
	if err := ctx.Err(); err != nil {
		return ctxErr(r.key.op, err, "before queueing")
	}
	r.ctx = ctx
	r.done = make(chan struct{})
	r.enq = time.Now()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return &unitok.Error{Op: r.key.op.String(), Msg: "batcher is closed", Kind: unitok.ErrClosed}
	}
	if b.queued >= b.opts.QueueSize {
		n := b.queued
		b.mu.Unlock()
		return &unitok.Error{Op: r.key.op.String(), Msg: fmt.Sprintf("queue is full (%d calls waiting)", n), Kind: ErrOverloaded}
	}
	g := b.groups[r.key]
	if g == nil {
		g = &group{}
		b.groups[r.key] = g
	}
	g.q = append(g.q, r)
	g.items += r.items
	g.tokens += r.tokens
	b.queued++
	b.mu.Unlock()
	b.notify()

	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	if r.state == stQueued {
		r.state = stAbandoned
		b.unqueue(r)
		b.mu.Unlock()
		return ctxErr(r.key.op, ctx.Err(), "while queued")
	}
	b.mu.Unlock()
	// Its batch is running: the result, when it comes, is discarded.
	return ctxErr(r.key.op, ctx.Err(), "while its batch ran")
}

// unqueue forgets a queued request's counts; b.mu is held. The request
// stays in its group's slice and is skipped when a batch is taken.
func (b *Batcher) unqueue(r *request) {
	g := b.groups[r.key]
	g.items -= r.items
	g.tokens -= r.tokens
	b.queued--
}

func (b *Batcher) notify() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// loop hands batches to workers until the Batcher is closed and empty.
func (b *Batcher) loop() {
	defer close(b.loopDone)
	for {
		b.sem <- struct{}{}
		batch := b.next()
		if batch == nil {
			<-b.sem
			return
		}
		b.running.Add(1)
		go func() {
			defer func() { <-b.sem; b.running.Done() }()
			b.run(batch)
		}()
	}
}

// next waits for a batch that is due and takes it from the queue; nil
// when the Batcher is closed and nothing is queued.
func (b *Batcher) next() []*request {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.mu.Lock()
		var oldest, full *group
		for k, g := range b.groups {
			for len(g.q) > 0 && g.q[0].state != stQueued {
				g.q[0] = nil
				g.q = g.q[1:]
			}
			if len(g.q) == 0 {
				delete(b.groups, k)
				continue
			}
			if g.items >= b.opts.MaxBatch || g.tokens >= b.opts.MaxTokens {
				if full == nil || g.q[0].enq.Before(full.q[0].enq) {
					full = g
				}
			}
			if oldest == nil || g.q[0].enq.Before(oldest.q[0].enq) {
				oldest = g
			}
		}
		if oldest == nil && b.closed {
			b.mu.Unlock()
			return nil
		}
		var wait time.Duration
		if oldest != nil {
			wait = b.opts.MaxWait - time.Since(oldest.q[0].enq)
		}
		switch {
		case full != nil:
			return b.take(full)
		case oldest != nil && (wait <= 0 || b.closed):
			return b.take(oldest)
		}
		b.mu.Unlock()
		if oldest == nil {
			<-b.wake
			continue
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-b.wake:
			timer.Stop() // Go >= 1.23: no stale value is left in timer.C
		case <-timer.C:
		}
	}
}

// take removes up to one batch of live requests from g's head; b.mu is
// held and is released.
func (b *Batcher) take(g *group) []*request {
	defer b.mu.Unlock()
	var out []*request
	items, tokens, i := 0, 0, 0
	for ; i < len(g.q); i++ {
		r := g.q[i]
		if r.state != stQueued {
			continue
		}
		if len(out) > 0 && (items+r.items > b.opts.MaxBatch || tokens+r.tokens > b.opts.MaxTokens) {
			break
		}
		b.unqueue(r)
		if err := r.ctx.Err(); err != nil {
			r.state = stAbandoned
			r.err = ctxErr(r.key.op, err, "while queued")
			close(r.done)
			continue
		}
		r.state = stRunning
		out = append(out, r)
		items += r.items
		tokens += r.tokens
		if !b.aligned(r) {
			i++ // an unaligned call ends its batch (see Options.RowAlign)
			break
		}
	}
	clear(g.q[:i])
	g.q = g.q[i:]
	b.inflight.Add(int64(len(out)))
	return out
}

// aligned reports whether r's rows end on a RowAlign boundary, so that a
// call after it starts on one. Only encode and decode run row GEMMs.
func (b *Batcher) aligned(r *request) bool {
	if r.key.op != opEncode && r.key.op != opDecode {
		return true
	}
	return (r.items*r.key.n)%b.opts.RowAlign == 0
}

// run computes one batch and hands each request its rows.
func (b *Batcher) run(batch []*request) {
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	info := BatchInfo{Op: batch[0].key.op.String(), Requests: len(batch), Wait: start.Sub(batch[0].enq)}
	for _, r := range batch {
		info.Items += r.items
		info.Tokens += r.tokens
	}
	err := b.safeCompute(batch)
	if err != nil && len(batch) > 1 {
		// Inputs were checked before queueing, so this is rare; rerun
		// each call alone so that one bad call cannot fail the others
		// and each gets exactly the error a direct call would.
		for _, r := range batch {
			r.err = b.safeCompute([]*request{r})
		}
	} else if err != nil {
		batch[0].err = err
	}
	info.Run = time.Since(start)
	info.Err = err
	b.inflight.Add(-int64(len(batch)))
	for _, r := range batch {
		if r.err != nil {
			r.outF, r.outI = nil, nil
		}
		close(r.done)
	}
	if b.opts.Observer != nil {
		b.opts.Observer(info)
	}
}

func (b *Batcher) safeCompute(batch []*request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &unitok.Error{Op: batch[0].key.op.String(), Msg: fmt.Sprintf("engine panic: %v\n%s", p, debug.Stack()), Kind: ErrInternal}
		}
	}()
	return b.compute(batch)
}

// compute runs the engine once over the batch and sets each request's
// output to its own rows (sub-slices of one batch buffer).
func (b *Batcher) compute(batch []*request) error {
	c := b.cfg
	K := c.NumCodebooks
	k := batch[0].key
	items := 0
	for _, r := range batch {
		items += r.items
	}
	codebookMajor := b.eng.Layout() == unitok.CodebookMajor
	switch k.op {
	case opEncode:
		out := make([]int32, items*k.n*K)
		if err := b.eng.EncodeInto(out, gatherF(batch), items, k.n); err != nil {
			return err
		}
		splitI(batch, out, k.n*K)
	case opDecode:
		out := make([]float32, items*k.n*c.InDim)
		if err := b.eng.DecodeInto(out, gatherI(batch), items, k.n); err != nil {
			return err
		}
		splitF(batch, out, k.n*c.InDim)
	case opQuantize:
		out := make([]int32, items*K)
		if err := b.eng.QuantizeInto(out, gatherF(batch), items); err != nil {
			return err
		}
		if codebookMajor && len(batch) > 1 {
			// (K, M) per call: column block of the batch's (K, sum M).
			off := 0
			for _, r := range batch {
				r.outI = make([]int32, K*r.items)
				for j := 0; j < K; j++ {
					copy(r.outI[j*r.items:(j+1)*r.items], out[j*items+off:])
				}
				off += r.items
			}
		} else {
			splitI(batch, out, K)
		}
	case opLookup:
		in := gatherI(batch)
		if codebookMajor && len(batch) > 1 {
			// Each call's (K, M_i) codes become a column block of (K, sum M).
			in = make([]int32, items*K)
			off := 0
			for _, r := range batch {
				for j := 0; j < K; j++ {
					copy(in[j*items+off:], r.i32[j*r.items:(j+1)*r.items])
				}
				off += r.items
			}
		}
		out := make([]float32, items*c.LatentDim)
		if err := b.eng.LookupInto(out, in, items); err != nil {
			return err
		}
		splitF(batch, out, c.LatentDim)
	case opTokenize, opEmbed:
		imgs := batch[0].imgs
		if len(batch) > 1 {
			imgs = make([]image.Image, 0, items)
			for _, r := range batch {
				imgs = append(imgs, r.imgs...)
			}
		}
		var n int
		if k.op == opTokenize {
			out, err := b.img.TokenizeImages(context.Background(), imgs)
			if err != nil {
				return err
			}
			if n, err = perItem(k.op, len(out), items); err != nil {
				return err
			}
			splitI(batch, out, n)
		} else {
			out, err := b.img.EmbedImages(context.Background(), imgs)
			if err != nil {
				return err
			}
			if n, err = perItem(k.op, len(out), items); err != nil {
				return err
			}
			splitF(batch, out, n)
		}
	case opDetokenize:
		out, err := b.img.Detokenize(context.Background(), gatherI(batch), items)
		if err != nil {
			return err
		}
		n, err := perItem(k.op, len(out), items)
		if err != nil {
			return err
		}
		splitF(batch, out, n)
	}
	return nil
}

func perItem(o op, n, items int) (int, error) {
	if n%items != 0 {
		return 0, &unitok.Error{Op: o.String(), Msg: fmt.Sprintf("engine returned %d values for %d items", n, items), Kind: ErrInternal}
	}
	return n / items, nil
}

func gatherF(batch []*request) []float32 {
	if len(batch) == 1 {
		return batch[0].f32
	}
	n := 0
	for _, r := range batch {
		n += len(r.f32)
	}
	out := make([]float32, 0, n)
	for _, r := range batch {
		out = append(out, r.f32...)
	}
	return out
}

func gatherI(batch []*request) []int32 {
	if len(batch) == 1 {
		return batch[0].i32
	}
	n := 0
	for _, r := range batch {
		n += len(r.i32)
	}
	out := make([]int32, 0, n)
	for _, r := range batch {
		out = append(out, r.i32...)
	}
	return out
}

func splitI(batch []*request, out []int32, per int) {
	off := 0
	for _, r := range batch {
		n := r.items * per
		r.outI = out[off : off+n : off+n]
		off += n
	}
}

func splitF(batch []*request, out []float32, per int) {
	off := 0
	for _, r := range batch {
		n := r.items * per
		r.outF = out[off : off+n : off+n]
		off += n
	}
}

// Close stops accepting calls (they get an error matching
// unitok.ErrClosed), runs every queued call without waiting for MaxWait,
// and returns when all accepted calls have been answered. If ctx ends
// first, calls still queued fail with unitok.ErrClosed, and Close returns
// ctx's error once the running batches finish (an engine call cannot be
// interrupted).
func (b *Batcher) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.notify()
	select {
	case <-b.loopDone:
		b.running.Wait()
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	for k, g := range b.groups {
		for _, r := range g.q {
			if r.state == stQueued {
				r.state = stAbandoned
				b.unqueue(r)
				r.err = &unitok.Error{Op: r.key.op.String(), Msg: "batcher closed before the call ran", Kind: unitok.ErrClosed}
				close(r.done)
			}
		}
		delete(b.groups, k)
	}
	b.mu.Unlock()
	b.notify()
	<-b.loopDone
	b.running.Wait()
	return ctx.Err()
}

func bad(o op, format string, args ...any) error {
	return &unitok.Error{Op: o.String(), Msg: fmt.Sprintf(format, args...), Kind: unitok.ErrBadInput}
}

func noImages(o op) error {
	return &unitok.Error{Op: o.String(), Msg: "the engine has no image model", Kind: ErrNoImageModel}
}

// ErrNoImageModel is the kind of the error an image call gets when the
// engine has no image encoder/decoder.
var ErrNoImageModel = errors.New("no image model")

// ctxErr wraps a context error so that errors.Is matches
// context.Canceled or context.DeadlineExceeded.
func ctxErr(o op, err error, when string) error {
	return &unitok.Error{Op: o.String(), Msg: fmt.Sprintf("%v %s", err, when), Kind: err}
}

func shape(o op, what string, n, B, N, W int) error {
	if B <= 0 || N <= 0 {
		return bad(o, "%s: batch and token counts must be positive, got B=%d N=%d", what, B, N)
	}
	if n != B*N*W {
		return bad(o, "%s: have %d values, want %d x %d x %d = %d", what, n, B, N, W, B*N*W)
	}
	return nil
}

func finite(o op, what string, x []float32, width int) error {
	for i, v := range x {
		if v != v || v > 3.4028235e38 || v < -3.4028235e38 {
			return bad(o, "%s: non-finite value %v at row %d, column %d", what, v, i/width, i%width)
		}
	}
	return nil
}

func codeRange(o op, codes []int32, V int) error {
	for i, v := range codes {
		if v < 0 || int(v) >= V {
			return bad(o, "code %d at flat index %d is out of range [0, %d)", v, i, V)
		}
	}
	return nil
}
