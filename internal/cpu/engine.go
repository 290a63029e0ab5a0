// Package cpu is the CPU engine of the image path: it implements the op set
// of internal/engine on host float32 NHWC tensors, running every linear
// layer and convolution on internal/cpu/kern's GEMM (1x1 convolutions and
// linear layers directly, kxk convolutions through an im2col tile per
// worker, depthwise convolutions with a direct kernel).
package cpu

import (
	"fmt"
	"math"
	"runtime"

	"github.com/unitok/unitok/internal/cpu/kern"
	"github.com/unitok/unitok/internal/engine"
)

// Engine is the CPU engine. The zero value uses GOMAXPROCS threads.
type Engine struct {
	// Threads bounds the parallelism of every op (<= 0: GOMAXPROCS).
	Threads int

	bufs bufPool // released activations and op scratch, for reuse
}

var _ engine.Engine = (*Engine)(nil)

// New returns a CPU engine using up to threads goroutines per op.
func New(threads int) *Engine { return &Engine{Threads: threads} }

func (e *Engine) threads() int {
	if e.Threads > 0 {
		return e.Threads
	}
	return runtime.GOMAXPROCS(0)
}

// Name is "cpu".
func (e *Engine) Name() string { return "cpu" }

// Tensor is the CPU engine's activation: a host slice in NHWC order.
type Tensor struct {
	S engine.Shape
	D []float32
}

// Shape returns the tensor's shape.
func (t *Tensor) Shape() engine.Shape { return t.S }

func newTensor(s engine.Shape) *Tensor { return &Tensor{S: s, D: make([]float32, s.Elems())} }

func tens(t engine.Tensor) *Tensor {
	c, ok := t.(*Tensor)
	if !ok {
		panic(fmt.Sprintf("cpu engine: tensor %T is not a CPU tensor", t))
	}
	return c
}

// FromHost copies x into a new tensor of shape s.
func (e *Engine) FromHost(x []float32, s engine.Shape) engine.Tensor {
	if len(x) != s.Elems() {
		panic(fmt.Sprintf("cpu engine: FromHost: %d values for shape %+v", len(x), s))
	}
	t := e.tensor(s)
	copy(t.D, x)
	return t
}

// ToHost copies t out.
func (e *Engine) ToHost(t engine.Tensor) []float32 { return append([]float32(nil), tens(t).D...) }

// Reshape views t with shape s (no copy).
func (e *Engine) Reshape(t engine.Tensor, s engine.Shape) engine.Tensor {
	c := tens(t)
	if s.Elems() != c.S.Elems() {
		panic(fmt.Sprintf("cpu engine: Reshape %+v to %+v", c.S, s))
	}
	return &Tensor{S: s, D: c.D}
}

// linear is an uploaded Linear (or 1x1 / im2col'd dense convolution).
type linear struct {
	p    *kern.Packed
	bias []float32
}

// conv is an uploaded convolution, laid out when it is uploaded for the
// calls it can get: a dense kxk convolution as its im2col GEMM weight (and,
// with few outputs, its tap-channels weight), a depthwise one per tap, an
// Upsample2d convolution (UpConvWeight) as its four sub-pixel phases.
type conv struct {
	out, in, kh, kw, groups int
	dense                   *linear   // groups == 1: W as (out, kh*kw*in), taps outer, channels inner
	dw                      []float32 // depthwise: (kh*kw, C), channels inner
	bias                    []float32
	spatial                 bool // dense with a kernel larger than 1x1
	// tapCh is the (32, in) weight of tapChannelsConv, row t*out+o = tap t
	// of output o, zero rows past kh*kw*out, packed for kern.Gemm; tapChT
	// the same (in, 32) row-major for kern.Tile. nil unless
	// kh*kw*out <= 32.
	tapCh  *kern.Packed
	tapChT []float32
	// phases are the sub-pixel weights of UpConv3x3 (UpConvWeight only):
	// for output phase (py, px), (out, 4*in) over the 2x2 taps (dy, dx) of
	// the low-resolution input, each the sum of the 3x3 taps that land on
	// the same input pixel.
	phases [4]*kern.Packed
}

// Linear packs w (out, in) for the GEMM.
func (e *Engine) Linear(w, bias []float32, out, in int) engine.Weight {
	if len(w) != out*in || (bias != nil && len(bias) != out) {
		panic(fmt.Sprintf("cpu engine: Linear(%d, %d) with %d weights, %d biases", out, in, len(w), len(bias)))
	}
	return &linear{p: kern.Pack(w, out, in), bias: cloneOrNil(bias)}
}

