package kern

// dw3x3 holds, per level, the vector row kernel of Depthwise3x3Row for
// channel counts that are a multiple of 8 (nil: the Go loop).
var dw3x3 [AVX512 + 1]func(dst, x0, x1, x2, w, bias []float32, c, width, stride int)

// Depthwise3x3Row computes one output row of a 3x3 depthwise convolution
// over a zero-padded NHWC map with c channels:
//
//	dst[ox*c+j] = bias[j] + sum_{ky,kx} x_ky[ox*stride*c + kx*c + j] * w[(ky*3+kx)*c + j]
//
// for ox < width, where x0, x1, x2 are the three padded input rows read by
// the output row, starting at its first output's first tap. w is (9, c),
// taps row-major and channels inner; bias is c values or nil. Each output
// adds its taps in order (ky, kx); the vector levels use one FMA per tap,
// the Go loop a product and a sum.
func Depthwise3x3Row(dst, x0, x1, x2, w, bias []float32, c, width, stride int) {
	if width <= 0 || c <= 0 {
		return
	}
	need := ((width-1)*stride + 3) * c
	_, _, _, _, _ = dst[width*c-1], x0[need-1], x1[need-1], x2[need-1], w[9*c-1]
	if bias == nil {
		bias = zeros(c)
	}
	_ = bias[c-1]
	if k := dw3x3[level]; k != nil && c%8 == 0 {
		k(dst, x0, x1, x2, w, bias, c, width, stride)
		return
	}
	rows := [3][]float32{x0, x1, x2}
	for ox := 0; ox < width; ox++ {
		d := dst[ox*c : (ox+1)*c]
		copy(d, bias[:c])
		for ky, row := range rows {
			for kx := 0; kx < 3; kx++ {
				src := row[(ox*stride+kx)*c : (ox*stride+kx+1)*c]
				wt := w[(ky*3+kx)*c : (ky*3+kx+1)*c]
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
