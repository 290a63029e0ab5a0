//go:build !purego

package kern

// Vector math in gemm_amd64.s (AVX2 + FMA, ymm), n a multiple of 8.

//go:noescape
func expShiftAVX2(x *float32, n int, scale, shift float32) float32

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func scaleAVX2(x *float32, n int, s float32)

//go:noescape
func gegluAVX2(gate, val *float32, n int)

//go:noescape
func sumAVX2(x *float32, n int) float32

//go:noescape
func devAVX2(x *float32, n int, m float32) (s, q float32)

//go:noescape
func normAVX2(dst, x, w, bias *float32, n int, m, c, rstd float32)

//go:noescape
func geluErfAVX2(x *float32, n int)

var avx2Vec = &vecOps{
	expShift: func(x []float32, scale, shift float32) float32 {
		return expShiftAVX2(&x[0], len(x)&^7, scale, shift)
	},
	max:   func(x []float32) float32 { return maxAVX2(&x[0], len(x)&^7) },
	scale: func(x []float32, s float32) { scaleAVX2(&x[0], len(x)&^7, s) },
	geglu: func(gate, val []float32) {
		val = val[:len(gate)]
		gegluAVX2(&gate[0], &val[0], len(gate)&^7)
	},
	sum: func(x []float32) float32 { return sumAVX2(&x[0], len(x)&^7) },
	dev: func(x []float32, m float32) (float32, float32) { return devAVX2(&x[0], len(x)&^7, m) },
	norm: func(dst, x, g, b []float32, m, c, rstd float32) {
		n := len(x) &^ 7
		dst, g, b = dst[:n], g[:n], b[:n]
		normAVX2(&dst[0], &x[0], &g[0], &b[0], n, m, c, rstd)
	},
	geluErf: func(x []float32) { geluErfAVX2(&x[0], len(x)&^7) },
}

func init() {
	vecs[AVX2] = avx2Vec
	vecs[AVX512] = avx2Vec
}
