package kern

import "math"

// Row-wise vector math of the CPU engine's attention and MLP. The AVX2 and
// AVX512 levels run the ymm assembly (these are memory-light and short,
// so 8 lanes are enough); Generic runs Go with float64 exp.

// vecOps are a level's vector kernels over whole multiples of 8 floats;
// nil on Generic.
type vecOps struct {
	expShift func(x []float32, scale, shift float32) float32
	max      func(x []float32) float32
	scale    func(x []float32, s float32)
	geglu    func(gate, val []float32)
	sum      func(x []float32) float32
	dev      func(x []float32, m float32) (s, q float32)
	norm     func(dst, x, g, b []float32, m, c, rstd float32)
	geluErf  func(x []float32)
}

var vecs [AVX512 + 1]*vecOps

// Softmax replaces x with softmax(x * scale), scale > 0: exp(x*scale - m)
// normalized by its sum, m the largest x*scale. The vector levels form
// each argument with one fused rounding and use a Cephes-style expf within
// 2 ulp of exp (every element, the tail past a multiple of 8 too); Generic
// rounds x*scale, then subtracts, then exp in float64.
func Softmax(x []float32, scale float32) {
	if len(x) == 0 {
		return
	}
	v := vecs[level]
	if v == nil {
		softmaxGeneric(x, scale)
		return
	}
	if len(x)%8 == 0 {
		// No tail block (softmaxTail's padding would add nothing: -Inf
		// to the maximum, about 1e-38 to a sum of at least 1), and no
		// heap-allocated tail either (it escapes through the indirect
		// calls): attention's rows are 256 long, 4096 a head.
		shift := v.max(x) * scale
		v.scale(x, 1/v.expShift(x, scale, shift))
		return
	}
	softmaxTail(v, x, scale)
}

// softmaxTail is Softmax on the vector level v for a length that is not a
// multiple of 8.
func softmaxTail(v *vecOps, x []float32, scale float32) {
	// The last len(x) % 8 values go through the vector code too, in a
	// block padded with -Inf: exp of a padding argument clamps to about
	// 1e-38, which vanishes in a sum of at least 1 (the maximum's term).
	n8 := len(x) &^ 7
	var tail [8]float32
	nt := copy(tail[:], x[n8:])
	for i := nt; i < 8; i++ {
		tail[i] = float32(math.Inf(-1))
	}
	mx := v.max(tail[:])
	if n8 > 0 {
		mx = max(mx, v.max(x[:n8]))
	}
	shift := mx * scale
	var sum float32
	if n8 > 0 {
		sum = v.expShift(x[:n8], scale, shift)
	}
	sum += v.expShift(tail[:], scale, shift)
	inv := 1 / sum
	if n8 > 0 {
		v.scale(x[:n8], inv)
	}
	for i := range x[n8:] {
		x[n8+i] = tail[i] * inv
	}
}

func softmaxGeneric(x []float32, scale float32) {
	mx := float32(math.Inf(-1))
	for i, v := range x {
		v *= scale
		x[i] = v
		mx = max(mx, v)
	}
	var sum float32
	for i, v := range x {
		e := float32(math.Exp(float64(v - mx)))
		x[i] = e
		sum += e
	}
	inv := 1 / sum
	for i := range x {
		x[i] *= inv
	}
}

// GeGLU overwrites gate[i] with gelu_tanh(gate[i]) * val[i], GELU with the
// tanh approximation as nn.GELU(approximate='tanh'). The vector levels use
// 0.5 x (1 + tanh(y)) = x / (1 + exp(-2y)), y = sqrt(2/pi)(x + 0.044715 x^3),
// which has no cancellation for either sign of y.
func GeGLU(gate, val []float32) {
	val = val[:len(gate)]
	n8 := 0
	if v := vecs[level]; v != nil {
		n8 = len(gate) &^ 7
		if n8 > 0 {
			v.geglu(gate[:n8], val[:n8])
		}
	}
	for i := n8; i < len(gate); i++ {
		gate[i] = GeluTanh(gate[i]) * val[i]
	}
}

