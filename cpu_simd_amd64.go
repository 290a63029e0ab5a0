//go:build goexperiment.simd

package unitok

import (
	"math"
	"unsafe"

	"simd/archsimd"
)

// Vector kernels for the CPU engine (AVX2 + FMA, 8 float32 lanes), built
// with GOEXPERIMENT=simd. The scalar kernels remain the fallback.

func init() {
	if archsimd.X86.AVX2() && archsimd.X86.FMA() {
		simd = simdKernels{enabled: true, argmax: simdArgmax, exp: simdExp, geglu: simdGeGLU, gemm: simdGemm}
	}
}

// simdGemm computes dst[r, c] = bias[c] + sum_k a[r, k] W[c, k]
// (+ dst[r, c]) for rows [r0, r1) and columns [c0, c1), c0 a multiple of
// 16: a is (rows, I) row-major, dst (rows, O), and W is packed in
// 16-column panels (packPanels): panel p starts at p*panelK*16 and holds
// rows k < I of (panelK, 16) (panelK >= I lets a caller use a prefix of
// each panel). 4 rows x 16 columns per register block, k in order, one FMA
// per product, the panel read contiguously.
func simdGemm(dst, a []float32, I, O, panelK int, bias, wt []float32, r0, r1, c0, c1 int, accumulate bool) {
	if I == 0 {
		return
	}
	for c := c0; c < c1; c += 16 {
		panel := wt[(c/16)*panelK*16 : (c/16)*panelK*16+I*16]
		pp := unsafe.Pointer(&panel[0]) // panel has I*16 floats: every k*16+8 load below is in range
		r := r0
		for ; r+4 <= r1; r += 4 {
			a0, a1, a2, a3 := a[r*I:(r+1)*I], a[(r+1)*I:(r+2)*I], a[(r+2)*I:(r+3)*I], a[(r+3)*I:(r+4)*I]
			a1, a2, a3 = a1[:len(a0)], a2[:len(a0)], a3[:len(a0)]
			var s00, s01, s10, s11, s20, s21, s30, s31 archsimd.Float32x8
			// The broadcast is the receiver: the FMA overwrites it, not the
			// panel vectors, which would otherwise be copied and spilled.
			for k := range a0 {
				w0 := archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(pp, k*64)))
				w1 := archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(pp, k*64+32)))
				x := archsimd.BroadcastFloat32x8(a0[k])
				s00, s01 = x.MulAdd(w0, s00), x.MulAdd(w1, s01)
				x = archsimd.BroadcastFloat32x8(a1[k])
				s10, s11 = x.MulAdd(w0, s10), x.MulAdd(w1, s11)
				x = archsimd.BroadcastFloat32x8(a2[k])
				s20, s21 = x.MulAdd(w0, s20), x.MulAdd(w1, s21)
				x = archsimd.BroadcastFloat32x8(a3[k])
				s30, s31 = x.MulAdd(w0, s30), x.MulAdd(w1, s31)
			}
			simdStore(dst[r*O:(r+1)*O], bias, c, c1, accumulate, s00, s01)
			simdStore(dst[(r+1)*O:(r+2)*O], bias, c, c1, accumulate, s10, s11)
			simdStore(dst[(r+2)*O:(r+3)*O], bias, c, c1, accumulate, s20, s21)
			simdStore(dst[(r+3)*O:(r+4)*O], bias, c, c1, accumulate, s30, s31)
		}
		for ; r < r1; r++ {
			a0 := a[r*I : (r+1)*I]
			var s0, s1 archsimd.Float32x8
			for k := range a0 {
				x := archsimd.BroadcastFloat32x8(a0[k])
				s0 = x.MulAdd(archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(pp, k*64))), s0)
				s1 = x.MulAdd(archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(pp, k*64+32))), s1)
			}
			simdStore(dst[r*O:(r+1)*O], bias, c, c1, accumulate, s0, s1)
		}
	}
}

// simdStore writes columns [c, min(c+16, c1)) of one output row from two
// accumulators, adding the bias and, when accumulating, the old value.
func simdStore(row, bias []float32, c, c1 int, accumulate bool, s0, s1 archsimd.Float32x8) {
	var buf [16]float32
	s0.Store((*[8]float32)(buf[:8]))
	s1.Store((*[8]float32)(buf[8:]))
	n := min(16, c1-c)
	out := row[c : c+n]
	for i := range out {
		v := buf[i]
		if bias != nil {
			v += bias[c+i]
		}
		if accumulate {
			v += out[i]
		}
		out[i] = v
	}
}

