package unitok

import (
	"math"
	"sync"
)

// projScratch holds one chunk's intermediates for one AttnProjection.
type projScratch struct {
	rows  int
	norm  []float32 // rows x In: norm1(x), later norm3(x)
	qkv   []float32 // rows x 3W
	attn  []float32 // rows x max(W, Out): head mean / concatenation, pooled
	pool  []float32 // rows x Out: pooled head mean
	h     []float32 // rows x Out: attn.proj output, then norm2/mlp.norm
	g0    []float32 // rows x 2*Out
	g1    []float32 // rows x 2*Out
	work  []float32 // per attention worker scratch (grown on demand)
	heads []float32 // rows x W: every head's output, for the SIMD head mean
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
	if simd.enabled {
		attentionGEMM(attn, s, s.qkv[:R*3*W], p, nb, N, b.m.Causal, th)
	} else {
		if need := th * (N + p.HeadDim); len(s.work) < need {
			s.work = make([]float32, need)
		}
		attention(attn, s.qkv[:R*3*W], s.work, p, nb, N, b.m.Causal, th)
	}
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
		if simd.enabled {
			simd.geglu(g0[lo:hi], g1[lo:hi])
			return
		}
		for i := lo; i < hi; i++ {
			g0[i] = geluTanh(g0[i]) * g1[i]
		}
	})
	b.gemm(dst, g0, R, &p.W2, true)
}

// geluTanh is GELU with the tanh approximation, as nn.GELU(approximate='tanh').
func geluTanh(x float32) float32 {
	v := float64(x)
	return float32(0.5 * v * (1 + math.Tanh(0.7978845608028654*(v+0.044715*v*v*v))))
}

// layerNorm normalizes each of R rows of x (width len(ln.Weight)) into dst
// (which may alias x): biased variance, statistics in float64.
func layerNorm(dst, x []float32, R int, ln *LayerNorm, threads int) {
	n := len(ln.Weight)
	parallelFor(R, 16, threads, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			row := x[r*n : (r+1)*n]
			var mean float64
			for _, v := range row {
				mean += float64(v)
			}
			mean /= float64(n)
			var vr float64
			for _, v := range row {
				d := float64(v) - mean
				vr += d * d
			}
			vr /= float64(n)
			inv := 1 / math.Sqrt(vr+float64(ln.Eps))
			out := dst[r*n : (r+1)*n]
			for i, v := range row {
				out[i] = float32((float64(v)-mean)*inv)*ln.Weight[i] + ln.Bias[i]
			}
		}
	})
}

