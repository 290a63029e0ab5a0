package unitok

import "github.com/unitok/unitok/internal/cpu/kern"

// gemm computes dst = a W^T + bias (+ dst when accumulate) for R rows of a
// (R x In) and W (Out x In, PyTorch's nn.Linear layout) on kern.Gemm, with
// W packed at backend creation.
func (b *cpuBackend) gemm(dst, a []float32, R int, w *Linear, accumulate bool) {
	kern.Gemm(dst, w.Out, a, w.In, R, b.packed[w], w.Bias, accumulate, b.threads)
}
