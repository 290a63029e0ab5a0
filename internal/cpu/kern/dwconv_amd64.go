//go:build !purego

package kern

// dwConv3x3AVX2 is the AVX2 row kernel of Depthwise3x3Row (dwconv_amd64.s):
// cb = 4*c bytes of channels (c a multiple of 8), xstep = stride*ld.
//
//go:noescape
func dwConv3x3AVX2(dst, x0, x1, x2, w, bias *float32, cb, width, xstep, ld int)

func init() {
	k := func(dst, x0, x1, x2, w, bias []float32, c, ld, width, stride int) {
		dwConv3x3AVX2(&dst[0], &x0[0], &x1[0], &x2[0], &w[0], &bias[0], 4*c, width, stride*ld, ld)
	}
	dw3x3[AVX2] = k
	dw3x3[AVX512] = k
}
