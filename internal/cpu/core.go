package cpu

import (
	"sync"

	"github.com/unitok/unitok/internal/cpu/kern"
)

// Core is UniTok's tokenizer core on the CPU: the encode side's
// AttnProjection (C -> D), the multi-codebook quantizer, the codeword
// lookup and the decode side's AttnProjection (D -> C), over host slices of
// token rows (B images of N tokens, row-major). Weights are packed for
// kern once, in NewCore; work is cut into chunks of whole images (attention
// needs a whole sequence) whose scratch comes from pools, so steady-state
// calls allocate only goroutines. A Core is safe for concurrent use.
type Core struct {
	enc, dec *projection
	quant    []*kern.Codebook
	lookup   [][]float32
	K, d     int
	threads  int
	lat      sync.Pool // *[]float32: one chunk's latents in Encode/Decode
}

// CoreWeights are what NewCore lays out: both projections and, per
// codebook k, the quantizer's table (argmax_j of Offsets[k][j] + z_k .
// Words[k][j], so cosine and L2 matching are one search) and the codewords
// Lookup returns. Slices are read, not kept, except Lookup's.
type CoreWeights struct {
	QuantProj, PostQuantProj ProjectionWeights
	Words, Offsets           [][]float32 // per codebook: (V, d) and (V)
	Lookup                   [][]float32 // per codebook: (V, d)
	V, D, K                  int         // codebook size, latent width, codebooks
	Causal                   bool        // causal attention in both projections
}

// NewCore packs w for threads goroutines per call (at least 1).
func NewCore(w CoreWeights, threads int) *Core {
	threads = max(threads, 1)
	c := &Core{K: w.K, d: w.D / w.K, threads: threads, lookup: w.Lookup}
	c.enc = newProjection(w.QuantProj, w.Causal, threads)
	c.dec = newProjection(w.PostQuantProj, w.Causal, threads)
	for k := range w.Words {
		c.quant = append(c.quant, kern.NewCodebook(w.Words[k], w.Offsets[k], w.V, c.d))
	}
	return c
}

// QuantProj writes the encode side's projection of x (B*N rows, C wide)
// into dst (B*N rows, D wide).
func (c *Core) QuantProj(dst, x []float32, B, N int) { c.enc.all(dst, x, B, N) }

// PostQuantProj writes the decode side's projection of z (B*N rows, D
// wide) into dst (B*N rows, C wide).
func (c *Core) PostQuantProj(dst, z []float32, B, N int) { c.dec.all(dst, z, B, N) }

// Encode is QuantProj then Quantize, per chunk (its latents stay in cache).
func (c *Core) Encode(dst []int32, x []float32, B, N int) {
	p := c.enc
	c.latentChunks(p, B, N, func(s *projScratch, z []float32, nb, r0, r1 int) {
		p.run(s, z, x[r0*p.w.In:r1*p.w.In], nb, N)
		c.Quantize(dst[r0*c.K:r1*c.K], z, r1-r0)
	})
}

// Decode is Lookup then PostQuantProj, per chunk.
func (c *Core) Decode(dst []float32, codes []int32, B, N int) {
	p := c.dec
	c.latentChunks(p, B, N, func(s *projScratch, z []float32, nb, r0, r1 int) {
		c.Lookup(z, codes[r0*c.K:r1*c.K], r1-r0)
		p.run(s, dst[r0*p.w.Out:r1*p.w.Out], z, nb, N)
	})
}

// latentChunks calls fn per chunk of whole images (nb images, token rows
// [r0, r1)) with p's scratch and the chunk's latent rows z (D wide), both
// pooled across calls.
func (c *Core) latentChunks(p *projection, B, N int, fn func(s *projScratch, z []float32, nb, r0, r1 int)) {
	s := p.get(chunkRows(B, N))
	defer p.put(s)
	D := c.K * c.d
	lat := c.latScratch(chunkRows(B, N) * D)
	defer c.lat.Put(lat)
	forChunks(B, N, func(nb, r0, r1 int) {
		fn(s, (*lat)[:(r1-r0)*D], nb, r0, r1)
	})
}

func (c *Core) latScratch(n int) *[]float32 {
	if v, ok := c.lat.Get().(*[]float32); ok && cap(*v) >= n {
		*v = (*v)[:n]
		return v
	}
	v := make([]float32, n)
	return &v
}

// Quantize writes, for each of M latent rows (D wide) and each codebook k,
// argmax_j(Offsets_k[j] + z_k . Words_k[j]) into dst (M, K); ties go to
// the lowest index. kern's codebook search does the work (AVX-512, AVX2 or
// pure Go, chosen at start-up). Rows split across cores in spans of at
// most quantSpan; each span runs every codebook over its rows in turn, so
// one codebook (V*(d+1) floats, 144 KB at the real widths) stays in cache
// for the whole span.
func (c *Core) Quantize(dst []int32, z []float32, M int) {
	K, d := c.K, c.d
	D := K * d
	// Enough spans for every thread, in multiples of 8 rows (the kernels'
	// token groups are 4 or 8).
	span := min(quantSpan, max(8, ((M+c.threads-1)/c.threads+7)&^7))
	kern.ParallelFor((M+span-1)/span, 1, c.threads, func(_, lo, hi int) {
		for r0 := lo * span; r0 < min(hi*span, M); r0 += span {
			n := min(span, M-r0)
			for k, cb := range c.quant {
				cb.Argmax(dst[r0*K+k:], K, z[r0*D+k*d:], D, n)
			}
		}
	})
}

// quantSpan is the most rows one worker quantizes per codebook pass.
const quantSpan = 256

// Lookup writes the codewords of codes (M, K) into dst (M, D).
func (c *Core) Lookup(dst []float32, codes []int32, M int) {
	K, d := c.K, c.d
	for r := 0; r < M; r++ {
		for k := 0; k < K; k++ {
			j := int(codes[r*K+k])
			copy(dst[(r*K+k)*d:(r*K+k+1)*d], c.lookup[k][j*d:(j+1)*d])
		}
	}
}