// attention computes, for nb images of N tokens, each head's
// softmax(q k^T / sqrt(hd)) v from qkv (rows x [q | k | v], each H*hd wide,
// head-major within), and writes either the mean over heads (rows x hd) or
// the heads concatenated (rows x H*hd) into dst. work holds threads*(N+hd)
// floats of per-worker scratch. Heads are summed in order
// 0..H-1 so the result does not depend on scheduling.
func attention(dst, qkv, work []float32, p *AttnProjection, nb, N int, causal bool, threads int) {
	H, hd := p.Heads, p.HeadDim
	W := H * hd
	scale := float32(1 / math.Sqrt(float64(hd)))
	mean := p.MeanHeads()
	// One work item is a block of 8 queries of one image, all heads.
	const qb = 8
	blocks := (N + qb - 1) / qb
	parallelFor(nb*blocks, 1, threads, func(wk, lo, hi int) {
		ws := work[wk*(N+hd) : (wk+1)*(N+hd)]
		scores, acc := ws[:N], ws[N:]
		for item := lo; item < hi; item++ {
			img, blk := item/blocks, item%blocks
			base := img * N
			for i := blk * qb; i < min((blk+1)*qb, N); i++ {
				row := base + i
				var out []float32
				if mean {
					out = dst[row*hd : (row+1)*hd]
					clear(out)
				}
				L := N
				if causal {
					L = i + 1
				}
				for h := 0; h < H; h++ {
					q := qkv[row*3*W+h*hd : row*3*W+(h+1)*hd]
					mx := float32(math.Inf(-1))
					for j := 0; j < L; j++ {
						k := qkv[(base+j)*3*W+W+h*hd : (base+j)*3*W+W+(h+1)*hd]
						s := dot(q, k) * scale
						scores[j] = s
						mx = max(mx, s)
					}
					for j := 0; j < L; j++ {
						scores[j] -= mx
					}
					expInPlace(scores[:L])
					var sum float32
					for _, e := range scores[:L] {
						sum += e
					}
					clear(acc)
					for j := 0; j < L; j++ {
						v := qkv[(base+j)*3*W+2*W+h*hd : (base+j)*3*W+2*W+(h+1)*hd]
						axpy(acc, scores[j], v)
					}
					inv := 1 / sum
					if mean {
						for t := range acc {
							out[t] += acc[t] * inv
						}
					} else {
						o := dst[row*W+h*hd : row*W+(h+1)*hd]
						for t := range acc {
							o[t] = acc[t] * inv
						}
					}
				}
				if mean {
					for t := range out {
						out[t] /= float32(H)
					}
				}
			}
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

func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

// expInPlace replaces each x[i] <= 0 with exp(x[i]).
func expInPlace(x []float32) {
	if simd.enabled {
		simd.exp(x)
		return
	}
	for i, v := range x {
		x[i] = float32(math.Exp(float64(v)))
	}
}

// attnQueryBlock is how many queries attentionGEMM scores at once.
const attnQueryBlock = 64

// attentionGEMM is attention as two GEMMs per (image, head) and block of
// queries, on the SIMD kernel: S = Q K^T (K packed in 16-key panels), a
// row softmax of S * hd^-0.5 (causal rows stop at the diagonal), then
// P V (V packed in 16-dim panels). Causal blocks compute only the keys up
// to their last query. The head mean sums heads in order 0..H-1, so the
// result does not depend on scheduling.
func attentionGEMM(dst []float32, s *projScratch, qkv []float32, p *AttnProjection, nb, N int, causal bool, threads int) {
	H, hd := p.Heads, p.HeadDim
	W := H * hd
	R := nb * N
	scale := float32(1 / math.Sqrt(float64(hd)))
	n16, hd16 := (N+15)&^15, (hd+15)&^15
	qbN := min(attnQueryBlock, N)
	per := qbN*hd + n16*hd + hd16*N + qbN*N + qbN*hd
	workers := min(threads, nb*H)
	if need := workers * per; len(s.work) < need {
		s.work = make([]float32, need)
	}
	heads := dst // concatenated heads go straight to dst
	if p.MeanHeads() {
		if len(s.heads) < R*W {
			s.heads = make([]float32, R*W)
		}
		heads = s.heads[:R*W]
	}
	parallelFor(nb*H, 1, workers, func(wk, lo, hi int) {
		ws := s.work[wk*per : (wk+1)*per]
		qb, ws := ws[:qbN*hd], ws[qbN*hd:]
		kp, ws := ws[:n16*hd], ws[n16*hd:]
		vp, ws := ws[:hd16*N], ws[hd16*N:]
		sc, ob := ws[:qbN*N], ws[qbN*N:]
		for item := lo; item < hi; item++ {
			img, h := item/H, item%H
			base := img * N
			clear(kp)
			clear(vp)
			for j := 0; j < N; j++ {
				row := qkv[(base+j)*3*W:]
				k, v := row[W+h*hd:W+(h+1)*hd], row[2*W+h*hd:2*W+(h+1)*hd]
				for t := 0; t < hd; t++ {
					kp[(j/16)*hd*16+t*16+j%16] = k[t]
					vp[(t/16)*N*16+j*16+t%16] = v[t]
				}
			}
			for i0 := 0; i0 < N; i0 += qbN {
				i1 := min(i0+qbN, N)
				rows := i1 - i0
				L := N
				if causal {
					L = i1
				}
				for i := i0; i < i1; i++ {
					copy(qb[(i-i0)*hd:(i-i0+1)*hd], qkv[(base+i)*3*W+h*hd:(base+i)*3*W+(h+1)*hd])
				}
				S := sc[:rows*L]
				simd.gemm(S, qb[:rows*hd], hd, L, hd, nil, kp, 0, rows, 0, L, false)
				for r := 0; r < rows; r++ {
					x := S[r*L : (r+1)*L]
					valid := L
					if causal {
						valid = i0 + r + 1
					}
					softmaxRow(x[:valid], scale)
					clear(x[valid:])
				}
				simd.gemm(ob[:rows*hd], S, L, hd, N, nil, vp, 0, rows, 0, hd, false)
				for r := 0; r < rows; r++ {
					copy(heads[(base+i0+r)*W+h*hd:(base+i0+r)*W+(h+1)*hd], ob[r*hd:(r+1)*hd])
				}
			}
		}
	})
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

// softmaxRow replaces x with softmax(x * scale).
func softmaxRow(x []float32, scale float32) {
	mx := float32(math.Inf(-1))
	for i, v := range x {
		v *= scale
		x[i] = v
		mx = max(mx, v)
	}
	for i := range x {
		x[i] -= mx
	}
	expInPlace(x)
	var sum float32
	for _, v := range x {
		sum += v
	}
	inv := 1 / sum
	for i := range x {
		x[i] *= inv
	}
}
