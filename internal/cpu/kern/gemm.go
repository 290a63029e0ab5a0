// Package kern holds the CPU engine's compute kernels: the GEMM that every
// linear layer, convolution (by im2col) and attention block of the CPU engine
// runs on. The API here is the contract; the implementation behind it is
// chosen once at start-up (assembly where the CPU has it, pure Go otherwise).
package kern

import (
	"sync"
	"sync/atomic"
)

// Packed is a weight matrix W (Out x In, PyTorch's nn.Linear row-major
// layout) laid out once for Gemm. It is immutable and safe to share.
type Packed struct {
	Out, In int
	w       []float32 // row-major (Out, In); the reference layout
}

// Pack lays out w, an (out, in) row-major matrix, for Gemm. w is copied.
func Pack(w []float32, out, in int) *Packed {
	if len(w) < out*in {
		panic("kern.Pack: weight shorter than out*in")
	}
	return &Packed{Out: out, In: in, w: append([]float32(nil), w[:out*in]...)}
}

// Gemm computes, for r in [0, R) and o in [0, w.Out):
//
//	dst[r*ldd+o] = sum_k a[r*lda+k] * W[o, k] + bias[o] (+ dst[r*ldd+o] when accumulate)
//
// a is (R, w.In) with row stride lda >= w.In; dst is (R, w.Out) with row
// stride ldd >= w.Out; bias may be nil. Work is split over up to threads
// goroutines (threads <= 1: the calling goroutine only). Rows of dst are
// written by exactly one worker each, so the result is deterministic.
func Gemm(dst []float32, ldd int, a []float32, lda int, R int, w *Packed, bias []float32, accumulate bool, threads int) {
	gemmGeneric(dst, ldd, a, lda, R, w, bias, accumulate, threads)
}

func gemmGeneric(dst []float32, ldd int, a []float32, lda int, R int, w *Packed, bias []float32, accumulate bool, threads int) {
	I, O := w.In, w.Out
	const tr = 16
	ParallelFor((R+tr-1)/tr, 1, threads, func(_, lo, hi int) {
		for r := lo * tr; r < min(hi*tr, R); r++ {
			ar := a[r*lda : r*lda+I]
			dr := dst[r*ldd : r*ldd+O]
			for o := 0; o < O; o++ {
				wr := w.w[o*I : (o+1)*I]
				var s float32
				for k, x := range ar {
					s += x * wr[k]
				}
				if bias != nil {
					s += bias[o]
				}
				if accumulate {
					s += dr[o]
				}
				dr[o] = s
			}
		}
	})
}

// ParallelFor runs fn over [0, n) split into contiguous pieces of at least
// grain items, on up to threads goroutines; pieces are handed out in order
// from an atomic counter so uneven work balances. fn also receives its
// worker's index in [0, threads), for per-worker scratch.
func ParallelFor(n, grain, threads int, fn func(worker, lo, hi int)) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	pieces := (n + grain - 1) / grain
	workers := min(max(threads, 1), pieces)
	if workers <= 1 {
		fn(0, 0, n)
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer wg.Done()
			for {
				p := int(next.Add(1) - 1)
				if p >= pieces {
					return
				}
				fn(w, p*grain, min((p+1)*grain, n))
			}
		}(w)
	}
	wg.Wait()
}
