//go:build cuda

package unitok

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// The kernel instances the benchmarks run, tested where they run: each
// variant forced on a small input (for compute-sanitizer and the CPU
// emulation), and the real sizes on a real GPU (the big tests), which also
// assert that the size-based choice picks the instance the variant test
// covers.

// envInt reads a positive integer from the environment, or def.
func envInt(t testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	require.Positive(t, n, name)
	return n
}

// bigOK skips a big test under the CPU emulation unless UNITOK_EMU_BIG=1.
func bigOK(t *testing.T, dev Device) {
	if emulated(dev) && os.Getenv("UNITOK_EMU_BIG") == "" {
		t.Skip("real sizes under the CPU emulation only with UNITOK_EMU_BIG=1 (slow)")
	}
}

// fakeDevPtr is an address no test dereferences: the C API validates
// arguments (alignment included) before it touches a device, so these
// tests need neither a GPU nor the emulation. Above 64 KiB so that the Go
// runtime does not take it for a bad pointer.
func fakeDevPtr(off uintptr) unsafe.Pointer { return unsafe.Add(unsafe.Pointer(nil), 1<<20+off) }

// The size-based choices, as the benchmarks meet them. Host-side logic only.
func TestCUDAVariantChoice(t *testing.T) {
	q := quantLaunch{K: 8, V: 4096, d: 8, z: fakeDevPtr(0), words: fakeDevPtr(0), codes: fakeDevPtr(0)}
	for _, c := range []struct{ M, want int }{
		{64 * 256, quantD8Tok2}, // the old benchmark size: two tokens per thread
		{65536, quantD8Tok4},    // from here on: four per thread
		{262144, quantD8Tok4},
		{1 << 20, quantD8Tok4},
		{65536 - 512, quantD8Tok2}, // 127 blocks x 8 codebooks < 1024
	} {
		q.M = c.M
		require.Equal(t, c.want, quantVariant(q), "M=%d", c.M)
	}
	q.M = 100
	q.d = 10
	require.Equal(t, quantGeneral, quantVariant(q), "d=10")
	q.variant = quantD8Tok4
	require.Zero(t, quantVariant(q), "a d=8 instance forced with d=10 is invalid")
	q.d = 8
	require.Equal(t, quantD8Tok4, quantVariant(q), "forced")
	q.variant = quantGeneral
	require.Equal(t, quantGeneral, quantVariant(q), "forced general at d=8")
	q.variant = 3
	require.Zero(t, quantVariant(q), "unknown variant")

	m, err := SynthModel(Config{InDim: 1024, LatentDim: 64, NumCodebooks: 8, CodebookSize: 16, NumHeads: 16}, 1)
	require.NoError(t, err)
	for _, c := range []struct {
		name     string
		p        *AttnProjection
		B        int
		forced   int
		want     [5]int
		wantNote string
	}{
		{"encode B=64", &m.QuantProj, 64, 0, [5]int{128, 64, 64, 64, 64}, "qkv on 128x128"},
		{"decode B=64", &m.PostQuantProj, 64, 0, [5]int{128, 128, 128, 128, 128}, "all on 128x128"},
		{"encode B=8", &m.QuantProj, 8, 0, [5]int{128, 64, 64, 64, 64}, ""},
		{"decode B=8", &m.PostQuantProj, 8, 0, [5]int{128, 64, 64, 128, 64}, ""},
		{"encode B=2", &m.QuantProj, 2, 0, [5]int{64, 64, 64, 64, 64}, "the old test size never reached 128x128"},
		{"decode B=1 forced 128", &m.PostQuantProj, 1, 128, [5]int{128, 128, 128, 128, 128}, ""},
		{"decode B=64 forced 64", &m.PostQuantProj, 64, 64, [5]int{64, 64, 64, 64, 64}, ""},
	} {
		got, err := projGemmTiles(c.p, c.B, 256, c.forced)
		require.NoError(t, err, c.name)
		require.Equal(t, c.want, got, "%s: tiles of qkv, attn_proj, proj, w0/w1, w2", c.name)
	}
	_, err = projGemmTiles(&m.QuantProj, 1, 256, 96)
	require.ErrorIs(t, err, ErrBadInput)
}