// Conv lays w (OIHW) out as an im2col GEMM weight, or per tap for depthwise.
func (e *Engine) Conv(w, bias []float32, out, in, kh, kw, groups int) engine.Weight {
	if groups <= 0 || in%groups != 0 || out%groups != 0 || len(w) != out*(in/groups)*kh*kw || (bias != nil && len(bias) != out) {
		panic(fmt.Sprintf("cpu engine: Conv(out %d, in %d, %dx%d, groups %d) with %d weights", out, in, kh, kw, groups, len(w)))
	}
	c := &conv{out: out, in: in, kh: kh, kw: kw, groups: groups, bias: cloneOrNil(bias)}
	switch {
	case groups == 1:
		K := kh * kw * in
		r := make([]float32, out*K)
		for o := 0; o < out; o++ {
			for ci := 0; ci < in; ci++ {
				for t := 0; t < kh*kw; t++ {
					r[o*K+t*in+ci] = w[(o*in+ci)*kh*kw+t]
				}
			}
		}
		c.dense = &linear{p: kern.Pack(r, out, K), bias: c.bias}
		if c.spatial = kh*kw > 1; c.spatial && kh*kw*out <= tapChannelsMax {
			c.tapCh, c.tapChT = tapChannelsWeight(r, out, in, kh*kw)
		}
	case groups == in && out == in:
		c.dw = make([]float32, kh*kw*in)
		for ch := 0; ch < in; ch++ {
			for t := 0; t < kh*kw; t++ {
				c.dw[t*in+ch] = w[ch*kh*kw+t]
			}
		}
	default:
		panic(fmt.Sprintf("cpu engine: grouped convolution with %d groups of %d channels is not implemented (dense and depthwise only)", groups, in/groups))
	}
	return c
}

// UpConvWeight lays out a 3x3 convolution for UpConv3x3 as its four
// sub-pixel phases (upConvPhases); Conv2d does not take it.
func (e *Engine) UpConvWeight(w, bias []float32, out, in int) engine.Weight {
	if len(w) != out*in*9 || (bias != nil && len(bias) != out) {
		panic(fmt.Sprintf("cpu engine: UpConvWeight(out %d, in %d) with %d weights", out, in, len(w)))
	}
	c := &conv{out: out, in: in, kh: 3, kw: 3, groups: 1, bias: cloneOrNil(bias)}
	c.phases = upConvPhases(w, out, in)
	return c
}

// Vector keeps a copy of v.
func (e *Engine) Vector(v []float32) engine.Weight { return vector(append([]float32(nil), v...)) }

type vector []float32

func cloneOrNil(v []float32) []float32 {
	if v == nil {
		return nil
	}
	return append([]float32(nil), v...)
}

func weightAs[T any](w engine.Weight, what string) T {
	x, ok := w.(T)
	if !ok {
		panic(fmt.Sprintf("cpu engine: %s: weight %T has the wrong kind", what, w))
	}
	return x
}

// MatMul: y = x W^T + b over channels, optionally accumulated into acc.
func (e *Engine) MatMul(x engine.Tensor, w engine.Weight, acc engine.Tensor) engine.Tensor {
	xt, l := tens(x), weightAs[*linear](w, "MatMul")
	if xt.S.C != l.p.In {
		panic(fmt.Sprintf("cpu engine: MatMul: input has %d channels, weight wants %d", xt.S.C, l.p.In))
	}
	s := xt.S
	s.C = l.p.Out
	var dst *Tensor
	if acc != nil {
		dst = tens(acc)
		if dst.S != s {
			panic(fmt.Sprintf("cpu engine: MatMul: accumulator %+v, result %+v", dst.S, s))
		}
	} else {
		dst = e.tensor(s)
	}
	kern.Gemm(dst.D, s.C, xt.D, xt.S.C, s.Rows(), l.p, l.bias, acc != nil, e.threads())
	return dst
}

// LayerNorm over channels (kern.LayerNorm per position).
func (e *Engine) LayerNorm(x engine.Tensor, weight, bias engine.Weight, eps float32) engine.Tensor {
	xt := tens(x)
	g, b := weightAs[vector](weight, "LayerNorm"), weightAs[vector](bias, "LayerNorm")
	C := xt.S.C
	if len(g) != C || len(b) != C {
		panic(fmt.Sprintf("cpu engine: LayerNorm over %d channels with %d/%d parameters", C, len(g), len(b)))
	}
	out := e.tensor(xt.S) // every row written
	kern.ParallelFor(xt.S.Rows(), max(1, 16384/max(C, 1)), e.threads(), func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			kern.LayerNorm(out.D[r*C:(r+1)*C], xt.D[r*C:(r+1)*C], g, b, eps)
		}
	})
	return out
}

// GELU (erf) in place (kern.GeluErf).
func (e *Engine) GELU(x engine.Tensor) engine.Tensor {
	xt := tens(x)
	kern.ParallelFor(len(xt.D), 1<<14, e.threads(), func(_, lo, hi int) {
		kern.GeluErf(xt.D[lo:hi])
	})
	return x
}

