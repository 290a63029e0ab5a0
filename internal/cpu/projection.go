package cpu

import (
	"sync"

	"github.com/unitok/unitok/internal/cpu/kern"
)

// UniTok's AttnProjection on the CPU (Core runs one per side): its linear
// layers on kern's GEMM, attention on MultiHeadAttention, run a chunk of
// whole images at a time.

// chunkRowsTarget is the target number of token rows per projection chunk:
// large enough to keep every core busy in the GEMMs, small enough that the
// QKV scratch (rows x 3*max(C,D) floats) stays around 25 MB at C=1024.
const chunkRowsTarget = 2048

// ImagesPerChunk is how many whole images of N tokens make one chunk.
func ImagesPerChunk(N int) int { return max(1, chunkRowsTarget/N) }

// chunkRows is the token rows of the largest chunk forChunks hands out.
func chunkRows(B, N int) int { return min(ImagesPerChunk(N), B) * N }

// forChunks calls fn for consecutive chunks of whole images: nb images,
// token rows [r0, r1).
func forChunks(B, N int, fn func(nb, r0, r1 int)) {
	step := ImagesPerChunk(N)
	for b0 := 0; b0 < B; b0 += step {
		nb := min(step, B-b0)
		fn(nb, b0*N, (b0+nb)*N)
	}
}

// LayerNormWeights is an affine layer normalization over the last axis.
type LayerNormWeights struct {
	Weight, Bias []float32
	Eps          float32
}

// LinearWeights is y = x W^T + b with W (Out, In) row-major, as PyTorch's
// nn.Linear stores it. Bias may be nil.
type LinearWeights struct {
	In, Out int
	Weight  []float32
	Bias    []float32
}

// ProjectionWeights are UniTok's AttnProjection(In, Out, Heads) (the root
// package's AttnProjection, whose doc gives the math): attention over
// Heads heads of HeadDim, their mean when In > Out (adaptive-average
// pooled to Out when HeadDim != Out), else their concatenation.
type ProjectionWeights struct {
	In, Out, Heads, HeadDim         int
	Norm1, Norm2, Norm3, MLPNorm    LayerNormWeights
	QKV, AttnProj, Proj, W0, W1, W2 LinearWeights
}

func (w *ProjectionWeights) meanHeads() bool { return w.In > w.Out }
func (w *ProjectionWeights) pooled() bool    { return w.meanHeads() && w.HeadDim != w.Out }

// projection is one AttnProjection laid out for kern: its linear layers
// packed, and a pool of per-chunk scratch.
type projection struct {
	w                               ProjectionWeights
	causal                          bool
	threads                         int
	qkv, attnProj, proj, w0, w1, w2 *kern.Packed
	pool                            sync.Pool // *projScratch
}

func newProjection(w ProjectionWeights, causal bool, threads int) *projection {
	pack := func(l *LinearWeights) *kern.Packed { return kern.Pack(l.Weight, l.Out, l.In) }
	return &projection{w: w, causal: causal, threads: threads,
		qkv: pack(&w.QKV), attnProj: pack(&w.AttnProj), proj: pack(&w.Proj),
		w0: pack(&w.W0), w1: pack(&w.W1), w2: pack(&w.W2)}
}

// projScratch holds one chunk's intermediates.
type projScratch struct {
	rows  int
	norm  []float32   // rows x In: norm1(x), later norm3(x)
	qkv   []float32   // rows x 3W
	attn  []float32   // rows x max(W, Out): head mean / concatenation
	pool  []float32   // rows x Out: pooled head mean
	h     []float32   // rows x Out: norm2 then mlp.norm of x1
	g0    []float32   // rows x 2*Out
	g1    []float32   // rows x 2*Out
	heads []float32   // rows x W: every head's output, for the head mean
	mha   AttnScratch // attention workers' scratch
}

func (p *projection) get(rows int) *projScratch {
	if s, ok := p.pool.Get().(*projScratch); ok && s.rows >= rows {
		return s
	}
	w := &p.w
	W := w.Heads * w.HeadDim
	return &projScratch{
		rows: rows,
		norm: make([]float32, rows*w.In),
		qkv:  make([]float32, rows*3*W),
		attn: make([]float32, rows*max(W, w.Out)),
		pool: make([]float32, rows*w.Out),
		h:    make([]float32, rows*w.Out),
		g0:   make([]float32, rows*2*w.Out),
		g1:   make([]float32, rows*2*w.Out),
	}
}

func (p *projection) put(s *projScratch) { p.pool.Put(s) }

// all runs the projection on x (B images of N tokens) into dst, a chunk
// at a time.
func (p *projection) all(dst, x []float32, B, N int) {
	s := p.get(chunkRows(B, N))
	defer p.put(s)
	forChunks(B, N, func(nb, r0, r1 int) {
		p.run(s, dst[r0*p.w.Out:r1*p.w.Out], x[r0*p.w.In:r1*p.w.In], nb, N)
	})
}

