package unitok

// gemm computes dst = a W^T + bias (+ dst when accumulate) for R rows of a
// (R x In) and W (Out x In, PyTorch's nn.Linear layout), in 4x4 register
// blocks: each block reads 4 rows of a and 4 rows of W once per k and keeps
// 16 accumulators, so both operands stream contiguously.
//
// With SIMD (see cpu_simd_amd64.go) the tile runs on W packed in 16-column
// panels at load.
func (b *cpuBackend) gemm(dst, a []float32, R int, w *Linear, accumulate bool) {
	I, O := w.In, w.Out
	const tr, tc = 32, 64 // tile of rows x output columns per work item
	rt, ct := (R+tr-1)/tr, (O+tc-1)/tc
	wt := b.packed[w]
	parallelFor(rt*ct, 1, b.threads, func(_, lo, hi int) {
		for t := lo; t < hi; t++ {
			r0, c0 := (t/ct)*tr, (t%ct)*tc
			if wt != nil {
				simd.gemm(dst, a, I, O, I, w.Bias, wt, r0, min(r0+tr, R), c0, min(c0+tc, O), accumulate)
			} else {
				gemmTile(dst, a, w, r0, min(r0+tr, R), c0, min(c0+tc, O), I, O, accumulate)
			}
		}
	})
}

func gemmTile(dst, a []float32, w *Linear, r0, r1, c0, c1, I, O int, accumulate bool) {
	wt := w.Weight
	r := r0
	for ; r+4 <= r1; r += 4 {
		a0, a1, a2, a3 := a[r*I:(r+1)*I], a[(r+1)*I:(r+2)*I], a[(r+2)*I:(r+3)*I], a[(r+3)*I:(r+4)*I]
		c := c0
		for ; c+4 <= c1; c += 4 {
			w0, w1, w2, w3 := wt[c*I:(c+1)*I], wt[(c+1)*I:(c+2)*I], wt[(c+2)*I:(c+3)*I], wt[(c+3)*I:(c+4)*I]
			var s00, s01, s02, s03, s10, s11, s12, s13 float32
			var s20, s21, s22, s23, s30, s31, s32, s33 float32
			for k := 0; k < I; k++ {
				x0, x1, x2, x3 := a0[k], a1[k], a2[k], a3[k]
				y0, y1, y2, y3 := w0[k], w1[k], w2[k], w3[k]
				s00 += x0 * y0
				s01 += x0 * y1
				s02 += x0 * y2
				s03 += x0 * y3
				s10 += x1 * y0
				s11 += x1 * y1
				s12 += x1 * y2
				s13 += x1 * y3
				s20 += x2 * y0
				s21 += x2 * y1
				s22 += x2 * y2
				s23 += x2 * y3
				s30 += x3 * y0
				s31 += x3 * y1
				s32 += x3 * y2
				s33 += x3 * y3
			}
			store4(dst[r*O+c:], w.Bias, c, accumulate, s00, s01, s02, s03)
			store4(dst[(r+1)*O+c:], w.Bias, c, accumulate, s10, s11, s12, s13)
			store4(dst[(r+2)*O+c:], w.Bias, c, accumulate, s20, s21, s22, s23)
			store4(dst[(r+3)*O+c:], w.Bias, c, accumulate, s30, s31, s32, s33)
		}
		for ; c < c1; c++ {
			for rr := r; rr < r+4; rr++ {
				store1(dst, rr*O+c, w.Bias, c, accumulate, dot(a[rr*I:(rr+1)*I], wt[c*I:(c+1)*I]))
			}
		}
	}
	for ; r < r1; r++ {
		ar := a[r*I : (r+1)*I]
		for c := c0; c < c1; c++ {
			store1(dst, r*O+c, w.Bias, c, accumulate, dot(ar, wt[c*I:(c+1)*I]))
		}
	}
}

func store4(d []float32, bias []float32, c int, accumulate bool, s0, s1, s2, s3 float32) {
	d = d[:4]
	if bias != nil {
		b := bias[c : c+4]
		s0, s1, s2, s3 = s0+b[0], s1+b[1], s2+b[2], s3+b[3]
	}
	if accumulate {
		s0, s1, s2, s3 = s0+d[0], s1+d[1], s2+d[2], s3+d[3]
	}
	d[0], d[1], d[2], d[3] = s0, s1, s2, s3
}

func store1(d []float32, i int, bias []float32, c int, accumulate bool, s float32) {
	if bias != nil {
		s += bias[c]
	}
	if accumulate {
		s += d[i]
	}
	d[i] = s
}