// simdArgmax scores 8 codewords per step from the transposed codebook qt
// (d, vpad): s = qbias[j:j+8] + sum_t z[t] * qt[t, j:j+8], keeping per-lane
// (best, index) with strict >, then picks the best lane, lowest index on
// ties. Padding codewords have qbias -Inf and never win.
func simdArgmax(z, qt, qbias []float32, vpad, d int) int32 {
	var zb [64]archsimd.Float32x8 // d <= 64: newCPUBackend checks
	for t := 0; t < d; t++ {
		zb[t] = archsimd.BroadcastFloat32x8(z[t])
	}
	best := archsimd.BroadcastFloat32x8(float32(math.Inf(-1)))
	idx := archsimd.BroadcastInt32x8(0)
	lane := archsimd.LoadInt32x8(&[8]int32{0, 1, 2, 3, 4, 5, 6, 7})
	eight := archsimd.BroadcastInt32x8(8)
	if d == 8 {
		// Two blocks of 8 codewords per step, each as two 4-deep FMA chains,
		// so four independent chains hide the FMA latency.
		z0, z1, z2, z3, z4, z5, z6, z7 := zb[0], zb[1], zb[2], zb[3], zb[4], zb[5], zb[6], zb[7]
		j := 0
		for ; j+16 <= vpad; j += 16 {
			a := archsimd.LoadFloat32x8Slice(qbias[j:])
			c := archsimd.LoadFloat32x8Slice(qbias[j+8:])
			var b, e archsimd.Float32x8
			a = archsimd.LoadFloat32x8Slice(qt[j:]).MulAdd(z0, a)
			c = archsimd.LoadFloat32x8Slice(qt[j+8:]).MulAdd(z0, c)
			b = archsimd.LoadFloat32x8Slice(qt[4*vpad+j:]).Mul(z4)
			e = archsimd.LoadFloat32x8Slice(qt[4*vpad+j+8:]).Mul(z4)
			a = archsimd.LoadFloat32x8Slice(qt[vpad+j:]).MulAdd(z1, a)
			c = archsimd.LoadFloat32x8Slice(qt[vpad+j+8:]).MulAdd(z1, c)
			b = archsimd.LoadFloat32x8Slice(qt[5*vpad+j:]).MulAdd(z5, b)
			e = archsimd.LoadFloat32x8Slice(qt[5*vpad+j+8:]).MulAdd(z5, e)
			a = archsimd.LoadFloat32x8Slice(qt[2*vpad+j:]).MulAdd(z2, a)
			c = archsimd.LoadFloat32x8Slice(qt[2*vpad+j+8:]).MulAdd(z2, c)
			b = archsimd.LoadFloat32x8Slice(qt[6*vpad+j:]).MulAdd(z6, b)
			e = archsimd.LoadFloat32x8Slice(qt[6*vpad+j+8:]).MulAdd(z6, e)
			a = archsimd.LoadFloat32x8Slice(qt[3*vpad+j:]).MulAdd(z3, a)
			c = archsimd.LoadFloat32x8Slice(qt[3*vpad+j+8:]).MulAdd(z3, c)
			b = archsimd.LoadFloat32x8Slice(qt[7*vpad+j:]).MulAdd(z7, b)
			e = archsimd.LoadFloat32x8Slice(qt[7*vpad+j+8:]).MulAdd(z7, e)
			s0, s1 := a.Add(b), c.Add(e)
			m := s0.Greater(best)
			best = s0.Merge(best, m)
			idx = lane.Merge(idx, m)
			lane = lane.Add(eight)
			m = s1.Greater(best)
			best = s1.Merge(best, m)
			idx = lane.Merge(idx, m)
			lane = lane.Add(eight)
		}
		for ; j < vpad; j += 8 {
			a := archsimd.LoadFloat32x8Slice(qbias[j:])
			a = archsimd.LoadFloat32x8Slice(qt[j:]).MulAdd(z0, a)
			a = archsimd.LoadFloat32x8Slice(qt[vpad+j:]).MulAdd(z1, a)
			a = archsimd.LoadFloat32x8Slice(qt[2*vpad+j:]).MulAdd(z2, a)
			a = archsimd.LoadFloat32x8Slice(qt[3*vpad+j:]).MulAdd(z3, a)
			b := archsimd.LoadFloat32x8Slice(qt[4*vpad+j:]).Mul(z4)
			b = archsimd.LoadFloat32x8Slice(qt[5*vpad+j:]).MulAdd(z5, b)
			b = archsimd.LoadFloat32x8Slice(qt[6*vpad+j:]).MulAdd(z6, b)
			b = archsimd.LoadFloat32x8Slice(qt[7*vpad+j:]).MulAdd(z7, b)
			s := a.Add(b)
			m := s.Greater(best)
			best = s.Merge(best, m)
			idx = lane.Merge(idx, m)
			lane = lane.Add(eight)
		}
	} else {
		for j := 0; j < vpad; j += 8 {
			s := archsimd.LoadFloat32x8Slice(qbias[j:])
			for t := 0; t < d; t++ {
				s = archsimd.LoadFloat32x8Slice(qt[t*vpad+j:]).MulAdd(zb[t], s)
			}
			m := s.Greater(best)
			best = s.Merge(best, m)
			idx = lane.Merge(idx, m)
			lane = lane.Add(eight)
		}
	}
	var bv [8]float32
	var bi [8]int32
	best.Store(&bv)
	idx.Store(&bi)
	w := 0
	for l := 1; l < 8; l++ {
		if bv[l] > bv[w] || (bv[l] == bv[w] && bi[l] < bi[w]) {
			w = l
		}
	}
	return bi[w]
}