// The d = 8 kernels read codewords as float4: a pointer off by 4 bytes is
// refused with a clear status before anything runs (a GPU would fault).
func TestCUDAMisalignedWords(t *testing.T) {
	q := quantLaunch{M: 100, K: 2, V: 64, d: 8, z: fakeDevPtr(4), words: fakeDevPtr(4), codes: fakeDevPtr(4)}
	for _, v := range []int{quantAuto, quantD8Tok2, quantD8Tok4} {
		q.variant = v
		err := launchQuantize("quantize", q, nil)
		require.ErrorIs(t, err, ErrBadInput, "variant %d", v)
		var e *Error
		require.True(t, errors.As(err, &e))
		require.Equal(t, statusMisaligned, e.Status)
		require.Contains(t, err.Error(), "16-byte aligned")
	}
	// z and codes are read and written as scalars: only words must be aligned.
	// (Checked without a launch: an invalid d makes the call stop earlier.)
	q.variant = quantAuto
	q.d = 0
	err := launchQuantize("quantize", q, nil)
	var e *Error
	require.True(t, errors.As(err, &e))
	require.NotEqual(t, statusMisaligned, e.Status, "argument checks come first")
}

// quantVariantName is for test names.
func quantVariantName(v int) string {
	switch v {
	case quantGeneral:
		return "general"
	case quantD8Tok2:
		return "d8x2"
	case quantD8Tok4:
		return "d8x4"
	}
	return "auto"
}

