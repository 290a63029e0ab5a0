package unitok

// quantize writes, for each of M latent rows (D wide) and each codebook k,
// argmax_j(bias_k[j] + z_k . words_k[j]) into dst (M, K); ties go to the
// lowest index. kern's codebook search does the work (AVX-512, AVX2 or
// pure Go, chosen at start-up). Rows split across cores in spans of at
// most quantSpan; each span runs every codebook over its rows in turn, so
// one codebook (V*(d+1) floats, 144 KB at the real widths) stays in cache
// for the whole span.
func (b *cpuBackend) quantize(dst []int32, z []float32, M int) {
	K, d := b.m.NumCodebooks, b.m.ChunkDim()
	D := K * d
	// Enough spans for every thread, in multiples of 8 rows (the kernels'
	// token groups are 4 or 8).
	span := min(quantSpan, max(8, ((M+b.threads-1)/b.threads+7)&^7))
	parallelFor((M+span-1)/span, 1, b.threads, func(_, lo, hi int) {
		for r0 := lo * span; r0 < min(hi*span, M); r0 += span {
			n := min(span, M-r0)
			for k, cb := range b.codebooks {
				cb.Argmax(dst[r0*K+k:], K, z[r0*D+k*d:], D, n)
			}
		}
	})
}

// quantSpan is the most rows one worker quantizes per codebook pass.
const quantSpan = 256
