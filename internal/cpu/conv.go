package cpu

import (
	"fmt"

	"github.com/unitok/unitok/internal/cpu/kern"
	"github.com/unitok/unitok/internal/engine"
)

// im2colRows is how many output positions one worker gathers and multiplies
// at a time: the gathered tile (rows x kh*kw*C) stays in cache.
const im2colRows = 64

// Conv2d: zero-padded 2-D convolution. Dense convolutions run on the GEMM
// (1x1 stride 1 directly on the NHWC rows, others through an im2col tile per
// worker); depthwise ones on a direct kernel.
func (e *Engine) Conv2d(x engine.Tensor, w engine.Weight, stride, pad int) engine.Tensor {
	xt, c := tens(x), weightAs[*conv](w, "Conv2d")
	s := xt.S
	if s.C != c.in {
		panic(fmt.Sprintf("cpu engine: Conv2d: input has %d channels, weight wants %d", s.C, c.in))
	}
	o := engine.Shape{B: s.B, H: (s.H+2*pad-c.kh)/stride + 1, W: (s.W+2*pad-c.kw)/stride + 1, C: c.out}
	if o.H <= 0 || o.W <= 0 {
		panic(fmt.Sprintf("cpu engine: Conv2d: %dx%d input too small for a %dx%d kernel", s.H, s.W, c.kh, c.kw))
	}
	out := newTensor(o)
	if c.dw != nil {
		e.depthwise(out, xt, c, stride, pad)
		return out
	}
	if c.kh == 1 && c.kw == 1 && stride == 1 && pad == 0 {
		kern.Gemm(out.D, o.C, xt.D, s.C, o.Rows(), c.dense.p, c.bias, false, e.threads())
		return out
	}
	if stride == 1 && s.C >= implicitMinChannels && c.spatial {
		e.implicitConv(out, xt, c, pad)
		return out
	}
	K := c.kh * c.kw * s.C
	rows := o.Rows()
	threads := e.threads()
	scratch := make([][]float32, threads)
	kern.ParallelFor((rows+im2colRows-1)/im2colRows, 1, threads, func(wk, lo, hi int) {
		if scratch[wk] == nil {
			scratch[wk] = make([]float32, im2colRows*K)
		}
		col := scratch[wk]
		for blk := lo; blk < hi; blk++ {
			r0 := blk * im2colRows
			n := min(im2colRows, rows-r0)
			for i := 0; i < n; i++ {
				im2colRow(col[i*K:(i+1)*K], xt, r0+i, o, c.kh, c.kw, stride, pad)
			}
			kern.Gemm(out.D[r0*o.C:], o.C, col, K, n, c.dense.p, c.bias, false, 1)
		}
	})
	return out
}

// im2colRow gathers the kh x kw x C input patch of output position r
// (flattened b, oy, ox) into dst, taps outer and channels inner, zeros for
// padding.
func im2colRow(dst []float32, x *Tensor, r int, o engine.Shape, kh, kw, stride, pad int) {
	s := x.S
	C := s.C
	ox := r % o.W
	oy := (r / o.W) % o.H
	b := r / (o.W * o.H)
	for ky := 0; ky < kh; ky++ {
		iy := oy*stride - pad + ky
		for kx := 0; kx < kw; kx++ {
			ix := ox*stride - pad + kx
			d := dst[(ky*kw+kx)*C : (ky*kw+kx+1)*C]
			if iy < 0 || iy >= s.H || ix < 0 || ix >= s.W {
				clear(d)
				continue
			}
			copy(d, x.D[((b*s.H+iy)*s.W+ix)*C:])
		}
	}
}

// depthwise is a direct kxk depthwise convolution (groups == C), channels
// innermost so the inner loop streams contiguous memory.
func (e *Engine) depthwise(out, x *Tensor, c *conv, stride, pad int) {
	s, o := x.S, out.S
	C := s.C
	kern.ParallelFor(o.B*o.H, 1, e.threads(), func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, oy := r/o.H, r%o.H
			for ox := 0; ox < o.W; ox++ {
				dst := out.D[(r*o.W+ox)*C : (r*o.W+ox+1)*C]
				if c.bias != nil {
					copy(dst, c.bias)
				}
				for ky := 0; ky < c.kh; ky++ {
					iy := oy*stride - pad + ky
					if iy < 0 || iy >= s.H {
						continue
					}
					for kx := 0; kx < c.kw; kx++ {
						ix := ox*stride - pad + kx
						if ix < 0 || ix >= s.W {
							continue
						}
						src := x.D[((b*s.H+iy)*s.W+ix)*C : ((b*s.H+iy)*s.W+ix+1)*C]
						wt := c.dw[(ky*c.kw+kx)*C : (ky*c.kw+kx+1)*C]
						for i, v := range src {
							dst[i] += v * wt[i]
						}
					}
				}
			}
		}
	})
}

// implicitMinChannels is the input width from which stride-1 convolutions
// run as one GEMM per tap (below it, a tap's K is too short to pay).
var implicitMinChannels = 16

// implicitConv runs a stride-1 kxk convolution as kh*kw accumulating GEMMs
// over a zero-padded copy of the input, with no im2col: in the padded
// layout (B, H+2p, W+2p, C), the input of output position q (in the same
// padded numbering) for tap (ky, kx) is row q + ky*Wp + kx, so each tap is
// a single GEMM over all positions with row stride C. Rows that land in the
// padding compute garbage that is not copied out.
func (e *Engine) implicitConv(out, x *Tensor, c *conv, pad int) {
	c.tapsOnce.Do(func() {
		K := c.kh * c.kw * c.in
		for t := 0; t < c.kh*c.kw; t++ {
			w := make([]float32, c.out*c.in)
			for o := 0; o < c.out; o++ {
				copy(w[o*c.in:(o+1)*c.in], c.raw[o*K+t*c.in:])
			}
			c.taps = append(c.taps, kern.Pack(w, c.out, c.in))
		}
		c.raw = nil
	})
	s, o := x.S, out.S
	C := s.C
	Hp, Wp := s.H+2*pad, s.W+2*pad
	xp := make([]float32, s.B*Hp*Wp*C)
	threads := e.threads()
	kern.ParallelFor(s.B*s.H, 8, threads, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, y := r/s.H, r%s.H
			copy(xp[((b*Hp+y+pad)*Wp+pad)*C:], x.D[(b*s.H+y)*s.W*C:(b*s.H+y+1)*s.W*C])
		}
	})
	// Output rows in padded numbering; the last valid one is
	// (B-1, H-1, W-1) and the largest tap offset is (kh-1)*Wp + kw-1.
	R := (s.B-1)*Hp*Wp + (o.H-1)*Wp + o.W
	yb := make([]float32, R*o.C)
	for t, w := range c.taps {
		ky, kx := t/c.kw, t%c.kw
		off := (ky*Wp + kx) * C
		if t == 0 {
			kern.Gemm(yb, o.C, xp[off:], C, R, w, c.bias, false, threads)
		} else {
			kern.Gemm(yb, o.C, xp[off:], C, R, w, nil, true, threads)
		}
	}
	kern.ParallelFor(o.B*o.H, 8, threads, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, y := r/o.H, r%o.H
			copy(out.D[r*o.W*o.C:(r+1)*o.W*o.C], yb[((b*Hp+y)*Wp)*o.C:])
		}
	})
}
