package cpu

import (
	"fmt"
	"math"

	"github.com/unitok/unitok/internal/cpu/kern"
	"github.com/unitok/unitok/internal/engine"
)

// Attention: full multi-head self-attention per image, as GEMMs. Each
// (image, head) pair is one task: S = (q * scale) k^T over packed keys, a
// row softmax, then S v over packed v^T, written into the head's columns.
func (e *Engine) Attention(qkv engine.Tensor, heads int) engine.Tensor {
	xt := tens(qkv)
	s := xt.S
	if s.C%(3*heads) != 0 {
		panic(fmt.Sprintf("cpu engine: Attention: %d qkv channels for %d heads", s.C, heads))
	}
	C := s.C / 3
	hd := C / heads
	N := s.H * s.W
	o := s
	o.C = C
	out := newTensor(o)
	scale := float32(1 / math.Sqrt(float64(hd)))
	kern.ParallelFor(s.B*heads, 1, e.threads(), func(_, lo, hi int) {
		q := make([]float32, N*hd)
		k := make([]float32, N*hd)
		vt := make([]float32, hd*N)
		p := make([]float32, N*N)
		for task := lo; task < hi; task++ {
			b, h := task/heads, task%heads
			base := xt.D[b*N*s.C:]
			for n := 0; n < N; n++ {
				row := base[n*s.C:]
				for j := 0; j < hd; j++ {
					q[n*hd+j] = row[h*hd+j] * scale
					k[n*hd+j] = row[C+h*hd+j]
					vt[j*N+n] = row[2*C+h*hd+j]
				}
			}
			kern.Gemm(p, N, q, hd, N, kern.Pack(k, N, hd), nil, false, 1)
			for n := 0; n < N; n++ {
				softmaxRow(p[n*N : (n+1)*N])
			}
			kern.Gemm(out.D[b*N*C+h*hd:], C, p, N, N, kern.Pack(vt, hd, N), nil, false, 1)
		}
	})
	return out
}

func softmaxRow(r []float32) {
	m := r[0]
	for _, v := range r[1:] {
		m = max(m, v)
	}
	var s float64
	for i, v := range r {
		ev := exp32(v - m)
		r[i] = ev
		s += float64(ev)
	}
	inv := float32(1 / s)
	for i := range r {
		r[i] *= inv
	}
}