// GeGLU: gelu_tanh(gate) * value (kern.GeGLU), into a new tensor: each
// piece of gate is copied to the output while it is in cache and
// overwritten there, so neither input is modified.
func (e *Engine) GeGLU(gate, value engine.Tensor) engine.Tensor {
	g, v := tens(gate), tens(value)
	if g.S != v.S {
		panic(fmt.Sprintf("cpu engine: GeGLU shapes %+v and %+v", g.S, v.S))
	}
	out := e.tensor(g.S) // every value written
	kern.ParallelFor(len(g.D), 1<<14, e.threads(), func(_, lo, hi int) {
		for c0 := lo; c0 < hi; c0 += 2048 {
			c1 := min(c0+2048, hi)
			copy(out.D[c0:c1], g.D[c0:c1])
			kern.GeGLU(out.D[c0:c1], v.D[c0:c1])
		}
	})
	return out
}

// Upsample2x: nearest neighbour.
func (e *Engine) Upsample2x(x engine.Tensor) engine.Tensor {
	xt := tens(x)
	s := xt.S
	o := engine.Shape{B: s.B, H: 2 * s.H, W: 2 * s.W, C: s.C}
	out := e.tensor(o)
	C := s.C
	kern.ParallelFor(o.B*o.H, 8, e.threads(), func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, oy := r/o.H, r%o.H
			src := xt.D[(b*s.H+oy/2)*s.W*C:]
			dst := out.D[r*o.W*C:]
			for ox := 0; ox < o.W; ox++ {
				copy(dst[ox*C:(ox+1)*C], src[(ox/2)*C:(ox/2+1)*C])
			}
		}
	})
	return out
}

// AvgPool3x3s2: kernel 3, stride 2, padding 1, count_include_pad=False.
func (e *Engine) AvgPool3x3s2(x engine.Tensor) engine.Tensor {
	xt := tens(x)
	s := xt.S
	o := engine.Shape{B: s.B, H: (s.H-1)/2 + 1, W: (s.W-1)/2 + 1, C: s.C}
	out := newTensor(o)
	C := s.C
	kern.ParallelFor(o.B*o.H, 4, e.threads(), func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, oy := r/o.H, r%o.H
			for ox := 0; ox < o.W; ox++ {
				dst := out.D[(r*o.W+ox)*C : (r*o.W+ox+1)*C]
				n := 0
				for iy := 2*oy - 1; iy <= 2*oy+1; iy++ {
					if iy < 0 || iy >= s.H {
						continue
					}
					for ix := 2*ox - 1; ix <= 2*ox+1; ix++ {
						if ix < 0 || ix >= s.W {
							continue
						}
						src := xt.D[((b*s.H+iy)*s.W+ix)*C:]
						for c := range dst {
							dst[c] += src[c]
						}
						n++
					}
				}
				inv := 1 / float32(n)
				for c := range dst {
					dst[c] *= inv
				}
			}
		}
	})
	return out
}

// Add: dst += x.
func (e *Engine) Add(dst, x engine.Tensor) engine.Tensor {
	d, s := tens(dst), tens(x)
	if d.S != s.S {
		panic(fmt.Sprintf("cpu engine: Add shapes %+v and %+v", d.S, s.S))
	}
	kern.ParallelFor(len(d.D), 1<<15, e.threads(), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			d.D[i] += s.D[i]
		}
	})
	return dst
}

// Clamp in place.
func (e *Engine) Clamp(x engine.Tensor, lo, hi float32) engine.Tensor {
	xt := tens(x)
	for i, v := range xt.D {
		xt.D[i] = min(max(v, lo), hi)
	}
	return x
}

// MeanPositions: (B, H, W, C) -> (B, 1, 1, C), float64 sums.
func (e *Engine) MeanPositions(x engine.Tensor) engine.Tensor {
	xt := tens(x)
	s := xt.S
	out := newTensor(engine.Shape{B: s.B, H: 1, W: 1, C: s.C})
	n := s.H * s.W
	acc := make([]float64, s.C)
	for b := 0; b < s.B; b++ {
		clear(acc)
		for p := 0; p < n; p++ {
			row := xt.D[(b*n+p)*s.C:]
			for c := range acc {
				acc[c] += float64(row[c])
			}
		}
		for c, v := range acc {
			out.D[b*s.C+c] = float32(v / float64(n))
		}
	}
	return out
}

// L2Normalize in place: v / max(|v|, 1e-12) per position.
func (e *Engine) L2Normalize(x engine.Tensor) engine.Tensor {
	xt := tens(x)
	C := xt.S.C
	for r := 0; r < xt.S.Rows(); r++ {
		row := xt.D[r*C : (r+1)*C]
		var q float64
		for _, v := range row {
			q += float64(v) * float64(v)
		}
		n := float32(max(math.Sqrt(q), 1e-12))
		for i := range row {
			row[i] /= n
		}
	}
	return x
}
