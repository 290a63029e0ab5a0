package unitok

// quantize writes, for each of M latent rows (D wide) and each codebook k,
// argmax_j(bias_k[j] + z_k . words_k[j]) into dst (M, K); ties go to the
// lowest index (strict >). Rows are independent, so they split across cores.
func (b *cpuBackend) quantize(dst []int32, z []float32, M int) {
	K, d, V := b.m.NumCodebooks, b.m.ChunkDim(), b.m.CodebookSize
	D := K * d
	parallelFor(M, 16, b.threads, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			for k := 0; k < K; k++ {
				zc := z[r*D+k*d : r*D+(k+1)*d]
				if b.qt != nil {
					dst[r*K+k] = simd.argmax(zc, b.qt[k], b.qbias[k], b.vpad, d)
				} else if d == 8 {
					dst[r*K+k] = argmax8(zc, b.words[k], b.bias[k], V)
				} else {
					dst[r*K+k] = argmaxN(zc, b.words[k], b.bias[k], V, d)
				}
			}
		}
	})
}

// argmax8 is the d=8 fast path: the chunk lives in registers and each
// codeword costs 8 multiplies and 8 adds.
func argmax8(z, w, bias []float32, V int) int32 {
	z0, z1, z2, z3, z4, z5, z6, z7 := z[0], z[1], z[2], z[3], z[4], z[5], z[6], z[7]
	w = w[:V*8]
	bias = bias[:V]
	best, idx := float32(0), int32(0)
	for j := 0; j < V; j++ {
		e := w[j*8 : j*8+8 : j*8+8]
		s := bias[j] + (((z0*e[0] + z1*e[1]) + (z2*e[2] + z3*e[3])) + ((z4*e[4] + z5*e[5]) + (z6*e[6] + z7*e[7])))
		if j == 0 || s > best {
			best, idx = s, int32(j)
		}
	}
	return idx
}

// argmaxN is the general-d path.
func argmaxN(z, w, bias []float32, V, d int) int32 {
	best, idx := float32(0), int32(0)
	for j := 0; j < V; j++ {
		s := bias[j] + dot(z, w[j*d:(j+1)*d])
		if j == 0 || s > best {
			best, idx = s, int32(j)
		}
	}
	return idx
}
