package unitok

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/cpu"
)

// quantMarginTol is the top-two score gap under which float32 rounding may
// legitimately pick either codeword; codes are compared only above it.
const quantMarginTol = 1e-5

func newCPU(t testing.TB, c Config, seed uint64, opts ...Option) (*Model, *Tokenizer) {
	t.Helper()
	m, err := SynthModel(c, seed)
	require.NoError(t, err)
	tok, err := New(m, append([]Option{WithDevice("cpu")}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return m, tok
}

// checkCodes compares codes (M, K) with the float64 oracle wherever the
// oracle's margin exceeds quantMarginTol and returns how many were skipped.
func checkCodes(t *testing.T, m *Model, metric Metric, z []float32, codes []int32, M int) (skipped int) {
	t.Helper()
	K, d := m.NumCodebooks, m.ChunkDim()
	for r := 0; r < M; r++ {
		for k := 0; k < K; k++ {
			want, margin := refArgmax(refScores(m, metric, k, z[r*K*d+k*d:r*K*d+(k+1)*d]))
			if margin <= quantMarginTol {
				skipped++
				continue
			}
			require.Equal(t, int32(want), codes[r*K+k], "row %d codebook %d (margin %.3g)", r, k, margin)
		}
	}
	return skipped
}

func TestQuantizeMatchesOracle(t *testing.T) {
	for ci, c := range append(testConfigs, Config{InDim: 64, LatentDim: 64, NumCodebooks: 8, CodebookSize: 4096, NumHeads: 1}) {
		for _, metric := range []Metric{Cosine, L2} {
			t.Run(fmt.Sprintf("cfg%d/%v", ci, metric), func(t *testing.T) {
				m, tok := newCPU(t, c, uint64(ci), WithMetric(metric))
				rng := rand.New(rand.NewPCG(uint64(ci), 99))
				M := 97
				z := randNormal(rng, M*c.LatentDim)
				if metric == L2 { // raw codewords are uniform in [-1,1); stay near them
					for i := range z {
						z[i] *= 0.5
					}
				}
				codes, err := tok.Quantize(z, M)
				require.NoError(t, err)
				skipped := checkCodes(t, m, metric, z, codes, M)
				require.Less(t, skipped, M*c.NumCodebooks/50, "too many near-ties skipped")
				t.Logf("%d of %d codes compared (margin > %g)", M*c.NumCodebooks-skipped, M*c.NumCodebooks, quantMarginTol)
			})
		}
	}
}

func TestQuantizeZeroVectorsAndTies(t *testing.T) {
	c := Config{InDim: 16, LatentDim: 16, NumCodebooks: 2, CodebookSize: 7, NumHeads: 1}
	m, err := SynthModel(c, 5)
	require.NoError(t, err)
	d := c.ChunkDim()
	// Codebook 1: codewords 2, 4 and 6 are copies of codeword 1 (scaled, so
	// their normalized forms are identical): any chunk tied between them must
	// pick index 1.
	cb := m.Codebooks[1]
	for _, j := range []int{2, 4, 6} {
		for t := 0; t < d; t++ {
			cb[j*d+t] = cb[d+t] * 2
		}
	}
	m.NormCodebooks[1] = normalizeRows(cb, d)
	tok, err := New(m, WithDevice("cpu"))
	require.NoError(t, err)
	defer tok.Close()

	z := make([]float32, 3*c.LatentDim)                  // row 0: all zero
	copy(z[c.LatentDim+d:], m.NormCodebooks[1][6*d:7*d]) // row 1, chunk 1: exactly codeword 6's direction
	copy(z[2*c.LatentDim:], m.NormCodebooks[0][3*d:4*d]) // row 2, chunk 0: codeword 3
	codes, err := tok.Quantize(z, 3)
	require.NoError(t, err)
	require.Equal(t, []int32{0, 0}, codes[0:2], "zero vector: every score is 0, ties go to index 0")
	require.Equal(t, int32(1), codes[3], "tied duplicates of codeword 1 resolve to the lowest index")
	require.Equal(t, int32(3), codes[4])
}

func TestCosineAndL2AgreeOnNormalizedCodebooks(t *testing.T) {
	c := Config{InDim: 64, LatentDim: 64, NumCodebooks: 8, CodebookSize: 300, NumHeads: 1}
	m, err := SynthModel(c, 11)
	require.NoError(t, err)
	for k := range m.Codebooks {
		m.Codebooks[k] = m.NormCodebooks[k]
	}
	cos, err := New(m, WithDevice("cpu"))
	require.NoError(t, err)
	l2, err := New(m, WithDevice("cpu"), WithMetric(L2))
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	M := 200
	z := randNormal(rng, M*c.LatentDim)
	// Unit-length chunks make |z - e|^2 = 2 - 2 z.e exactly in real arithmetic.
	m2 := *m
	for r := 0; r < M*c.NumCodebooks; r++ {
		copy(z[r*8:(r+1)*8], normalizeRows(z[r*8:(r+1)*8], 8))
	}
	a, err := cos.Quantize(z, M)
	require.NoError(t, err)
	b, err := l2.Quantize(z, M)
	require.NoError(t, err)
	differ := 0
	for i := range a {
		if a[i] != b[i] {
			_, margin := refArgmax(refScores(&m2, Cosine, i%8, z[i*8:(i+1)*8]))
			require.LessOrEqual(t, margin, quantMarginTol, "metrics disagree at %d with margin %g", i, margin)
			differ++
		}
	}
	t.Logf("%d of %d codes differ, all within float32 noise", differ, len(a))
}

func TestLookupReturnsNormalizedCodewords(t *testing.T) {
	c := Config{InDim: 48, LatentDim: 16, NumCodebooks: 4, CodebookSize: 100, NumHeads: 4}
	m, tok := newCPU(t, c, 3)
	rng := rand.New(rand.NewPCG(3, 3))
	M := 33
	codes := make([]int32, M*c.NumCodebooks)
	for i := range codes {
		codes[i] = int32(rng.IntN(c.CodebookSize))
	}
	z, err := tok.Lookup(codes, M)
	require.NoError(t, err)
	d := c.ChunkDim()
	for i, code := range codes {
		want := m.NormCodebooks[i%c.NumCodebooks][int(code)*d : (int(code)+1)*d]
		require.Equal(t, want, z[i*d:(i+1)*d])
		var n float64
		for _, v := range want {
			n += float64(v) * float64(v)
		}
		require.InDelta(t, 1, n, 1e-6)
	}
	// A codeword is its own nearest codeword.
	back, err := tok.Quantize(z, M)
	require.NoError(t, err)
	require.Equal(t, codes, back)
}

func TestCodebookMajorLayout(t *testing.T) {
	c := Config{InDim: 48, LatentDim: 16, NumCodebooks: 4, CodebookSize: 100, NumHeads: 4, Causal: true}
	_, bnk := newCPU(t, c, 1)
	_, bkn := newCPU(t, c, 1, WithLayout(CodebookMajor))
	rng := rand.New(rand.NewPCG(4, 4))
	B, N, K := 2, 5, c.NumCodebooks
	x := randNormal(rng, B*N*c.InDim)
	a, err := bnk.Encode(x, B, N)
	require.NoError(t, err)
	b, err := bkn.Encode(x, B, N)
	require.NoError(t, err)
	for bi := 0; bi < B; bi++ {
		for n := 0; n < N; n++ {
			for k := 0; k < K; k++ {
				require.Equal(t, a[(bi*N+n)*K+k], b[(bi*K+k)*N+n])
			}
		}
	}
	ya, err := bnk.Decode(a, B, N)
	require.NoError(t, err)
	yb, err := bkn.Decode(b, B, N)
	require.NoError(t, err)
	require.Equal(t, ya, yb)
}

func TestEncodeIsQuantProjThenQuantize(t *testing.T) {
	c := Config{InDim: 64, LatentDim: 16, NumCodebooks: 2, CodebookSize: 37, NumHeads: 2}
	_, tok := newCPU(t, c, 8)
	rng := rand.New(rand.NewPCG(8, 8))
	// B large enough to span several projection chunks.
	B, N := 2*cpu.ImagesPerChunk(7)+1, 7
	x := randNormal(rng, B*N*c.InDim)
	codes, err := tok.Encode(x, B, N)
	require.NoError(t, err)
	z, err := tok.QuantProj(x, B, N)
	require.NoError(t, err)
	want, err := tok.Quantize(z, B*N)
	require.NoError(t, err)
	require.Equal(t, want, codes)
	y, err := tok.Decode(codes, B, N)
	require.NoError(t, err)
	lat, err := tok.Lookup(codes, B*N)
	require.NoError(t, err)
	want2, err := tok.PostQuantProj(lat, B, N)
	require.NoError(t, err)
	require.Equal(t, want2, y)
}

func TestBadInputErrors(t *testing.T) {
	c := Config{InDim: 48, LatentDim: 16, NumCodebooks: 4, CodebookSize: 100, NumHeads: 4}
	_, tok := newCPU(t, c, 1)
	x := make([]float32, 2*3*48)
	x[50] = float32(nanF())
	_, err := tok.Encode(x, 2, 3)
	require.ErrorIs(t, err, ErrBadInput)
	require.ErrorContains(t, err, "non-finite value NaN at row 1, column 2")
	_, err = tok.Encode(x[:10], 2, 3)
	require.ErrorContains(t, err, "features: have 10 values, want 2 x 3 x 48 = 288")
	_, err = tok.Decode([]int32{0, 1, 2, 100}, 1, 1)
	require.ErrorContains(t, err, "code 100 at flat index 3 (codebook 3) is out of range [0, 100)")
	_, err = tok.Lookup([]int32{0, -1, 2, 3}, 1)
	require.ErrorContains(t, err, "out of range")
	_, err = tok.Quantize(make([]float32, 15), 1)
	require.ErrorContains(t, err, "latents: have 15 values")
	_, err = tok.Encode(nil, 0, 3)
	require.ErrorContains(t, err, "must be positive")
	require.NoError(t, tok.Close())
	require.NoError(t, tok.Close())
	_, err = tok.Quantize(make([]float32, 16), 1)
	require.ErrorIs(t, err, ErrClosed)
	var nilTok *Tokenizer
	require.NoError(t, nilTok.Close())
	_, err = New(nil)
	require.ErrorIs(t, err, ErrBadInput)
	_, err = New(&Model{Config: Config{InDim: 48, LatentDim: 16, NumCodebooks: 3, CodebookSize: 5, NumHeads: 4}})
	require.ErrorContains(t, err, "not divisible by 3 codebooks")
	m, _ := SynthModel(c, 1)
	_, err = New(m, WithDevice("tpu"))
	require.ErrorContains(t, err, `unknown device "tpu"`)
}

func TestConcurrentCallsAgree(t *testing.T) {
	c := Config{InDim: 64, LatentDim: 16, NumCodebooks: 8, CodebookSize: 50, NumHeads: 4, Causal: true}
	_, tok := newCPU(t, c, 2)
	rng := rand.New(rand.NewPCG(5, 5))
	const G = 8
	inputs := make([][]float32, G)
	want := make([][]int32, G)
	for g := range inputs {
		inputs[g] = randNormal(rng, 2*9*c.InDim)
		var err error
		want[g], err = tok.Encode(inputs[g], 2, 9)
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, G*4)
	for g := 0; g < G; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for it := 0; it < 4; it++ {
				got, err := tok.Encode(inputs[g], 2, 9)
				if err == nil && fmt.Sprint(got) != fmt.Sprint(want[g]) {
					err = errors.New("concurrent encode differs")
				}
				if err == nil {
					_, err = tok.Decode(got, 2, 9)
				}
				if err != nil {
					errs <- err
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
