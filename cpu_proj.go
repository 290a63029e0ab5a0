package unitok

import (
	"sync"

	"github.com/unitok/unitok/internal/cpu"
	"github.com/unitok/unitok/internal/cpu/kern"
)

// projScratch holds one chunk's intermediates for one AttnProjection.
type projScratch struct {
	rows  int
	norm  []float32       // rows x In: norm1(x), later norm3(x)
	qkv   []float32       // rows x 3W
	attn  []float32       // rows x max(W, Out): head mean / concatenation, pooled
	pool  []float32       // rows x Out: pooled head mean
	h     []float32       // rows x Out: attn.proj output, then norm2/mlp.norm
	g0    []float32       // rows x 2*Out
	g1    []float32       // rows x 2*Out
	heads []float32       // rows x W: every head's output, for the head mean
	mha   cpu.AttnScratch // attention workers' scratch
}

type projScratchPool struct {
	p    *AttnProjection
	pool sync.Pool
}

func (sp *projScratchPool) get(rows int) *projScratch {
	if s, ok := sp.pool.Get().(*projScratch); ok && s.rows >= rows {
		return s
	}
	p := sp.p
	W := p.Heads * p.HeadDim
	return &projScratch{
		rows: rows,
		norm: make([]float32, rows*p.In),
		qkv:  make([]float32, rows*3*W),
		attn: make([]float32, rows*max(W, p.Out)),
		pool: make([]float32, rows*p.Out),
		h:    make([]float32, rows*p.Out),
		g0:   make([]float32, rows*2*p.Out),
		g1:   make([]float32, rows*2*p.Out),
	}
}

func (sp *projScratchPool) put(s *projScratch) { sp.pool.Put(s) }

// project runs AttnProjection p on x (nb images of N tokens, In wide) into
// dst (nb*N rows, Out wide), using scratch s.
func (b *cpuBackend) project(p *AttnProjection, s *projScratch, dst, x []float32, nb, N int) {
	R := nb * N
	W := p.Heads * p.HeadDim
	th := b.threads

	// Attention branch: norm1 -> qkv -> softmax(q k^T / sqrt(hd)) v -> heads.
	layerNorm(s.norm[:R*p.In], x, R, &p.Norm1, th)
	b.gemm(s.qkv[:R*3*W], s.norm[:R*p.In], R, &p.QKV, false)
	aw := W // width of the attention output before attn.proj
	if p.MeanHeads() {
		aw = p.HeadDim
	}
	attn := s.attn[:R*aw]
	attentionGEMM(attn, s, s.qkv[:R*3*W], p, nb, N, b.m.Causal, th)
	if p.Pooled() {
		adaptiveAvgPool(s.pool[:R*p.Out], attn, R, p.HeadDim, p.Out)
		attn = s.pool[:R*p.Out]
	}
	// x1 = proj(norm3(x)) + attn.proj(a), accumulated in dst.
	b.gemm(dst, attn, R, &p.AttnProj, false)
	layerNorm(s.norm[:R*p.In], x, R, &p.Norm3, th)
	b.gemm(dst, s.norm[:R*p.In], R, &p.Proj, true)
	// y = x1 + w2(gelu_tanh(w0(h)) * w1(h)), h = mlp.norm(norm2(x1)).
	h := s.h[:R*p.Out]
	layerNorm(h, dst, R, &p.Norm2, th)
	layerNorm(h, h, R, &p.MLPNorm, th)
	g0, g1 := s.g0[:R*2*p.Out], s.g1[:R*2*p.Out]
	b.gemm(g0, h, R, &p.W0, false)
	b.gemm(g1, h, R, &p.W1, false)
	parallelFor(len(g0), 4096, th, func(_, lo, hi int) {
		kern.GeGLU(g0[lo:hi], g1[lo:hi])
	})
	b.gemm(dst, g0, R, &p.W2, true)
}

// geluTanh is GELU with the tanh approximation, as nn.GELU(approximate='tanh').
func geluTanh(x float32) float32 { return kern.GeluTanh(x) }

// layerNorm normalizes each of R rows of x (width len(ln.Weight)) into dst
// (which may alias x) with kern.LayerNorm: biased variance, float32
// statistics (corrected two-pass) as PyTorch's CPU LayerNorm.
func layerNorm(dst, x []float32, R int, ln *LayerNorm, threads int) {
	n := len(ln.Weight)
	w, bias := ln.Weight, ln.Bias[:n]
	parallelFor(R, 16, threads, func(_, lo, hi int) {
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

func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// attentionGEMM is multi-head attention over qkv (nb images of N tokens,
// internal/cpu's MultiHeadAttention, shared with the image path) into dst:
// the heads side by side, or their mean when p.MeanHeads(). The head mean
// sums heads in order 0..H-1, so the result does not depend on scheduling.
func attentionGEMM(dst []float32, s *projScratch, qkv []float32, p *AttnProjection, nb, N int, causal bool, threads int) {
	H, hd := p.Heads, p.HeadDim
	W := H * hd
	R := nb * N
	heads := dst // concatenated heads go straight to dst
	if p.MeanHeads() {
		if len(s.heads) < R*W {
			s.heads = make([]float32, R*W)
		}
		heads = s.heads[:R*W]
	}
	cpu.MultiHeadAttention(heads, W, qkv, 3*W, nb, N, H, hd, causal, threads, &s.mha)
	if p.MeanHeads() {
		invH := float32(H)
		parallelFor(R, 64, threads, func(_, lo, hi int) {
			for r := lo; r < hi; r++ {
				o := dst[r*hd : (r+1)*hd]
				copy(o, heads[r*W:r*W+hd])
				for h := 1; h < H; h++ {
					for t, v := range heads[r*W+h*hd : r*W+(h+1)*hd] {
						o[t] += v
					}
				}
				for t := range o {
					o[t] /= invH
				}
			}
		})
	}
}
