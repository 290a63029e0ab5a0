package kern

// dw3x3 holds, per level, the vector row kernel of Depthwise3x3Row for
// channel counts that are a multiple of 8 (nil: the Go loop).
var dw3x3 [AVX512 + 1]func(dst, x0, x1, x2, w, bias []float32, c, ld, width, stride int)

// Depthwise3x3Row computes one output row of a 3x3 depthwise convolution
// over NHWC rows whose positions are ld floats apart, for the c channels
// at the start of each position (a slab of a wider map when c < ld):
//
//	dst[ox*ld+j] = bias[j] + sum_{ky,kx} x_ky[(ox*stride+kx)*ld + j] * w[(ky*3+kx)*ld + j]
//
// for ox < width and j < c, where x0, x1, x2 are the three input rows read
// by the output row, starting at its first output's first tap (a zero row
// stands for padding), w is (9, ld), taps row-major, and bias is c values
// or nil. Each output adds its taps in order (ky, kx); the vector levels
// use one FMA per tap, the Go loop a product and a sum.
func Depthwise3x3Row(dst, x0, x1, x2, w, bias []float32, c, ld, width, stride int) {
	if width <= 0 || c <= 0 {
		return
	}
	if c > ld {
		panic("kern.Depthwise3x3Row: c > ld")
	}
	need := ((width-1)*stride+2)*ld + c
	_, _, _, _, _ = dst[(width-1)*ld+c-1], x0[need-1], x1[need-1], x2[need-1], w[8*ld+c-1]
	if bias == nil {
		bias = zeros(c)
	}
	_ = bias[c-1]
	if k := dw3x3[level]; k != nil && c%8 == 0 {
		k(dst, x0, x1, x2, w, bias, c, ld, width, stride)
		return
	}
	rows := [3][]float32{x0, x1, x2}
	for ox := 0; ox < width; ox++ {
		d := dst[ox*ld : ox*ld+c]
		copy(d, bias[:c])
		for ky, row := range rows {
			for kx := 0; kx < 3; kx++ {
				src := row[(ox*stride+kx)*ld:][:c]
				wt := w[(ky*3+kx)*ld:][:c]
				for j, v := range src {
					d[j] += v * wt[j]
				}
			}
		}
	}
}

// zeros returns n zeros (shared; callers only read it).
func zeros(n int) []float32 {
	if n > len(zeroBuf) {
		return make([]float32, n)
	}
	return zeroBuf[:n]
}

var zeroBuf [4096]float32
