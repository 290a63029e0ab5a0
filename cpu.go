package unitok

import (
	"sync"

	"github.com/unitok/unitok/internal/cpu/kern"
)

// The CPU engine: pure Go, every core, no per-token allocation. Work is cut
// into chunks of whole images (attention needs a whole sequence) whose
// scratch buffers come from a pool, so steady-state calls allocate only
// goroutines.

func init() {
	registerBackend("cpu", backendFactory{
		available: func(int) error { return nil },
		open: func(m *Model, o *options, _ int) (backend, error) {
			return newCPUBackend(m, o.metric, o.threads), nil
		},
	})
}

// cpuChunkRows is the target number of token rows per projection chunk:
// large enough to keep every core busy in the GEMMs, small enough that the
// QKV scratch (rows x 3*max(C,D) floats) stays around 25 MB at C=1024.
const cpuChunkRows = 2048

type cpuBackend struct {
	m       *Model
	metric  Metric
	threads int
	// quantizer tables: per codebook, the codewords compared against and
	// the per-codeword score offset (0 for cosine, -|e|^2/2 for L2).
	words [][]float32
	bias  [][]float32
	enc   *projScratchPool
	dec   *projScratchPool
	lat   sync.Pool // *[]float32 latent scratch for Encode/Decode chunks

	// packed holds each Linear's weight laid out for kern.Gemm.
	packed map[*Linear]*kern.Packed
	// codebooks: the quantizer tables laid out for kern's codebook search.
	codebooks []*kern.Codebook
}

// simdKernels are the archsimd kernels; cpu_simd_amd64.go fills them in
// when built with GOEXPERIMENT=simd on a CPU with AVX2 and FMA. Only the
// codebook search still uses them: GEMMs, softmax and GeGLU run on
// internal/cpu/kern in every build.
type simdKernels struct {
	enabled bool
	argmax  func(z, qt, qbias []float32, vpad, d int) int32
}

var simd simdKernels

// SIMD reports whether the CPU engine runs its vector kernels: the
// assembly GEMM, softmax and GeGLU of internal/cpu/kern (AVX2 or AVX-512,
// every build on amd64), or the archsimd codebook search.
func SIMD() bool { return simd.enabled || kern.Current() != kern.Generic }

func newCPUBackend(m *Model, metric Metric, threads int) *cpuBackend {
	b := &cpuBackend{m: m, metric: metric, threads: max(threads, 1)}
	b.words, b.bias = quantTables(m, metric)
	b.enc = &projScratchPool{p: &m.QuantProj}
	b.dec = &projScratchPool{p: &m.PostQuantProj}
	b.packed = map[*Linear]*kern.Packed{}
	for _, p := range []*AttnProjection{&m.QuantProj, &m.PostQuantProj} {
		for _, l := range []*Linear{&p.QKV, &p.AttnProj, &p.Proj, &p.W0, &p.W1, &p.W2} {
			b.packed[l] = kern.Pack(l.Weight, l.Out, l.In)
		}
	}
	for k := range b.words {
		b.codebooks = append(b.codebooks, kern.NewCodebook(b.words[k], b.bias[k], m.CodebookSize, m.ChunkDim()))
	}
	return b
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

// imagesPerChunk is how many whole images of N tokens make one chunk.
func imagesPerChunk(N int) int { return max(1, cpuChunkRows/N) }

func (b *cpuBackend) QuantProj(dst, x []float32, B, N int) error {
	b.projectAll(b.enc, dst, x, B, N)
	return nil
}

func (b *cpuBackend) PostQuantProj(dst, z []float32, B, N int) error {
	b.projectAll(b.dec, dst, z, B, N)
	return nil
}

func (b *cpuBackend) projectAll(pool *projScratchPool, dst, x []float32, B, N int) {
	p := pool.p
	s := pool.get(chunkRows(B, N))
	defer pool.put(s)
	forChunks(B, N, func(nb, r0, r1 int) {
		b.project(p, s, dst[r0*p.Out:r1*p.Out], x[r0*p.In:r1*p.In], nb, N)
	})
}

// chunkRows is the token rows of the largest chunk forChunks hands out.
func chunkRows(B, N int) int { return min(imagesPerChunk(N), B) * N }

// forChunks calls fn for consecutive chunks of whole images: nb images,
// token rows [r0, r1).
func forChunks(B, N int, fn func(nb, r0, r1 int)) {
	step := imagesPerChunk(N)
	for b0 := 0; b0 < B; b0 += step {
		nb := min(step, B-b0)
		fn(nb, b0*N, (b0+nb)*N)
	}
}

func (b *cpuBackend) Quantize(dst []int32, z []float32, M int) error {
	b.quantize(dst, z, M)
	return nil
}

func (b *cpuBackend) Lookup(dst []float32, codes []int32, M int) error {
	lookup(b.m, dst, codes, M)
	return nil
}

func (b *cpuBackend) latScratch(n int) *[]float32 {
	if v, ok := b.lat.Get().(*[]float32); ok && cap(*v) >= n {
		*v = (*v)[:n]
		return v
	}
	v := make([]float32, n)
	return &v
}

func (b *cpuBackend) Encode(dst []int32, x []float32, B, N int) error {
	m := b.m
	s := b.enc.get(chunkRows(B, N))
	defer b.enc.put(s)
	lat := b.latScratch(chunkRows(B, N) * m.LatentDim)
	defer b.lat.Put(lat)
	forChunks(B, N, func(nb, r0, r1 int) {
		z := (*lat)[:(r1-r0)*m.LatentDim]
		b.project(&m.QuantProj, s, z, x[r0*m.InDim:r1*m.InDim], nb, N)
		b.quantize(dst[r0*m.NumCodebooks:r1*m.NumCodebooks], z, r1-r0)
	})
	return nil
}

func (b *cpuBackend) Decode(dst []float32, codes []int32, B, N int) error {
	m := b.m
	s := b.dec.get(chunkRows(B, N))
	defer b.dec.put(s)
	lat := b.latScratch(chunkRows(B, N) * m.LatentDim)
	defer b.lat.Put(lat)
	forChunks(B, N, func(nb, r0, r1 int) {
		z := (*lat)[:(r1-r0)*m.LatentDim]
		lookup(m, z, codes[r0*m.NumCodebooks:r1*m.NumCodebooks], r1-r0)
		b.project(&m.PostQuantProj, s, dst[r0*m.InDim:r1*m.InDim], z, nb, N)
	})
	return nil
}

// lookup writes the normalized codewords of codes (M, K) into dst (M, D).
func lookup(m *Model, dst []float32, codes []int32, M int) {
	K, d := m.NumCodebooks, m.ChunkDim()
	for r := 0; r < M; r++ {
		for k := 0; k < K; k++ {
			c := int(codes[r*K+k])
			copy(dst[(r*K+k)*d:(r*K+k+1)*d], m.NormCodebooks[k][c*d:(c+1)*d])
		}
	}
}

// parallelFor is kern.ParallelFor: fn over [0, n) in pieces of at least
// grain items on up to threads goroutines.
func parallelFor(n, grain, threads int, fn func(worker, lo, hi int)) {
	kern.ParallelFor(n, grain, threads, fn)
}