// gemm is dst = a W^T + bias (+ dst when accumulate) for R rows.
func (p *projection) gemm(dst, a []float32, R int, l *LinearWeights, w *kern.Packed, accumulate bool) {
	kern.Gemm(dst, l.Out, a, l.In, R, w, l.Bias, accumulate, p.threads)
}

// run is the projection of one chunk, x (nb images of N tokens, In wide),
// into dst (nb*N rows, Out wide), using scratch s.
func (p *projection) run(s *projScratch, dst, x []float32, nb, N int) {
	w := &p.w
	R := nb * N
	W := w.Heads * w.HeadDim
	th := p.threads

	// Attention branch: norm1 -> qkv -> softmax(q k^T / sqrt(hd)) v -> heads.
	layerNorm(s.norm[:R*w.In], x, R, &w.Norm1, th)
	p.gemm(s.qkv[:R*3*W], s.norm[:R*w.In], R, &w.QKV, p.qkv, false)
	aw := W // width of the attention output before attn.proj
	if w.meanHeads() {
		aw = w.HeadDim
	}
	attn := s.attn[:R*aw]
	p.attention(attn, s, s.qkv[:R*3*W], nb, N)
	if w.pooled() {
		adaptiveAvgPool(s.pool[:R*w.Out], attn, R, w.HeadDim, w.Out)
		attn = s.pool[:R*w.Out]
	}
	// x1 = proj(norm3(x)) + attn.proj(a), accumulated in dst.
	p.gemm(dst, attn, R, &w.AttnProj, p.attnProj, false)
	layerNorm(s.norm[:R*w.In], x, R, &w.Norm3, th)
	p.gemm(dst, s.norm[:R*w.In], R, &w.Proj, p.proj, true)
	// y = x1 + w2(gelu_tanh(w0(h)) * w1(h)), h = mlp.norm(norm2(x1)).
	h := s.h[:R*w.Out]
	layerNorm(h, dst, R, &w.Norm2, th)
	layerNorm(h, h, R, &w.MLPNorm, th)
	g0, g1 := s.g0[:R*2*w.Out], s.g1[:R*2*w.Out]
	p.gemm(g0, h, R, &w.W0, p.w0, false)
	p.gemm(g1, h, R, &w.W1, p.w1, false)
	kern.ParallelFor(len(g0), 4096, th, func(_, lo, hi int) {
		kern.GeGLU(g0[lo:hi], g1[lo:hi])
	})
	p.gemm(dst, g0, R, &w.W2, p.w2, true)
}

// layerNorm normalizes each of R rows of x (width len(ln.Weight)) into dst
// (which may alias x) with kern.LayerNorm: biased variance, float32
// statistics (corrected two-pass) as PyTorch's CPU LayerNorm.
func layerNorm(dst, x []float32, R int, ln *LayerNormWeights, threads int) {
	n := len(ln.Weight)
	w, bias := ln.Weight, ln.Bias[:n]
	kern.ParallelFor(R, 16, threads, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			kern.LayerNorm(dst[r*n:(r+1)*n], x[r*n:(r+1)*n], w, bias, ln.Eps)
		}
	})
}

// adaptiveAvgPool resizes each of R rows from width L to width out as
// torch.nn.functional.adaptive_avg_pool1d: output i averages input
// [floor(i*L/out), ceil((i+1)*L/out)).
func adaptiveAvgPool(dst, x []float32, R, L, out int) {
	for r := 0; r < R; r++ {
		in := x[r*L : (r+1)*L]
		o := dst[r*out : (r+1)*out]
		for i := 0; i < out; i++ {
			s := i * L / out
			e := ((i+1)*L + out - 1) / out
			var sum float32
			for _, v := range in[s:e] {
				sum += v
			}
			o[i] = sum / float32(e-s)
		}
	}
}

// attention is multi-head attention over qkv (nb images of N tokens) into
// dst: the heads side by side, or their mean when the projection averages
// heads. The head mean sums heads in order 0..H-1, so the result does not
// depend on scheduling.
func (p *projection) attention(dst []float32, s *projScratch, qkv []float32, nb, N int) {
	H, hd := p.w.Heads, p.w.HeadDim
	W := H * hd
	R := nb * N
	heads := dst // concatenated heads go straight to dst
	if p.w.meanHeads() {
		if len(s.heads) < R*W {
			s.heads = make([]float32, R*W)
		}
		heads = s.heads[:R*W]
	}
	MultiHeadAttention(heads, W, qkv, 3*W, nb, N, H, hd, p.causal, p.threads, &s.mha)
	if p.w.meanHeads() {
		nh := float32(H)
		kern.ParallelFor(R, 64, p.threads, func(_, lo, hi int) {
			for r := lo; r < hi; r++ {
				o := dst[r*hd : (r+1)*hd]
				copy(o, heads[r*W:r*W+hd])
				for h := 1; h < H; h++ {
					for t, v := range heads[r*W+h*hd : r*W+(h+1)*hd] {
						o[t] += v
					}
				}
				for t := range o {
					o[t] /= nh
				}
			}
		})
	}
}
