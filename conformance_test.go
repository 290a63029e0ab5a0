package unitok

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/unitok/unitok/internal/npy"
)

// The conformance suite: every backend is run against the fixtures that
// bench/torch_reference.py made with real PyTorch (testdata/fixtures, see
// bench/README_fixtures.md), causal and full, small and real widths.

const (
	// conformRelTol bounds latents and decoded features: max abs error over
	// max abs value of the PyTorch float32 result.
	conformRelTol = 1e-5
	// conformMarginTol: codes are compared wherever PyTorch's top-two score
	// gap exceeds this; below it float32 rounding may pick either codeword.
	conformMarginTol = 1e-5
)

type fixtureConfig struct {
	InDim        int    `json:"in_dim"`
	LatentDim    int    `json:"latent_dim"`
	NumCodebooks int    `json:"num_codebooks"`
	CodebookSize int    `json:"codebook_size"`
	NumHeads     int    `json:"num_heads"`
	Causal       bool   `json:"causal"`
	Seed         uint64 `json:"seed"`
}

func (f fixtureConfig) config() Config {
	return Config{InDim: f.InDim, LatentDim: f.LatentDim, NumCodebooks: f.NumCodebooks,
		CodebookSize: f.CodebookSize, NumHeads: f.NumHeads, Causal: f.Causal}
}

func fixtureDirs(t *testing.T) []string {
	dirs, err := filepath.Glob("testdata/fixtures/*")
	require.NoError(t, err)
	require.NotEmpty(t, dirs, "no fixtures under testdata/fixtures")
	return dirs
}

func readF32(t *testing.T, path string) ([]float32, []int) {
	t.Helper()
	a, err := npy.Open(path)
	require.NoError(t, err)
	defer a.Close()
	v, err := a.Float32()
	require.NoError(t, err)
	return append([]float32(nil), v...), a.Shape
}

func readI32(t *testing.T, path string) ([]int32, []int) {
	t.Helper()
	a, err := npy.Open(path)
	require.NoError(t, err)
	defer a.Close()
	v, err := a.Int32()
	require.NoError(t, err)
	return append([]int32(nil), v...), a.Shape
}

func relErr32(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i])-float64(want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	return num / den
}

// fixtureModel loads a case's weights: its safetensors checkpoint when it
// has one (and then checks that the Go synthetic generator reproduces it
// bit for bit), else the synthetic weights from config.json.
func fixtureModel(t *testing.T, dir string, fc fixtureConfig) *Model {
	synth, err := SynthModel(fc.config(), fc.Seed)
	require.NoError(t, err)
	path := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(path); err != nil {
		return synth
	}
	r, err := openCheckpoint(path)
	require.NoError(t, err)
	defer r.Close()
	m, err := LoadModel(r)
	require.NoError(t, err)
	require.Equal(t, fc.config(), m.Config, "config inferred from the checkpoint and its metadata")
	require.Equal(t, synth.QuantProj, m.QuantProj, "synthetic generator differs from the PyTorch-written weights")
	require.Equal(t, synth.PostQuantProj, m.PostQuantProj)
	require.Equal(t, synth.Codebooks, m.Codebooks)
	return m
}

// runConformance runs the fixture suite on one device ("cpu", "cuda").
func runConformance(t *testing.T, device string) {
	for _, dir := range fixtureDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
			require.NoError(t, err)
			var fc fixtureConfig
			require.NoError(t, json.Unmarshal(raw, &fc))
			m := fixtureModel(t, dir, fc)
			c := m.Config
			tok, err := New(m, WithDevice(device))
			require.NoError(t, err)
			defer tok.Close()
			l2, err := New(m, WithDevice(device), WithMetric(L2))
			require.NoError(t, err)
			defer l2.Close()

			x, xs := readF32(t, filepath.Join(dir, "features.npy"))
			require.Len(t, xs, 3)
			B, N := xs[0], xs[1]
			M, K := B*N, c.NumCodebooks
			latents, _ := readF32(t, filepath.Join(dir, "latents.npy"))
			codes, _ := readI32(t, filepath.Join(dir, "codes.npy"))
			margins, _ := readF32(t, filepath.Join(dir, "margins.npy"))
			l2codes, _ := readI32(t, filepath.Join(dir, "l2_codes.npy"))
			l2margins, _ := readF32(t, filepath.Join(dir, "l2_margins.npy"))
			lookup, _ := readF32(t, filepath.Join(dir, "lookup.npy"))
			decoded, _ := readF32(t, filepath.Join(dir, "decoded.npy"))

			compare := func(what string, got []int32, want []int32, margin []float32) {
				t.Helper()
				skipped := 0
				for i := range want {
					if float64(margin[i]) <= conformMarginTol {
						skipped++
						continue
					}
					require.Equal(t, want[i], got[i], "%s: token %d codebook %d (margin %.3g)", what, i/K, i%K, margin[i])
				}
				t.Logf("%s: %d of %d codes equal to PyTorch; %d left out with margin <= %g", what, len(want)-skipped, len(want), skipped, conformMarginTol)
			}

			// quant_proj
			z, err := tok.QuantProj(x, B, N)
			require.NoError(t, err)
			e := relErr32(z, latents)
			t.Logf("quant_proj relative error %.2e", e)
			require.Less(t, e, conformRelTol, "quant_proj")

			// quantize on PyTorch's latents, both metrics
			got := poisoned(M * K)
			require.NoError(t, tok.QuantizeInto(got, latents, M))
			compare("quantize cosine", got, codes, margins)
			got = poisoned(M * K)
			require.NoError(t, l2.QuantizeInto(got, latents, M))
			compare("quantize l2", got, l2codes, l2margins)

			// encode end to end
			got = poisoned(M * K)
			require.NoError(t, tok.EncodeInto(got, x, B, N))
			compare("encode", got, codes, margins)

			// lookup
			lat := poisonedF(M * c.LatentDim)
			require.NoError(t, tok.LookupInto(lat, codes, M))
			e = relErr32(lat, lookup)
			t.Logf("lookup relative error %.2e", e)
			require.Less(t, e, 1e-6, "lookup")

			// post_quant_proj and decode end to end
			y, err := tok.PostQuantProj(lookup, B, N)
			require.NoError(t, err)
			e = relErr32(y, decoded)
			t.Logf("post_quant_proj relative error %.2e", e)
			require.Less(t, e, conformRelTol, "post_quant_proj")
			y = poisonedF(M * c.InDim)
			require.NoError(t, tok.DecodeInto(y, codes, B, N))
			e = relErr32(y, decoded)
			t.Logf("decode relative error %.2e", e)
			require.Less(t, e, conformRelTol, "decode")
		})
	}
}

// poisoned returns a destination filled with a value no engine writes, so a
// skipped store shows up as a mismatch.
func poisoned(n int) []int32 {
	v := make([]int32, n)
	for i := range v {
		v[i] = -7
	}
	return v
}

func poisonedF(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.NaN())
	}
	return v
}

func TestConformanceCPU(t *testing.T) { runConformance(t, "cpu") }
