package cpu

import "math"

// exp32 is Cephes' expf: e^x = 2^n e^r with |r| <= ln2/2 and a degree-6
// polynomial for e^r, within about 1 float32 ulp of math.Exp; x below -87.3
// gives 0 and above 88.7 gives +Inf.
func exp32(x float32) float32 {
	if x < -87.33654 {
		return 0
	}
	if x > 88.72283 {
		return float32(math.Inf(1))
	}
	n := float32(math.Floor(float64(x*1.44269504088896341 + 0.5)))
	r := x - n*0.693359375 - n*-2.12194440e-4
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	// y * 2^n, n in [-126, 128]: scale in two steps to stay normal.
	ni := int32(n)
	if ni < -125 {
		y *= math.Float32frombits(uint32(ni+126+127) << 23)
		return y * math.Float32frombits(uint32(1)<<23) // 2^-126
	}
	if ni > 127 {
		return y * 2 * math.Float32frombits(uint32(ni-1+127)<<23)
	}
	return y * math.Float32frombits(uint32(ni+127)<<23)
}

// erf32 is a float32 rational approximation of erf (the odd/even
// polynomial pair used by Eigen's and XLA's float erf), within a few float32
// ulps of math.Erf; inputs are clamped to [-4, 4], outside which erf rounds
// to +-1 in float32. It is about 4x cheaper than math.Erf in float64.
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

// geluErf32 is GELU with erf: x/2 * (1 + erf(x/sqrt2)).
func geluErf32(x float32) float32 {
	return 0.5 * x * (1 + erf32(x*0.70710678118654752))
}

// geluTanh32 is the tanh GELU in its sigmoid form,
// x * sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3),
// equal to 0.5 x (1 + tanh(u)) and one exp instead of a tanh.
func geluTanh32(x float32) float32 {
	const k = 0.7978845608028654 // sqrt(2/pi)
	u := k * (x + 0.044715*x*x*x)
	return x / (1 + exp32(-2*u))
}