// GeluTanh is GELU with the tanh approximation, in float64.
func GeluTanh(x float32) float32 {
	v := float64(x)
	return float32(0.5 * v * (1 + math.Tanh(0.7978845608028654*(v+0.044715*v*v*v))))
}

// LayerNorm normalizes one row: dst[i] = (x[i] - m) * rstd * g[i] + b[i]
// with m the mean of x and rstd = 1/sqrt(var + eps), var the biased
// variance; dst may be x. Statistics are float32 as PyTorch's CPU
// LayerNorm keeps them: a first mean m0 from 32 lane sums, then one pass
// over d = x - m0 summing d and d*d, so m = m0 + c with c = sum(d)/n and
// var = sum(d*d)/n - c^2 (the corrected two-pass formula, no
// cancellation); the output is ((x - m0) - c) * rstd * g + b, so a mean
// large against the spread loses nothing to m's rounding. Generic runs the
// same formulas in Go with float64 sums.
func LayerNorm(dst, x, g, b []float32, eps float32) {
	n := len(x)
	if n == 0 {
		return
	}
	dst, g, b = dst[:n], g[:n], b[:n]
	v := vecs[level]
	n8 := n &^ 7
	if v == nil || n8 == 0 {
		layerNormGeneric(dst, x, g, b, eps)
		return
	}
	s := v.sum(x[:n8])
	for _, e := range x[n8:] {
		s += e
	}
	m := s / float32(n)
	ds, q := v.dev(x[:n8], m)
	for _, e := range x[n8:] {
		d := e - m
		ds += d
		q += d * d
	}
	c := ds / float32(n)
	vr := max(q/float32(n)-c*c, 0)
	rstd := float32(1 / math.Sqrt(float64(vr+eps)))
	v.norm(dst[:n8], x[:n8], g[:n8], b[:n8], m, c, rstd)
	for i := n8; i < n; i++ {
		dst[i] = ((x[i]-m)-c)*rstd*g[i] + b[i]
	}
}

func layerNormGeneric(dst, x, g, b []float32, eps float32) {
	n := len(x)
	var s float64
	for _, e := range x {
		s += float64(e)
	}
	m := float32(s / float64(n))
	var ds, q float64
	for _, e := range x {
		d := float64(e - m)
		ds += d
		q += d * d
	}
	c := ds / float64(n)
	vr := max(q/float64(n)-c*c, 0)
	rstd := float32(1 / math.Sqrt(vr+float64(eps)))
	c32 := float32(c)
	for i, e := range x {
		dst[i] = ((e-m)-c32)*rstd*g[i] + b[i]
	}
}

// GeluErf replaces x[i] with GELU(x[i]) = x/2 (1 + erf(x/sqrt2)) (exact,
// nn.GELU()), erf from a float32 rational approximation (the odd/even
// polynomial pair of Eigen's and XLA's float erf, argument clamped to
// [-4, 4], outside which erf is +-1 in float32): within a few float32 ulps
// of erf.
func GeluErf(x []float32) {
	n8 := 0
	if v := vecs[level]; v != nil {
		n8 = len(x) &^ 7
		if n8 > 0 {
			v.geluErf(x[:n8])
		}
	}
	for i := n8; i < len(x); i++ {
		h := 0.5 * x[i]
		x[i] = h + h*erf32(x[i]*0.70710678118654752)
	}
}

// erf32 is the float32 erf of GeluErf.
func erf32(a float32) float32 {
	x := min(max(a, -4), 4)
	x2 := x * x
	p := x2*-2.72614225801306e-10 + 2.77068142495902e-08
	p = x2*p + -2.10102402082508e-06
	p = x2*p + -5.69250639462346e-05
	p = x2*p + -7.34990630326855e-04
	p = x2*p + -2.95459980854025e-03
	p = x2*p + -1.60960333262415e-02
	p *= x
	q := x2*-1.45660718464996e-05 + -2.13374055278905e-04
	q = x2*q + -1.68282697438203e-03
	q = x2*q + -7.37332916720468e-03
	q = x2*q + -1.42647390514189e-02
	return p / q
}
