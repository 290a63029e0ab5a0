package unitok

import (
	"github.com/unitok/unitok/internal/cpu"
	"github.com/unitok/unitok/internal/cpu/kern"
)

// The CPU backend: the tokenizer core on internal/cpu's Core (pure Go and
// kern's assembly, every core, no per-token allocation).

func init() {
	registerBackend("cpu", backendFactory{
		available: func(int) error { return nil },
		open: func(m *Model, o *options, _ int) (backend, error) {
			return newCPUBackend(m, o.metric, o.threads), nil
		},
	})
}

type cpuBackend struct{ core *cpu.Core }

// SIMD reports whether the CPU engine runs its vector kernels: the
// assembly of internal/cpu/kern (AVX2 or AVX-512, every build on amd64)
// rather than its pure-Go path.
func SIMD() bool { return kern.Current() != kern.Generic }

func newCPUBackend(m *Model, metric Metric, threads int) *cpuBackend {
	words, offsets := quantTables(m, metric)
	return &cpuBackend{core: cpu.NewCore(cpu.CoreWeights{
		QuantProj:     projectionWeights(&m.QuantProj),
		PostQuantProj: projectionWeights(&m.PostQuantProj),
		Words:         words,
		Offsets:       offsets,
		Lookup:        m.NormCodebooks,
		V:             m.CodebookSize,
		D:             m.LatentDim,
		K:             m.NumCodebooks,
		Causal:        m.Causal,
	}, threads)}
}

// projectionWeights is p as internal/cpu takes it (the same slices).
func projectionWeights(p *AttnProjection) cpu.ProjectionWeights {
	ln := func(l LayerNorm) cpu.LayerNormWeights {
		return cpu.LayerNormWeights{Weight: l.Weight, Bias: l.Bias, Eps: l.Eps}
	}
	lin := func(l Linear) cpu.LinearWeights {
		return cpu.LinearWeights{In: l.In, Out: l.Out, Weight: l.Weight, Bias: l.Bias}
	}
	return cpu.ProjectionWeights{
		In: p.In, Out: p.Out, Heads: p.Heads, HeadDim: p.HeadDim,
		Norm1: ln(p.Norm1), Norm2: ln(p.Norm2), Norm3: ln(p.Norm3), MLPNorm: ln(p.MLPNorm),
		QKV: lin(p.QKV), AttnProj: lin(p.AttnProj), Proj: lin(p.Proj),
		W0: lin(p.W0), W1: lin(p.W1), W2: lin(p.W2),
	}
}

// quantTables returns, per codebook, the codewords and score offsets that
// turn both metrics into argmax_j(offset_j + z . w_j).
func quantTables(m *Model, metric Metric) (words, bias [][]float32) {
	d := m.ChunkDim()
	for i := 0; i < m.NumCodebooks; i++ {
		off := make([]float32, m.CodebookSize)
		if metric == L2 {
			w := m.Codebooks[i]
			for j := range off {
				var s float32
				for _, v := range w[j*d : (j+1)*d] {
					s += v * v
				}
				off[j] = -0.5 * s
			}
			words = append(words, w)
		} else {
			words = append(words, m.NormCodebooks[i])
		}
		bias = append(bias, off)
	}
	return words, bias
}

func (b *cpuBackend) Name() string { return "cpu" }
func (b *cpuBackend) Close() error { return nil }

func (b *cpuBackend) QuantProj(dst, x []float32, B, N int) error {
	b.core.QuantProj(dst, x, B, N)
	return nil
}

func (b *cpuBackend) PostQuantProj(dst, z []float32, B, N int) error {
	b.core.PostQuantProj(dst, z, B, N)
	return nil
}

func (b *cpuBackend) Quantize(dst []int32, z []float32, M int) error {
	b.core.Quantize(dst, z, M)
	return nil
}

func (b *cpuBackend) Lookup(dst []float32, codes []int32, M int) error {
	b.core.Lookup(dst, codes, M)
	return nil
}

func (b *cpuBackend) Encode(dst []int32, x []float32, B, N int) error {
	b.core.Encode(dst, x, B, N)
	return nil
}

func (b *cpuBackend) Decode(dst []float32, codes []int32, B, N int) error {
	b.core.Decode(dst, codes, B, N)
	return nil
}
