//go:build goexperiment.simd

package unitok

import (
	"math"

	"simd/archsimd"
)

// The archsimd codebook search (AVX2 + FMA, 8 float32 lanes), built with
// GOEXPERIMENT=simd. GEMM, softmax and GeGLU moved to internal/cpu/kern
// (Go assembly, every build).

func init() {
	if archsimd.X86.AVX2() && archsimd.X86.FMA() {
		simd = simdKernels{enabled: true, argmax: simdArgmax}
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
