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
	if c.dense == nil && c.dw == nil {
		panic("cpu engine: Conv2d: weight from UpConvWeight (UpConv3x3 only)")
	}
	out := e.tensor(o) // every path below writes every value
	if c.dw != nil {
		e.depthwise(out, xt, c, stride, pad)
		return out
	}
	if c.kh == 1 && c.kw == 1 && stride == 1 && pad == 0 {
		kern.Gemm(out.D, o.C, xt.D, s.C, o.Rows(), c.dense.p, c.bias, false, e.threads())
		return out
	}
	if stride == 1 && c.tapCh != nil {
		e.tapChannelsConv(out, xt, c, pad)
		return out
	}
	if stride == 1 && s.C >= implicitMinChannels && c.spatial {
		e.implicitConv(out, xt, c, pad)
		return out
	}
	K := c.kh * c.kw * s.C
	rows := o.Rows()
	threads := e.threads()
	dense := c.dense
	scratch := make([][]float32, threads)
	defer func() {
		for _, b := range scratch {
			e.recycle(b)
		}
	}()
	kern.ParallelFor((rows+im2colRows-1)/im2colRows, 1, threads, func(wk, lo, hi int) {
		if scratch[wk] == nil {
			scratch[wk] = e.buf(im2colRows * K)
		}
		col := scratch[wk]
		for blk := lo; blk < hi; blk++ {
			r0 := blk * im2colRows
			n := min(im2colRows, rows-r0)
			for i := 0; i < n; i++ {
				im2colRow(col[i*K:(i+1)*K], xt, r0+i, o, c.kh, c.kw, stride, pad)
			}
			kern.Gemm(out.D[r0*o.C:], o.C, col, K, n, dense.p, c.bias, false, 1)
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
// innermost so the inner loop streams contiguous memory. 3x3 kernels run
// on kern.Depthwise3x3Row over a zero-padded copy of the input, one output
// row at a time.
func (e *Engine) depthwise(out, x *Tensor, c *conv, stride, pad int) {
	s, o := x.S, out.S
	C := s.C
	if c.kh == 3 && c.kw == 3 {
		e.depthwise3x3(out, x, c, stride, pad)
		return
	}
	kern.ParallelFor(o.B*o.H, 1, e.threads(), func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, oy := r/o.H, r%o.H
			for ox := 0; ox < o.W; ox++ {
				dst := out.D[(r*o.W+ox)*C : (r*o.W+ox+1)*C]
				if c.bias != nil {
					copy(dst, c.bias)
				} else {
					clear(dst)
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

// dwSlab is how many channels depthwise3x3 runs at a time: three input
// rows of a slab stay in L2 while consecutive output rows reuse them.
const dwSlab = 128

// depthwise3x3 is a 3x3 depthwise convolution on kern.Depthwise3x3Row,
// with no padded copy of the input: rows above and below the map read a
// zero row, and the outputs whose taps leave the map at the sides (one or
// two per row) go through a small zero-padded patch. Each worker takes a
// few consecutive output rows and runs them one channel slab at a time.
func (e *Engine) depthwise3x3(out, x *Tensor, c *conv, stride, pad int) {
	s, o := x.S, out.S
	C := s.C
	slab := C
	if C > dwSlab && C%8 == 0 {
		slab = dwSlab
	}
	zero := e.zbuf((s.W + 3) * C) // pooled: a fresh 335 KB (128x128x640) costs page faults every call
	defer e.recycle(zero)
	// Outputs [ox0, ox1) read only positions inside the row.
	ox0 := min((pad+stride-1)/stride, o.W)
	ox1 := ox0
	if last := s.W - 3 + pad; last >= 0 {
		ox1 = max(ox0, min(o.W, last/stride+1))
	}
	row := func(b, oy, ky int) []float32 {
		iy := oy*stride - pad + ky
		if iy < 0 || iy >= s.H {
			return zero
		}
		return x.D[((b*s.H+iy)*s.W+ox0*stride-pad)*C:]
	}
	kern.ParallelFor(o.B*o.H, 4, e.threads(), func(_, lo, hi int) {
		for j0 := 0; j0 < C && ox1 > ox0; j0 += slab {
			cs := min(slab, C-j0)
			var bias []float32
			if c.bias != nil {
				bias = c.bias[j0:]
			}
			for r := lo; r < hi; r++ {
				b, oy := r/o.H, r%o.H
				kern.Depthwise3x3Row(out.D[(r*o.W+ox0)*C+j0:], row(b, oy, 0)[j0:], row(b, oy, 1)[j0:], row(b, oy, 2)[j0:],
					c.dw[j0:], bias, cs, C, ox1-ox0, stride)
			}
		}
		patch := e.buf(9 * C) // every tap copied or cleared before use
		defer e.recycle(patch)
		for r := lo; r < hi; r++ {
			b, oy := r/o.H, r%o.H
			for ox := 0; ox < o.W; ox++ {
				if ox == ox0 && ox1 > ox0 {
					ox = ox1 - 1
					continue
				}
				for ky := 0; ky < 3; ky++ {
					for kx := 0; kx < 3; kx++ {
						d := patch[(ky*3+kx)*C : (ky*3+kx+1)*C]
						iy, ix := oy*stride-pad+ky, ox*stride-pad+kx
						if iy < 0 || iy >= s.H || ix < 0 || ix >= s.W {
							clear(d)
						} else {
							copy(d, x.D[((b*s.H+iy)*s.W+ix)*C:])
						}
					}
				}
				kern.Depthwise3x3Row(out.D[(r*o.W+ox)*C:], patch[:3*C], patch[3*C:6*C], patch[6*C:], c.dw, c.bias, C, C, 1, 1)
			}
		}
	})
}

// implicitMinChannels is the input width from which stride-1 convolutions
// run as one GEMM per tap (below it, a tap's K is too short to pay).
var implicitMinChannels = 16

// implicitConv runs a stride-1 kxk convolution as one implicit GEMM over
// a zero-padded copy of the input, with no im2col: in the padded layout
// (B, H+2p, W+2p, C), the input of output position q (in the same padded
// numbering) for tap (ky, kx) is row q + ky*Wp + kx, so kern.GemmTaps reads
// every tap of every position straight into its packed blocks (the weight
// is the im2col one, taps outer). Rows that land in the padding compute
// garbage that is not copied out.
func (e *Engine) implicitConv(out, x *Tensor, c *conv, pad int) {
	s, o := x.S, out.S
	C := s.C
	Hp, Wp := s.H+2*pad, s.W+2*pad
	threads := e.threads()
	xp := e.padded(x, pad, threads)
	taps := make([]int, 0, c.kh*c.kw)
	for ky := 0; ky < c.kh; ky++ {
		for kx := 0; kx < c.kw; kx++ {
			taps = append(taps, (ky*Wp+kx)*C)
		}
	}
	// Output rows in padded numbering; the last valid one is
	// (B-1, H-1, W-1) and the largest tap offset is (kh-1)*Wp + kw-1.
	R := (s.B-1)*Hp*Wp + (o.H-1)*Wp + o.W
	yb := e.buf(R * o.C)
	kern.GemmTaps(yb, o.C, xp, C, R, taps, C, c.dense.p, c.bias, false, threads)
	kern.ParallelFor(o.B*o.H, 8, threads, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, y := r/o.H, r%o.H
			copy(out.D[r*o.W*o.C:(r+1)*o.W*o.C], yb[((b*Hp+y)*Wp)*o.C:])
		}
	})
	e.recycle(xp)
	e.recycle(yb)
}

// tapChannelsMax bounds out*kh*kw for tapChannelsConv: one packed panel.
const tapChannelsMax = 32

// tapChannelsWeight lays the im2col weight r (out, T*in) out as
// tapChannelsConv's (32, in) weight: row t*out+o = tap t of output o, zero
// rows past T*out (so every GEMM tile is a full one); packed for kern.Gemm,
// and transposed, (in, 32) row-major, for kern.Tile.
func tapChannelsWeight(r []float32, out, in, T int) (*kern.Packed, []float32) {
	w := make([]float32, tapChannelsMax*in)
	for t := 0; t < T; t++ {
		for o := 0; o < out; o++ {
			copy(w[(t*out+o)*in:(t*out+o+1)*in], r[o*T*in+t*in:])
		}
	}
	wt := make([]float32, in*tapChannelsMax)
	for j := 0; j < tapChannelsMax; j++ {
		for c := 0; c < in; c++ {
			wt[c*tapChannelsMax+j] = w[j*in+c]
		}
	}
	return kern.Pack(w, tapChannelsMax, in), wt
}

// tapChannelsConv is a stride-1 kxk convolution with few output channels
// (the decoder's last 3x3 convolution to RGB): a GEMM whose output columns
// are every (tap, channel) pair, (kh*kw*out) wide, over the input pixels,
// then each output sums its taps' columns at the shifted positions (taps
// that fall in the padding add nothing). The GEMM fills one 32-wide panel
// instead of using out/32 of it per tap, and runs on kern.Tile where it is
// fast: with 32 columns, packing A would cost more than the product (the
// padded copy and packed GEMM it replaces took 36 ms at 256x256x160 -> 3,
// on 2 threads).
func (e *Engine) tapChannelsConv(out, x *Tensor, c *conv, pad int) {
	s, o := x.S, out.S
	threads := e.threads()
	TO := tapChannelsMax // yb row stride; columns past kh*kw*out are zero
	R := s.B * s.H * s.W
	yb := e.buf(R * TO)
	if kern.TileFast() {
		const rowsPerPiece = 32 * kern.TileRows
		kern.ParallelFor((R+rowsPerPiece-1)/rowsPerPiece, 1, threads, func(_, lo, hi int) {
			for r0 := lo * rowsPerPiece; r0 < min(hi*rowsPerPiece, R); r0 += kern.TileRows {
				n := min(kern.TileRows, R-r0)
				kern.Tile(yb[r0*TO:], TO, x.D[r0*s.C:], s.C, c.tapChT, TO, n, s.C, TO)
			}
		})
	} else {
		kern.Gemm(yb, TO, x.D, s.C, R, c.tapCh, nil, false, threads)
	}
	kern.ParallelFor(o.B*o.H, 8, threads, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, y := r/o.H, r%o.H
			for xo := 0; xo < o.W; xo++ {
				dst := out.D[(r*o.W+xo)*o.C : (r*o.W+xo+1)*o.C]
				if c.bias != nil {
					copy(dst, c.bias)
				} else {
					clear(dst)
				}
				for ky := 0; ky < c.kh; ky++ {
					iy := y + ky - pad
					if iy < 0 || iy >= s.H {
						continue
					}
					for kx := 0; kx < c.kw; kx++ {
						ix := xo + kx - pad
						if ix < 0 || ix >= s.W {
							continue
						}
						t := ky*c.kw + kx
						src := yb[((b*s.H+iy)*s.W+ix)*TO+t*o.C:]
						for i := range dst {
							dst[i] += src[i]
						}
					}
				}
			}
		}
	})
	e.recycle(yb)
}

// padded returns x zero-padded by pad on every side, (B, H+2p, W+2p, C),
// in a pooled buffer the caller recycles.
func (e *Engine) padded(x *Tensor, pad, threads int) []float32 {
	s := x.S
	C := s.C
	Hp, Wp := s.H+2*pad, s.W+2*pad
	xp := e.zbuf(s.B * Hp * Wp * C)
	kern.ParallelFor(s.B*s.H, 8, threads, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			b, y := r/s.H, r%s.H
			copy(xp[((b*Hp+y+pad)*Wp+pad)*C:], x.D[(b*s.H+y)*s.W*C:(b*s.H+y+1)*s.W*C])
		}
	})
	return xp
}

// UpConv3x3 computes Conv2d(Upsample2x(x), w, 1, 1) as four sub-pixel 2x2
// convolutions of x. Output row 2a+py reads upsampled rows 2a+py-1..2a+py+1,
// which are input rows a-1, a, a (py = 0) or a, a, a+1 (py = 1): so phase
// (py, px) is a 2x2 convolution over input rows a+py-1, a+py and columns
// b+px-1, b+px, whose taps are sums of the 3x3 taps (zero padding maps to
// zero padding). Each phase is one implicit GEMM (kern.GemmTaps) of its 4
// taps over the padded input, as in implicitConv: 4 GEMMs at the input
// resolution instead of one at twice it (4/9 of the multiply-adds). Narrow inputs fall back to upsample +
// convolution.
func (e *Engine) UpConv3x3(x engine.Tensor, w engine.Weight) engine.Tensor {
	xt, c := tens(x), weightAs[*conv](w, "UpConv3x3")
	s := xt.S
	if c.phases[0] == nil { // a Conv weight: upsample, then convolve
		if c.dw != nil || c.kh != 3 || c.kw != 3 {
			panic("cpu engine: UpConv3x3 wants a dense 3x3 weight")
		}
		u := e.Upsample2x(x)
		y := e.Conv2d(u, w, 1, 1)
		e.Release(u)
		return y
	}
	if s.C != c.in {
		panic(fmt.Sprintf("cpu engine: UpConv3x3: input has %d channels, weight wants %d", s.C, c.in))
	}
	threads := e.threads()
	C, Co := s.C, c.out
	Hp, Wp := s.H+2, s.W+2
	xp := e.padded(xt, 1, threads)
	o := engine.Shape{B: s.B, H: 2 * s.H, W: 2 * s.W, C: Co}
	out := e.tensor(o) // the four phases write every value
	// Output (b, a, col) of a phase is row q = (b*Hp + a)*Wp + col; its tap
	// (dy, dx) reads padded input row q + (py+dy)*Wp + px+dx.
	R := (s.B-1)*Hp*Wp + (s.H-1)*Wp + s.W
	yb := e.buf(R * Co)
	for py := 0; py < 2; py++ {
		for px := 0; px < 2; px++ {
			taps := []int{(py*Wp + px) * C, (py*Wp + px + 1) * C, ((py+1)*Wp + px) * C, ((py+1)*Wp + px + 1) * C}
			kern.GemmTaps(yb, Co, xp, C, R, taps, C, c.phases[py*2+px], c.bias, false, threads)
			kern.ParallelFor(s.B*s.H, 8, threads, func(_, lo, hi int) {
				for r := lo; r < hi; r++ {
					b, a := r/s.H, r%s.H
					src := yb[((b*Hp+a)*Wp)*Co:]
					dst := out.D[((b*o.H+2*a+py)*o.W+px)*Co:]
					for col := 0; col < s.W; col++ {
						copy(dst[2*col*Co:2*col*Co+Co], src[col*Co:(col+1)*Co])
					}
				}
			})
		}
	}
	e.recycle(xp)
	e.recycle(yb)
	return out
}

// upConvPhases lays the 3x3 weight w (OIHW) out as UpConv3x3's four
// sub-pixel phases, each (out, 4*in) with the 2x2 taps (dy, dx) outer as
// kern.GemmTaps reads them.
func upConvPhases(w []float32, out, in int) [4]*kern.Packed {
	// rowsOf[p][d]: the 3x3 kernel rows (or columns) that tap d of phase
	// p sums.
	rowsOf := [2][2][]int{{{0}, {1, 2}}, {{0, 1}, {2}}}
	var phases [4]*kern.Packed
	m := make([]float32, out*4*in)
	for py := 0; py < 2; py++ {
		for px := 0; px < 2; px++ {
			clear(m)
			for dy := 0; dy < 2; dy++ {
				for dx := 0; dx < 2; dx++ {
					for _, ky := range rowsOf[py][dy] {
						for _, kx := range rowsOf[px][dx] {
							t := ky*3 + kx
							for o := 0; o < out; o++ {
								dst := m[o*4*in+(dy*2+dx)*in:][:in]
								for ci := range dst {
									dst[ci] += w[(o*in+ci)*9+t]
								}
							}
						}
					}
				}
			}
			phases[py*2+px] = kern.Pack(m, out, 4*in)
		}
	}
	return phases
}