// expVec is exp(v) lane-wise: Cephes' expf (n = round(v log2 e),
// r = v - n ln 2 in two parts, a degree-6 polynomial, then 2^n through the
// exponent bits), within 1 ulp of math.Exp rounded to float32 on [-87, 88];
// arguments are clamped to that range (exp(-87) ~ 1.6e-38).
func expVec(v archsimd.Float32x8) archsimd.Float32x8 {
	v = v.Max(archsimd.BroadcastFloat32x8(-87)).Min(archsimd.BroadcastFloat32x8(88))
	n := v.Mul(archsimd.BroadcastFloat32x8(1.44269504088896341)).RoundToEven()
	r := v.Sub(n.Mul(archsimd.BroadcastFloat32x8(0.693359375))).Sub(n.Mul(archsimd.BroadcastFloat32x8(-2.12194440e-4)))
	p := archsimd.BroadcastFloat32x8(1.9875691500e-4).MulAdd(r, archsimd.BroadcastFloat32x8(1.3981999507e-3))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(8.3334519073e-3))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(4.1665795894e-2))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(1.6666665459e-1))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(5.0000001201e-1))
	p = p.MulAdd(r.Mul(r), r).Add(archsimd.BroadcastFloat32x8(1))
	scale := n.ConvertToInt32().Add(archsimd.BroadcastInt32x8(127)).ShiftAllLeft(23).AsFloat32x8()
	return p.Mul(scale)
}

// simdExp overwrites x[i] with exp(x[i]) (softmax arguments, <= 0).
func simdExp(x []float32) {
	i := 0
	for ; i+8 <= len(x); i += 8 {
		expVec(archsimd.LoadFloat32x8Slice(x[i:])).StoreSlice(x[i:])
	}
	for ; i < len(x); i++ {
		x[i] = float32(math.Exp(float64(x[i])))
	}
}

// simdGeGLU overwrites gate[i] with gelu_tanh(gate[i]) * val[i], using
// 0.5 x (1 + tanh(y)) = x / (1 + exp(-2y)), y = sqrt(2/pi) (x + 0.044715 x^3),
// which has no cancellation for either sign of y.
func simdGeGLU(gate, val []float32) {
	val = val[:len(gate)]
	i := 0
	k0 := archsimd.BroadcastFloat32x8(-2 * 0.7978845608028654)
	k1 := archsimd.BroadcastFloat32x8(0.044715)
	one := archsimd.BroadcastFloat32x8(1)
	for ; i+8 <= len(gate); i += 8 {
		x := archsimd.LoadFloat32x8Slice(gate[i:])
		y := x.Mul(x).Mul(k1).MulAdd(x, x).Mul(k0) // -2 sqrt(2/pi) (x + 0.044715 x^3)
		g := x.Div(expVec(y).Add(one))
		g.Mul(archsimd.LoadFloat32x8Slice(val[i:])).StoreSlice(gate[i:])
	}
	for ; i < len(gate); i++ {
		gate[i] = geluTanh(gate[i]) * val[i]
	}
}