// A small instance of every kernel variant, each forced: the quantizer's
// d = 8 instances (two and four tokens per thread) and general-d instance
// over several codeword tiles with a partial last tile and an odd M, and
// the projections with 64x64 and 128x128 GEMM tiles, causal and full,
// head dims 24 (mean over heads + pooling on encode) and 128, odd N. Small
// enough for compute-sanitizer and the CPU emulation.
func TestCUDAVariants(t *testing.T) {
	dev := requireGPU(t)
	t.Run("quantize", func(t *testing.T) {
		// V = 1037: two full 512-codeword tiles and 13 more (13 % 8 = 5, the
		// scalar tail); M = 1061: three blocks of 512 tokens at four per thread.
		c8 := Config{InDim: 32, LatentDim: 16, NumCodebooks: 2, CodebookSize: 1037, NumHeads: 2}
		// d = 10, V = 1000: three general-path tiles of 409 codewords.
		c10 := Config{InDim: 40, LatentDim: 30, NumCodebooks: 3, CodebookSize: 1000, NumHeads: 2}
		cases := []struct {
			c       Config
			M       int
			variant int
		}{
			{c8, 1061, quantD8Tok4},
			{c8, 1061, quantD8Tok2},
			{c8, 301, quantGeneral},
			{c10, 301, quantAuto},
		}
		for _, tc := range cases {
			for _, metric := range []Metric{Cosine, L2} {
				name := fmt.Sprintf("d=%d/%s/%v", tc.c.ChunkDim(), quantVariantName(tc.variant), metric)
				t.Run(name, func(t *testing.T) {
					m, err := SynthModel(tc.c, 21)
					require.NoError(t, err)
					cpu, err := New(m, WithDevice("cpu"), WithMetric(metric))
					require.NoError(t, err)
					defer cpu.Close()
					gpu, err := New(m, WithDevice("cuda"), WithMetric(metric), WithStreams(1))
					require.NoError(t, err)
					defer gpu.Close()
					be := gpu.be.(*cudaBackend)
					be.quantVariant = tc.variant
					K := tc.c.NumCodebooks
					z := randNormal(rand.New(rand.NewPCG(uint64(tc.M), uint64(tc.variant))), tc.M*tc.c.LatentDim)
					want := poisoned(tc.M * K)
					require.NoError(t, cpu.QuantizeInto(want, z, tc.M))
					got := poisoned(tc.M * K)
					hist := make([]uint32, K*tc.c.CodebookSize)
					require.NoError(t, be.quantizeRows("quantize", got, hist, z, tc.M))
					wantV := tc.variant
					if wantV == quantAuto {
						wantV = quantGeneral
					}
					require.Equal(t, wantV, quantVariant(be.quantLaunch(be.all[0], tc.M, nil)), "instance that ran")
					compareCodes(t, "quantize", m, metric, z, got, want, tc.M, cudaQuantMarginTol)
					wantHist := make([]uint32, len(hist))
					for i, v := range got {
						wantHist[(i%K)*tc.c.CodebookSize+int(v)]++
					}
					require.Equal(t, wantHist, hist, "usage histogram")
				})
			}
		}
	})
	t.Run("project", func(t *testing.T) {
		cases := []struct {
			name string
			c    Config
			B, N int
		}{
			// hd = 24: encode averages the heads and pools 24 -> 30.
			{"hd24", Config{InDim: 96, LatentDim: 30, NumCodebooks: 3, CodebookSize: 100, NumHeads: 4}, 2, 33},
			// hd = 128: the wide attention instance.
			{"hd128", Config{InDim: 256, LatentDim: 16, NumCodebooks: 2, CodebookSize: 64, NumHeads: 2}, 1, 37},
		}
		tiles := []int{64, 128}
		if emulated(dev) {
			// Keeps the emulation quick: N = 17 is still not a multiple of 32,
			// and TestCUDAMatchesCPU covers the 64x64 tile there.
			cases[0].N = 17
			tiles = []int{128}
		}
		for _, tc := range cases {
			for _, tile := range tiles {
				for _, causal := range []bool{false, true} {
					if tc.name == "hd128" && causal && emulated(dev) {
						continue
					}
					name := fmt.Sprintf("%s/tile=%d/causal=%v", tc.name, tile, causal)
					t.Run(name, func(t *testing.T) {
						c := tc.c
						c.Causal = causal
						m, err := SynthModel(c, 5)
						require.NoError(t, err)
						cpu, err := New(m, WithDevice("cpu"))
						require.NoError(t, err)
						defer cpu.Close()
						gpu, err := New(m, WithDevice("cuda"), WithStreams(1))
						require.NoError(t, err)
						defer gpu.Close()
						gpu.be.(*cudaBackend).gemmTile = tile
						B, N := tc.B, tc.N
						for _, p := range []*AttnProjection{&m.QuantProj, &m.PostQuantProj} {
							tiles, err := projGemmTiles(p, B, N, tile)
							require.NoError(t, err)
							require.Equal(t, [5]int{tile, tile, tile, tile, tile}, tiles)
						}
						x := randNormal(rand.New(rand.NewPCG(uint64(tile), 5)), B*N*c.InDim)
						zc, err := cpu.QuantProj(x, B, N)
						require.NoError(t, err)
						if !emulated(dev) {
							zg, err := gpu.QuantProj(x, B, N)
							require.NoError(t, err)
							require.Less(t, relErrF(zg, zc), cudaFeatureRelTol, "quant_proj")
						}
						want, err := cpu.Encode(x, B, N)
						require.NoError(t, err)
						got := poisoned(len(want))
						require.NoError(t, gpu.EncodeInto(got, x, B, N))
						compareCodes(t, "encode", m, Cosine, zc, got, want, B*N, cudaEncodeMarginTol)
						yc, err := cpu.Decode(want, B, N)
						require.NoError(t, err)
						yg := poisonedF(len(yc))
						require.NoError(t, gpu.DecodeInto(yg, want, B, N))
						e := relErrF(yg, yc)
						t.Logf("decode relative error %.2e", e)
						require.Less(t, e, cudaFeatureRelTol, "decode")
					})
				}
			}
		}
	})
}

