// Package enginetest is the op-level conformance suite every engine of
// internal/engine runs: each op against a float64 oracle written straight
// from PyTorch's definition (NCHW indexing translated to NHWC), independent
// of the engine's blocking and kernels.
package enginetest

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/unitok/unitok/internal/engine"
)

// Run runs every op test on e.
func Run(t *testing.T, e engine.Engine) {
	t.Run("Conv2d", func(t *testing.T) { testConv2d(t, e) })
	t.Run("AvgPool3x3s2", func(t *testing.T) { testAvgPool(t, e) })
	t.Run("Upsample2x", func(t *testing.T) { testUpsample(t, e) })
	t.Run("UpConv3x3", func(t *testing.T) { testUpConv(t, e) })
	t.Run("Attention", func(t *testing.T) { testAttention(t, e) })
	t.Run("LayerNormGELUGeGLU", func(t *testing.T) { testLayerNormGELUAndGeGLU(t, e) })
	t.Run("MatMulAddMeanNormalize", func(t *testing.T) { testMatMulAndReductions(t, e) })
}

func randSlice(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func refConv(x []float32, s engine.Shape, w, b []float32, out, kh, kw, groups, stride, pad int) ([]float64, engine.Shape) {
	o := engine.Shape{B: s.B, H: (s.H+2*pad-kh)/stride + 1, W: (s.W+2*pad-kw)/stride + 1, C: out}
	ig, og := s.C/groups, out/groups
	y := make([]float64, o.Elems())
	for bb := 0; bb < s.B; bb++ {
		for oy := 0; oy < o.H; oy++ {
			for ox := 0; ox < o.W; ox++ {
				for oc := 0; oc < out; oc++ {
					acc := float64(b[oc])
					g := oc / og
					for ic := 0; ic < ig; ic++ {
						for ky := 0; ky < kh; ky++ {
							for kx := 0; kx < kw; kx++ {
								iy, ix := oy*stride-pad+ky, ox*stride-pad+kx
								if iy < 0 || iy >= s.H || ix < 0 || ix >= s.W {
									continue
								}
								acc += float64(x[((bb*s.H+iy)*s.W+ix)*s.C+g*ig+ic]) * float64(w[((oc*ig+ic)*kh+ky)*kw+kx])
							}
						}
					}
					y[((bb*o.H+oy)*o.W+ox)*out+oc] = acc
				}
			}
		}
	}
	return y, o
}

func closeTo(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); d > tol*(1+math.Abs(want[i])) {
			t.Fatalf("%s: [%d] = %g, want %g", what, i, got[i], want[i])
		}
	}
}

func testConv2d(t *testing.T, e engine.Engine) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		in, out, k, groups, stride, pad, h, w int
	}{
		{3, 8, 3, 1, 2, 1, 9, 7},       // stem conv1: odd sizes, stride 2
		{8, 8, 3, 1, 1, 1, 5, 6},       // stem conv2 / Upsample2d conv (few channels)
		{16, 12, 3, 1, 1, 1, 5, 7},     // stride 1, wider (the CPU engine's implicit GEMM)
		{24, 24, 3, 1, 1, 1, 1, 1},     // stride 1 on a 1x1 map
		{32, 16, 3, 1, 1, 1, 8, 3},     // stride 1, tall
		{6, 10, 1, 1, 1, 0, 4, 4},      // 1x1 on the GEMM directly
		{12, 12, 3, 12, 2, 1, 7, 8},    // depthwise strided
		{12, 12, 3, 12, 1, 1, 5, 3},    // depthwise
		{16, 16, 3, 16, 2, 1, 9, 14},   // depthwise, vector width: strided, odd height
		{24, 24, 3, 24, 1, 1, 4, 13},   // depthwise, vector width
		{144, 144, 3, 144, 1, 1, 3, 9}, // depthwise, two channel slabs in the CPU engine
		{16, 16, 3, 16, 1, 1, 2, 1},    // depthwise on a map narrower than the kernel
		{16, 16, 3, 16, 2, 1, 3, 2},    // depthwise strided, narrow
		{5, 9, 3, 1, 2, 1, 8, 8},       // StridedConv
		{20, 3, 3, 1, 1, 1, 6, 5},      // to RGB: few outputs (the CPU engine's tap-channels GEMM)
		{7, 3, 3, 1, 1, 1, 13, 17},     // tap-channels over several pieces of rows and a short last tile
		{10, 2, 3, 1, 1, 0, 7, 9},      // tap-channels without padding
		{40, 20, 3, 1, 1, 1, 9, 11},    // 9 taps x 40 channels: packed k-blocks cross taps
	} {
		s := engine.Shape{B: 2, H: tc.h, W: tc.w, C: tc.in}
		x := randSlice(rng, s.Elems())
		w := randSlice(rng, tc.out*tc.in/tc.groups*tc.k*tc.k)
		b := randSlice(rng, tc.out)
		want, o := refConv(x, s, w, b, tc.out, tc.k, tc.k, tc.groups, tc.stride, tc.pad)
		cw := e.Conv(w, b, tc.out, tc.in, tc.k, tc.k, tc.groups)
		for range 2 { // the second call reuses lazily built tap weights
			y := e.Conv2d(e.FromHost(x, s), cw, tc.stride, tc.pad)
			if y.Shape() != o {
				t.Fatalf("%+v: shape %+v, want %+v", tc, y.Shape(), o)
			}
			closeTo(t, "conv", e.ToHost(y), want, 1e-4)
			e.Release(y) // the second call may get this memory back
		}
	}
}

