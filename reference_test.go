package unitok

import "math"

// A deliberately naive float64 implementation of section 1 of DESIGN.md,
// written straight from the formulas, as an oracle independent of the
// engine's blocking, threading and float32 rounding.

func refLinear(x []float64, R int, l *Linear) []float64 {
	y := make([]float64, R*l.Out)
	for r := 0; r < R; r++ {
		for o := 0; o < l.Out; o++ {
			s := 0.0
			if l.Bias != nil {
				s = float64(l.Bias[o])
			}
			for i := 0; i < l.In; i++ {
				s += x[r*l.In+i] * float64(l.Weight[o*l.In+i])
			}
			y[r*l.Out+o] = s
		}
	}
	return y
}

func refLayerNorm(x []float64, R int, ln *LayerNorm) []float64 {
	n := len(ln.Weight)
	y := make([]float64, len(x))
	for r := 0; r < R; r++ {
		row := x[r*n : (r+1)*n]
		m := 0.0
		for _, v := range row {
			m += v
		}
		m /= float64(n)
		v2 := 0.0
		for _, v := range row {
			v2 += (v - m) * (v - m)
		}
		v2 /= float64(n)
		for i, v := range row {
			y[r*n+i] = (v-m)/math.Sqrt(v2+float64(ln.Eps))*float64(ln.Weight[i]) + float64(ln.Bias[i])
		}
	}
	return y
}

func refProject(p *AttnProjection, x []float64, B, N int, causal bool) []float64 {
	R := B * N
	H, hd := p.Heads, p.HeadDim
	W := H * hd
	qkv := refLinear(refLayerNorm(x, R, &p.Norm1), R, &p.QKV)
	aw := W
	if p.In > p.Out {
		aw = hd
	}
	a := make([]float64, R*aw)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for i := 0; i < N; i++ {
				q := qkv[(b*N+i)*3*W+h*hd:]
				sc := make([]float64, N)
				mx := math.Inf(-1)
				for j := 0; j < N; j++ {
					if causal && j > i {
						sc[j] = math.Inf(-1)
						continue
					}
					k := qkv[(b*N+j)*3*W+W+h*hd:]
					s := 0.0
					for t := 0; t < hd; t++ {
						s += q[t] * k[t]
					}
					sc[j] = s / math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				sum := 0.0
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for t := 0; t < hd; t++ {
					o := 0.0
					for j := 0; j < N; j++ {
						o += sc[j] / sum * qkv[(b*N+j)*3*W+2*W+h*hd+t]
					}
					if p.In > p.Out {
						a[(b*N+i)*hd+t] += o / float64(H)
					} else {
						a[(b*N+i)*W+h*hd+t] = o
					}
				}
			}
		}
	}
	if p.In > p.Out && hd != p.Out {
		pooled := make([]float64, R*p.Out)
		for r := 0; r < R; r++ {
			for i := 0; i < p.Out; i++ {
				s := int(math.Floor(float64(i*hd) / float64(p.Out)))
				e := int(math.Ceil(float64((i+1)*hd) / float64(p.Out)))
				acc := 0.0
				for t := s; t < e; t++ {
					acc += a[r*hd+t]
				}
				pooled[r*p.Out+i] = acc / float64(e-s)
			}
		}
		a = pooled
	}
	x1 := refLinear(a, R, &p.AttnProj)
	pr := refLinear(refLayerNorm(x, R, &p.Norm3), R, &p.Proj)
	for i := range x1 {
		x1[i] += pr[i]
	}
	h := refLayerNorm(refLayerNorm(x1, R, &p.Norm2), R, &p.MLPNorm)
	g0, g1 := refLinear(h, R, &p.W0), refLinear(h, R, &p.W1)
	for i := range g0 {
		v := g0[i]
		g0[i] = 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v))) * g1[i]
	}
	y := refLinear(g0, R, &p.W2)
	for i := range y {
		y[i] += x1[i]
	}
	return y
}

// refScores returns, for one chunk z, every codeword's score under the
// metric in float64: cosine similarity with the normalized codeword, or the
// negated squared distance to the raw codeword (so argmax is best for both).
func refScores(m *Model, metric Metric, k int, z []float32) []float64 {
	d := m.ChunkDim()
	out := make([]float64, m.CodebookSize)
	for j := range out {
		s := 0.0
		for t := 0; t < d; t++ {
			if metric == L2 {
				diff := float64(z[t]) - float64(m.Codebooks[k][j*d+t])
				s -= diff * diff
			} else {
				s += float64(z[t]) * float64(m.NormCodebooks[k][j*d+t])
			}
		}
		out[j] = s
	}
	return out
}

// refArgmax returns the best index (lowest on ties) and the gap to the
// runner-up.
func refArgmax(s []float64) (int, float64) {
	best, second := 0, -1
	for j := 1; j < len(s); j++ {
		if s[j] > s[best] {
			best, second = j, best
		} else if second < 0 || s[j] > s[second] {
			second = j
		}
	}
	if second < 0 {
		return best, math.Inf(1)
	}
	return best, s[best] - s[second]
}

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}
