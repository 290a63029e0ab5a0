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
}

func init() {
	vecs[AVX2] = avx2Vec
	vecs[AVX512] = avx2Vec
}