func testAvgPool(t *testing.T, e engine.Engine) {
	for _, hw := range [][2]int{{4, 4}, {5, 3}, {1, 1}} {
		s := engine.Shape{B: 1, H: hw[0], W: hw[1], C: 2}
		x := make([]float32, s.Elems())
		for i := range x {
			x[i] = float32(i)
		}
		y := e.ToHost(e.AvgPool3x3s2(e.FromHost(x, s)))
		o := engine.Shape{B: 1, H: (s.H + 1) / 2, W: (s.W + 1) / 2, C: 2}
		var want []float64
		for oy := 0; oy < o.H; oy++ {
			for ox := 0; ox < o.W; ox++ {
				for c := 0; c < 2; c++ {
					sum, n := 0.0, 0
					for iy := 2*oy - 1; iy <= 2*oy+1; iy++ {
						for ix := 2*ox - 1; ix <= 2*ox+1; ix++ {
							if iy >= 0 && iy < s.H && ix >= 0 && ix < s.W {
								sum += float64(x[(iy*s.W+ix)*2+c])
								n++
							}
						}
					}
					want = append(want, sum/float64(n))
				}
			}
		}
		closeTo(t, "avgpool", y, want, 1e-6)
	}
}

func testUpsample(t *testing.T, e engine.Engine) {
	s := engine.Shape{B: 2, H: 2, W: 3, C: 2}
	x := make([]float32, s.Elems())
	for i := range x {
		x[i] = float32(i)
	}
	y := e.ToHost(e.Upsample2x(e.FromHost(x, s)))
	for b := 0; b < 2; b++ {
		for oy := 0; oy < 4; oy++ {
			for ox := 0; ox < 6; ox++ {
				for c := 0; c < 2; c++ {
					if got, want := y[((b*4+oy)*6+ox)*2+c], x[((b*2+oy/2)*3+ox/2)*2+c]; got != want {
						t.Fatalf("(%d,%d,%d,%d) = %g, want %g", b, oy, ox, c, got, want)
					}
				}
			}
		}
	}
}

func testAttention(t *testing.T, e engine.Engine) {
	rng := rand.New(rand.NewPCG(5, 6))
	const B, N, H, hd = 2, 7, 3, 4
	C := H * hd
	s := engine.Shape{B: B, H: N, W: 1, C: 3 * C}
	x := randSlice(rng, s.Elems())
	y := e.ToHost(e.Attention(e.FromHost(x, s), H))
	want := make([]float64, B*N*C)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for i := 0; i < N; i++ {
				sc := make([]float64, N)
				mx := math.Inf(-1)
				for j := 0; j < N; j++ {
					for d := 0; d < hd; d++ {
						sc[j] += float64(x[(b*N+i)*3*C+h*hd+d]) * float64(x[(b*N+j)*3*C+C+h*hd+d])
					}
					sc[j] /= math.Sqrt(hd)
					mx = math.Max(mx, sc[j])
				}
				sum := 0.0
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for d := 0; d < hd; d++ {
					acc := 0.0
					for j := 0; j < N; j++ {
						acc += sc[j] / sum * float64(x[(b*N+j)*3*C+2*C+h*hd+d])
					}
					want[(b*N+i)*C+h*hd+d] = acc
				}
			}
		}
	}
	closeTo(t, "attention", y, want, 1e-5)
}

func testLayerNormGELUAndGeGLU(t *testing.T, e engine.Engine) {
	rng := rand.New(rand.NewPCG(7, 8))
	s := engine.Shape{B: 1, H: 3, W: 2, C: 5}
	x := randSlice(rng, s.Elems())
	g, b := randSlice(rng, 5), randSlice(rng, 5)
	y := e.ToHost(e.LayerNorm(e.FromHost(x, s), e.Vector(g), e.Vector(b), 1e-6))
	var want []float64
	for r := 0; r < s.Rows(); r++ {
		m, v := 0.0, 0.0
		for c := 0; c < 5; c++ {
			m += float64(x[r*5+c]) / 5
		}
		for c := 0; c < 5; c++ {
			d := float64(x[r*5+c]) - m
			v += d * d / 5
		}
		for c := 0; c < 5; c++ {
			want = append(want, (float64(x[r*5+c])-m)/math.Sqrt(v+1e-6)*float64(g[c])+float64(b[c]))
		}
	}
	closeTo(t, "layernorm", y, want, 1e-5)

	gl := e.ToHost(e.GELU(e.FromHost(x, s)))
	gg := e.ToHost(e.GeGLU(e.FromHost(x, s), e.FromHost(y, s)))
	want, want2 := want[:0:0], []float64(nil)
	for i, v := range x {
		f := float64(v)
		want = append(want, 0.5*f*(1+math.Erf(f/math.Sqrt2)))
		want2 = append(want2, 0.5*f*(1+math.Tanh(math.Sqrt(2/math.Pi)*(f+0.044715*f*f*f)))*float64(y[i]))
	}
	closeTo(t, "gelu", gl, want, 1e-6)
	closeTo(t, "geglu", gg, want2, 1e-6)
}