// The benchmarked quantizer at its real size: K = 8, V = 4096 (eight
// 512-codeword tiles), d = 8, M = 65,536 rows (UNITOK_BIG_M), which selects
// four tokens per thread, against the CPU engine, cosine and L2.
func TestCUDARealQuantize(t *testing.T) {
	dev := requireGPU(t)
	bigOK(t, dev)
	M := envInt(t, "UNITOK_BIG_M", 65536)
	m, err := benchModel()
	require.NoError(t, err)
	for _, metric := range []Metric{Cosine, L2} {
		t.Run(metric.String(), func(t *testing.T) {
			cpu, err := New(m, WithDevice("cpu"), WithMetric(metric))
			require.NoError(t, err)
			defer cpu.Close()
			gpu, err := New(m, WithDevice("cuda"), WithMetric(metric), WithStreams(1))
			require.NoError(t, err)
			defer gpu.Close()
			K := m.NumCodebooks
			z := randNormal(rand.New(rand.NewPCG(uint64(M), uint64(metric))), M*m.LatentDim)
			got := poisoned(M * K)
			require.NoError(t, gpu.QuantizeInto(got, z, M))
			be := gpu.be.(*cudaBackend)
			v := quantVariant(be.quantLaunch(be.all[0], min(M, cudaQuantChunkRows), nil))
			t.Logf("M=%d ran the %s instance over %d codeword tiles", M, quantVariantName(v), (m.CodebookSize+511)/512)
			if M >= 65536 {
				require.Equal(t, quantD8Tok4, v, "the benchmarked instance")
			}
			want := poisoned(M * K)
			require.NoError(t, cpu.QuantizeInto(want, z, M))
			compareCodes(t, "quantize", m, metric, z, got, want, M, cudaQuantMarginTol)
		})
	}
}

// The benchmarked projections at their real size: encode and decode of
// B = 64 images (UNITOK_BIG_B) of 256 tokens, real widths, where the wide
// GEMMs run on 128x128 tiles, against the CPU engine on three of the images
// (images are independent: attention stays within one).
func TestCUDARealEncodeDecode(t *testing.T) {
	dev := requireGPU(t)
	bigOK(t, dev)
	B, N := envInt(t, "UNITOK_BIG_B", 64), 256
	m, err := benchModel()
	require.NoError(t, err)
	C, K := m.InDim, m.NumCodebooks
	enc, err := projGemmTiles(&m.QuantProj, B, N, 0)
	require.NoError(t, err)
	dec, err := projGemmTiles(&m.PostQuantProj, B, N, 0)
	require.NoError(t, err)
	t.Logf("B=%d: GEMM tiles encode %v, decode %v (qkv, attn_proj, proj, w0/w1, w2)", B, enc, dec)
	if B >= 8 {
		require.Equal(t, 128, enc[0], "encode's qkv GEMM on 128x128 tiles")
		require.Equal(t, 128, dec[0], "decode's qkv GEMM on 128x128 tiles")
	}
	images := []int{0, B / 2, B - 1}
	rng := rand.New(rand.NewPCG(uint64(B), 64))
	x := randNormal(rng, B*N*C)
	for _, causal := range []bool{false, true} {
		for _, metric := range []Metric{Cosine, L2} {
			t.Run(fmt.Sprintf("causal=%v/%v", causal, metric), func(t *testing.T) {
				cpu, err := New(m, WithDevice("cpu"), WithMetric(metric), WithCausal(causal))
				require.NoError(t, err)
				defer cpu.Close()
				gpu, err := New(m, WithDevice("cuda"), WithMetric(metric), WithCausal(causal), WithStreams(1))
				require.NoError(t, err)
				defer gpu.Close()
				got := poisoned(B * N * K)
				require.NoError(t, gpu.EncodeInto(got, x, B, N))
				for _, img := range images {
					xi := x[img*N*C : (img+1)*N*C]
					zc, err := cpu.QuantProj(xi, 1, N)
					require.NoError(t, err)
					want := poisoned(N * K)
					require.NoError(t, cpu.EncodeInto(want, xi, 1, N))
					compareCodes(t, fmt.Sprintf("encode image %d", img), m, metric, zc, got[img*N*K:(img+1)*N*K], want, N, cudaEncodeMarginTol)
				}
				if metric == L2 {
					return // decode does not depend on the metric
				}
				codes := make([]int32, B*N*K)
				for i := range codes {
					codes[i] = int32(rng.IntN(m.CodebookSize))
				}
				y := poisonedF(B * N * C)
				require.NoError(t, gpu.DecodeInto(y, codes, B, N))
				for _, img := range images {
					yc, err := cpu.Decode(codes[img*N*K:(img+1)*N*K], 1, N)
					require.NoError(t, err)
					e := relErrF(y[img*N*C:(img+1)*N*C], yc)
					t.Logf("decode image %d: relative error %.2e", img, e)
					require.Less(t, e, cudaFeatureRelTol, "decode image %d", img)
				}
			})
		}
	}
}
