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
}

var vecs [AVX512 + 1]*vecOps

// Softmax replaces x with softmax(x * scale), scale > 0: exp(x*scale - m)
// normalized by its sum, m the largest x*scale. The vector levels form
// each argument with one fused rounding and use a Cephes-style expf within
// 2 ulp of exp; Generic rounds x*scale, then subtracts, then exp in float64.
func Softmax(x []float32, scale float32) {
	if len(x) == 0 {
		return
	}
	v := vecs[level]
	n8 := len(x) &^ 7
	if v == nil || n8 == 0 {
		softmaxGeneric(x, scale)
		return
	}
	mx := v.max(x[:n8])
	for _, e := range x[n8:] {
		mx = max(mx, e)
	}
	shift := mx * scale
	sum := v.expShift(x[:n8], scale, shift)
	for i := n8; i < len(x); i++ {
		e := float32(math.Exp(float64(float32(math.FMA(float64(x[i]), float64(scale), -float64(shift))))))
		x[i] = e
		sum += e
	}
	inv := 1 / sum
	v.scale(x[:n8], inv)
	for i := n8; i < len(x); i++ {
		x[i] *= inv
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