func testMatMulAndReductions(t *testing.T, e engine.Engine) {
	rng := rand.New(rand.NewPCG(11, 12))
	s := engine.Shape{B: 2, H: 3, W: 1, C: 7}
	x := randSlice(rng, s.Elems())
	// Narrow and wide layers (an engine may split wide ones by columns).
	for _, O := range []int{5, 300, 1031} {
		res := randSlice(rng, 2*3*O)
		w, b := randSlice(rng, O*7), randSlice(rng, O)
		lw := e.Linear(w, b, O, 7)
		y := e.ToHost(e.MatMul(e.FromHost(x, s), lw, nil))
		acc := e.MatMul(e.FromHost(x, s), lw, e.FromHost(res, engine.Shape{B: 2, H: 3, W: 1, C: O}))
		var want, wantAcc []float64
		for r := 0; r < 6; r++ {
			for o := 0; o < O; o++ {
				v := float64(b[o])
				for k := 0; k < 7; k++ {
					v += float64(x[r*7+k]) * float64(w[o*7+k])
				}
				want = append(want, v)
				wantAcc = append(wantAcc, v+float64(res[r*O+o]))
			}
		}
		closeTo(t, "matmul", y, want, 1e-5)
		closeTo(t, "matmul accumulate", e.ToHost(acc), wantAcc, 1e-5)
	}

	sum := e.ToHost(e.Add(e.FromHost(x, s), e.FromHost(x, s)))
	var wantSum []float64
	for _, v := range x {
		wantSum = append(wantSum, 2*float64(v))
	}
	closeTo(t, "add", sum, wantSum, 0)

	mean := e.ToHost(e.L2Normalize(e.MeanPositions(e.FromHost(x, s))))
	var wantMean []float64
	for bb := 0; bb < 2; bb++ {
		m := make([]float64, 7)
		n := 0.0
		for p := 0; p < 3; p++ {
			for c := range m {
				m[c] += float64(x[(bb*3+p)*7+c]) / 3
			}
		}
		for _, v := range m {
			n += v * v
		}
		for _, v := range m {
			wantMean = append(wantMean, v/math.Sqrt(n))
		}
	}
	closeTo(t, "mean + normalize", mean, wantMean, 1e-6)

	cl := e.ToHost(e.Clamp(e.FromHost(x, s), -0.5, 0.25))
	for i, v := range x {
		if want := min(max(v, -0.5), 0.25); cl[i] != want {
			t.Fatalf("clamp(%g) = %g", v, cl[i])
		}
	}
}

// testUpConv checks UpConv3x3 against the conv oracle on the explicitly
// upsampled input.
func testUpConv(t *testing.T, e engine.Engine) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, tc := range [][4]int{{16, 12, 3, 5}, {24, 8, 1, 1}, {4, 6, 2, 3}, {20, 20, 4, 2}} {
		in, out, h, w := tc[0], tc[1], tc[2], tc[3]
		s := engine.Shape{B: 2, H: h, W: w, C: in}
		x := randSlice(rng, s.Elems())
		up := engine.Shape{B: 2, H: 2 * h, W: 2 * w, C: in}
		xu := make([]float32, up.Elems())
		for b := 0; b < 2; b++ {
			for y := 0; y < 2*h; y++ {
				for xx := 0; xx < 2*w; xx++ {
					copy(xu[((b*2*h+y)*2*w+xx)*in:][:in], x[((b*h+y/2)*w+xx/2)*in:])
				}
			}
		}
		wt, bias := randSlice(rng, out*in*9), randSlice(rng, out)
		want, o := refConv(xu, up, wt, bias, out, 3, 3, 1, 1, 1)
		// Both weight kinds: UpConvWeight (as the models load
		// Upsample2d), and a plain Conv weight.
		for _, cw := range []engine.Weight{e.UpConvWeight(wt, bias, out, in), e.Conv(wt, bias, out, in, 3, 3, 1)} {
			y := e.UpConv3x3(e.FromHost(x, s), cw)
			if y.Shape() != o {
				t.Fatalf("%v: shape %+v, want %+v", tc, y.Shape(), o)
			}
			closeTo(t, "upconv", e.ToHost(y), want, 1e-4)
			e.Release(y)
		}
	}
}
