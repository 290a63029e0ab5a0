//go:build cuda

package unitok

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireGPU skips the test, saying why, when no CUDA device is usable; with
// UNITOK_REQUIRE_GPU=1 (bench/device_check.sh on a GPU machine) that is a
// failure instead, so a run where the GPU tests did not run cannot pass.
func requireGPU(t testing.TB) Device {
	t.Helper()
	d, err := CUDADevice(0)
	if err != nil {
		noGPU(t, err)
	}
	return d
}

// gpuRequired reports whether UNITOK_REQUIRE_GPU asks that a missing GPU
// fail the tests and benchmarks rather than skip them.
func gpuRequired() bool { return os.Getenv("UNITOK_REQUIRE_GPU") == "1" }

func noGPU(t testing.TB, err error) {
	t.Helper()
	if gpuRequired() {
		t.Fatalf("UNITOK_REQUIRE_GPU=1 but no usable CUDA GPU: %v", err)
	}
	t.Skipf("no usable CUDA GPU: %v", err)
}

// emulated reports whether the library is the CPU emulation of the kernels
// (make emu-test), a test harness, not a GPU.
func emulated(d Device) bool { return strings.Contains(d.Name, "emulation") }

// Without a GPU the linked binary must report "no CUDA device" as a value.
func TestCUDANoDeviceIsClean(t *testing.T) {
	n, err := CUDADeviceCount()
	if err == nil && n > 0 {
		d, err := CUDADevice(0)
		require.NoError(t, err)
		free, total, err := d.MemInfo()
		require.NoError(t, err)
		t.Logf("%v; %.1f of %.1f GiB free; runtime %d, driver %d", d, float64(free)/(1<<30), float64(total)/(1<<30), d.RuntimeVersion, d.DriverVersion)
		return
	}
	if gpuRequired() {
		t.Fatalf("UNITOK_REQUIRE_GPU=1 but no usable CUDA GPU: %d device(s), %v", n, err)
	}
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrNoDevice), "want ErrNoDevice, got %v", err)
	var e *Error
	require.True(t, errors.As(err, &e))
	require.NotZero(t, e.CUDACode)
	t.Logf("no GPU here, as expected: %v", err)

	m, err := SynthModel(Config{InDim: 16, LatentDim: 8, NumCodebooks: 1, CodebookSize: 4, NumHeads: 2}, 1)
	require.NoError(t, err)
	_, err = New(m, WithDevice("cuda"))
	require.ErrorIs(t, err, ErrNoDevice)
	tok, err := New(m) // auto falls back to the CPU
	require.NoError(t, err)
	require.Equal(t, "cpu", tok.Device())
	require.NoError(t, tok.Close())
	require.Contains(t, Devices(), "cuda")
}

func TestCUDAErrorMapping(t *testing.T) {
	err := cudaError("cuda malloc", statusOutOfMemory, 2)
	require.ErrorIs(t, err, ErrOutOfMemory)
	require.Contains(t, err.Error(), "cudaErrorMemoryAllocation")
	require.True(t, strings.HasPrefix(err.Error(), "cuda malloc: "))
	err = cudaError("cuda device count", statusNoDevice, 100)
	require.ErrorIs(t, err, ErrNoDevice)
	require.Contains(t, err.Error(), "cudaErrorNoDevice")
	err = cudaError("encode", statusCUDA, 700)
	require.Contains(t, err.Error(), "cudaErrorIllegalAddress")
	var e *Error
	require.True(t, errors.As(err, &e))
	require.Equal(t, 700, e.CUDACode)
	require.Nil(t, e.Kind)
}

func TestCUDAResourcesNilSafe(t *testing.T) {
	var s *Stream
	var ev *Event
	var d *DeviceBuffer
	var h *HostBuffer
	require.NoError(t, s.Close())
	require.NoError(t, ev.Close())
	require.NoError(t, d.Close())
	require.NoError(t, h.Close())
	require.Zero(t, d.Len())
	require.Nil(t, h.Float32s())
}

func TestCUDAResourcesCloseTwice(t *testing.T) {
	requireGPU(t)
	s, err := NewStream(0)
	require.NoError(t, err)
	ev0, err := NewEvent(0)
	require.NoError(t, err)
	ev1, err := NewEvent(0)
	require.NoError(t, err)
	d, err := AllocDevice(0, 1024)
	require.NoError(t, err)
	h, err := AllocHost(1024)
	require.NoError(t, err)
	for i, v := range h.Int32s() {
		h.Int32s()[i] = int32(i) + 0*v
	}
	require.NoError(t, ev0.Record(s))
	require.NoError(t, CopyToDevice(d, 0, h, 0, 1024, s))
	require.NoError(t, Memset(d, 512, 0, 512, s))
	h2, err := AllocHost(1024)
	require.NoError(t, err)
	require.NoError(t, CopyToHost(h2, 0, d, 0, 1024, s))
	require.NoError(t, ev1.Record(s))
	require.NoError(t, s.Synchronize())
	require.NoError(t, ev1.Synchronize())
	_, err = ev1.Since(ev0)
	require.NoError(t, err)
	for i, v := range h2.Int32s() {
		want := int32(i)
		if i >= 128 {
			want = 0
		}
		require.Equal(t, want, v, "word %d", i)
	}
	require.ErrorIs(t, CopyToDevice(d, 1, h, 0, 1024, s), ErrBadInput)
	for _, c := range []interface{ Close() error }{s, ev0, ev1, d, h, h2} {
		require.NoError(t, c.Close())
		require.NoError(t, c.Close())
	}
	require.Nil(t, d.Ptr())
}

func TestCUDAConformance(t *testing.T) {
	requireGPU(t)
	runConformance(t, "cuda")
}

// cudaCase is one model shape for the CPU-vs-CUDA comparison.
type cudaCase struct {
	name string
	c    Config
	B, N int
}

var cudaCases = []cudaCase{
	// UniTok-Large: C=1024, D=64, K=8, V=4096, H=16 (hd 64), N=256.
	{"real", Config{InDim: 1024, LatentDim: 64, NumCodebooks: 8, CodebookSize: 4096, NumHeads: 16}, 2, 256},
	// d=10, V=1000, N=37 (not a multiple of the 32-row tiles), hd=24 with
	// adaptive pooling 24 -> 30 on the encode side.
	{"odd", Config{InDim: 96, LatentDim: 30, NumCodebooks: 3, CodebookSize: 1000, NumHeads: 4}, 3, 37},
	// hd=128 (the wide attention instance), V=777, d=8, N=70.
	{"hd128", Config{InDim: 256, LatentDim: 16, NumCodebooks: 2, CodebookSize: 777, NumHeads: 2}, 2, 70},
	// d=1, N=1, one image.
	{"tiny", Config{InDim: 8, LatentDim: 3, NumCodebooks: 3, CodebookSize: 5, NumHeads: 2}, 1, 1},
}

const (
	// cudaQuantMarginTol: quantize codes must equal the CPU engine's wherever
	// the float64 top-two gap exceeds this (the kernels follow the CPU's
	// float32 order, so in practice they match everywhere).
	cudaQuantMarginTol = 1e-5
	// cudaEncodeMarginTol: for encode, the latents themselves differ by
	// about 1e-6 relative between engines, so compare codes above this gap.
	cudaEncodeMarginTol = 1e-4
	// cudaFeatureRelTol bounds max|gpu-cpu| / max|cpu| for features.
	cudaFeatureRelTol = 1e-4
)

func relErrF(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		if math.IsNaN(float64(got[i])) {
			return math.Inf(1)
		}
		num = math.Max(num, math.Abs(float64(got[i])-float64(want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	if den == 0 {
		return num
	}
	return num / den
}

// compareCodes requires got == want wherever the float64 top-two margin of
// z exceeds tol: every code that differs from the CPU engine's must be a
// near-tie. Margins are computed only where the codes differ, so the check
// stays cheap at real sizes.
func compareCodes(t *testing.T, what string, m *Model, metric Metric, z []float32, got, want []int32, M int, tol float64) {
	t.Helper()
	K, d := m.NumCodebooks, m.ChunkDim()
	diff := 0
	for r := 0; r < M; r++ {
		for k := 0; k < K; k++ {
			i := r*K + k
			if got[i] < 0 || int(got[i]) >= m.CodebookSize {
				t.Fatalf("%s: code %d at row %d codebook %d out of range", what, got[i], r, k)
			}
			if got[i] == want[i] {
				continue
			}
			diff++
			_, margin := refArgmax(refScores(m, metric, k, z[r*K*d+k*d:r*K*d+(k+1)*d]))
			if margin > tol {
				t.Fatalf("%s: row %d codebook %d: code %d, CPU engine %d, float64 top-two margin %.3g > %g", what, r, k, got[i], want[i], margin, tol)
			}
		}
	}
	t.Logf("%s: %d codes, %d differ from the CPU engine (each a near-tie, margin <= %g)", what, M*K, diff, tol)
}

func TestCUDAMatchesCPU(t *testing.T) {
	dev := requireGPU(t)
	for _, tc := range cudaCases {
		if tc.name == "real" && emulated(dev) {
			t.Logf("real widths skipped under the CPU emulation (too slow)")
			continue
		}
		for _, causal := range []bool{false, true} {
			for _, metric := range []Metric{Cosine, L2} {
				name := fmt.Sprintf("%s/causal=%v/%v", tc.name, causal, metric)
				t.Run(name, func(t *testing.T) {
					c := tc.c
					c.Causal = causal
					m, err := SynthModel(c, 7)
					require.NoError(t, err)
					cpu, err := New(m, WithDevice("cpu"), WithMetric(metric))
					require.NoError(t, err)
					defer cpu.Close()
					gpu, err := New(m, WithDevice("cuda"), WithMetric(metric))
					require.NoError(t, err)
					defer gpu.Close()
					require.Equal(t, "cuda:0", gpu.Device())

					rng := rand.New(rand.NewPCG(uint64(len(name)), 11))
					B, N := tc.B, tc.N
					M, K, D := B*N, c.NumCodebooks, c.LatentDim
					x := randNormal(rng, M*c.InDim)

					// quant_proj
					zc, err := cpu.QuantProj(x, B, N)
					require.NoError(t, err)
					zg, err := gpu.QuantProj(x, B, N)
					require.NoError(t, err)
					e := relErrF(zg, zc)
					t.Logf("quant_proj relative error %.2e", e)
					require.Less(t, e, cudaFeatureRelTol, "quant_proj")

					// quantize on the CPU's latents
					want := poisoned(M * K)
					require.NoError(t, cpu.QuantizeInto(want, zc, M))
					got := poisoned(M * K)
					require.NoError(t, gpu.QuantizeInto(got, zc, M))
					compareCodes(t, "quantize", m, metric, zc, got, want, M, cudaQuantMarginTol)

					// quantize on fresh random latents (not projection outputs)
					zr := randNormal(rng, M*D)
					require.NoError(t, cpu.QuantizeInto(want, zr, M))
					got = poisoned(M * K)
					require.NoError(t, gpu.QuantizeInto(got, zr, M))
					compareCodes(t, "quantize random", m, metric, zr, got, want, M, cudaQuantMarginTol)

					// encode end to end
					require.NoError(t, cpu.EncodeInto(want, x, B, N))
					got = poisoned(M * K)
					require.NoError(t, gpu.EncodeInto(got, x, B, N))
					compareCodes(t, "encode", m, metric, zc, got, want, M, cudaEncodeMarginTol)

					// lookup: exact copies of the normalized codewords
					codes := make([]int32, M*K)
					for i := range codes {
						codes[i] = int32(rng.IntN(c.CodebookSize))
					}
					lc, err := cpu.Lookup(codes, M)
					require.NoError(t, err)
					lg := poisonedF(M * D)
					require.NoError(t, gpu.LookupInto(lg, codes, M))
					require.Equal(t, lc, lg, "lookup")

					// post_quant_proj and decode
					yc, err := cpu.PostQuantProj(lc, B, N)
					require.NoError(t, err)
					yg, err := gpu.PostQuantProj(lc, B, N)
					require.NoError(t, err)
					e = relErrF(yg, yc)
					t.Logf("post_quant_proj relative error %.2e", e)
					require.Less(t, e, cudaFeatureRelTol, "post_quant_proj")
					yd := poisonedF(M * c.InDim)
					require.NoError(t, gpu.DecodeInto(yd, codes, B, N))
					e = relErrF(yd, yc)
					t.Logf("decode relative error %.2e", e)
					require.Less(t, e, cudaFeatureRelTol, "decode")
				})
			}
		}
	}
}

func TestCUDAUsageHistogram(t *testing.T) {
	requireGPU(t)
	c := Config{InDim: 32, LatentDim: 16, NumCodebooks: 2, CodebookSize: 300, NumHeads: 2}
	m, err := SynthModel(c, 9)
	require.NoError(t, err)
	tok, err := New(m, WithDevice("cuda"))
	require.NoError(t, err)
	defer tok.Close()
	be := tok.be.(*cudaBackend)
	M := 5000
	z := randNormal(rand.New(rand.NewPCG(9, 9)), M*c.LatentDim)
	codes := poisoned(M * c.NumCodebooks)
	hist := make([]uint32, c.NumCodebooks*c.CodebookSize)
	require.NoError(t, be.quantizeRows("quantize", codes, hist, z, M))
	want := make([]uint32, len(hist))
	for i, v := range codes {
		want[(i%c.NumCodebooks)*c.CodebookSize+int(v)]++
	}
	require.Equal(t, want, hist)
}

func TestCUDAConcurrentCallsAgree(t *testing.T) {
	dev := requireGPU(t)
	c := Config{InDim: 128, LatentDim: 32, NumCodebooks: 4, CodebookSize: 512, NumHeads: 4}
	m, err := SynthModel(c, 4)
	require.NoError(t, err)
	tok, err := New(m, WithDevice("cuda"), WithStreams(3))
	require.NoError(t, err)
	B, N, n := 3, 50, 8
	if emulated(dev) {
		B, N, n = 1, 9, 4
	}
	inputs := make([][]float32, n)
	wants := make([][]int32, len(inputs))
	for i := range inputs {
		inputs[i] = randNormal(rand.New(rand.NewPCG(uint64(i), 1)), B*N*c.InDim)
		wants[i], err = tok.Encode(inputs[i], B, N)
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4*len(inputs))
	for g := range errs {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			i := g % len(inputs)
			got, err := tok.Encode(inputs[i], B, N)
			if err == nil {
				for j := range got {
					if got[j] != wants[i][j] {
						err = fmt.Errorf("input %d: code %d differs (%d vs %d)", i, j, got[j], wants[i][j])
						break
					}
				}
			}
			errs[g] = err
		}(g)
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, tok.Close())
	require.NoError(t, tok.Close())
	_, err = tok.Encode(inputs[0], B, N)
	require.ErrorIs(t, err, ErrClosed)
}

// ------------------------------------------------------------- benchmarks

// The sizes bench/device_check.sh measures: quantize M rows of latents,
// encode and decode B images of 256 tokens, real widths.
var (
	benchQuantRows = []int{65536, 262144, 1 << 20}
	benchImages    = []int{8, 64}
)

// End to end through the public API, from and to Go memory (host copies
// included): what a user sees.
func BenchmarkCUDAQuantize(b *testing.B) {
	for _, M := range benchQuantRows {
		b.Run(fmt.Sprintf("M=%d", M), func(b *testing.B) { benchQuantize(b, "cuda", M) })
	}
}

func BenchmarkCUDAEncode(b *testing.B) {
	for _, B := range benchImages {
		b.Run(fmt.Sprintf("B=%d", B), func(b *testing.B) { benchEncode(b, "cuda", B, 256, false) })
	}
}

func BenchmarkCUDAEncodeCausal(b *testing.B) {
	b.Run("B=64", func(b *testing.B) { benchEncode(b, "cuda", 64, 256, true) })
}

func BenchmarkCUDADecode(b *testing.B) {
	for _, B := range benchImages {
		b.Run(fmt.Sprintf("B=%d", B), func(b *testing.B) { benchDecode(b, "cuda", B, 256) })
	}
}

// Device-resident: inputs already on the GPU, as PyTorch's numbers are,
// timed with CUDA events around the loop (tokens/s); wall-tokens/s is the
// host clock over the same loop, synchronized.
func BenchmarkCUDAQuantizeResident(b *testing.B) {
	for _, M := range benchQuantRows {
		b.Run(fmt.Sprintf("M=%d", M), func(b *testing.B) { benchResident(b, "quantize", M, 1) })
	}
}

func BenchmarkCUDAEncodeResident(b *testing.B) {
	for _, B := range benchImages {
		b.Run(fmt.Sprintf("B=%d", B), func(b *testing.B) { benchResident(b, "encode", B, 256) })
	}
}

func BenchmarkCUDADecodeResident(b *testing.B) {
	for _, B := range benchImages {
		b.Run(fmt.Sprintf("B=%d", B), func(b *testing.B) { benchResident(b, "decode", B, 256) })
	}
}

func benchResident(b *testing.B, op string, B, N int) {
	tok := benchTokenizer(b, "cuda", WithStreams(1))
	be := tok.be.(*cudaBackend)
	c := be.m.Config
	M := B * N
	s, err := be.acquire(op)
	if err != nil {
		b.Fatal(err)
	}
	defer be.release(s)
	dev := be.dev.Ordinal
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	z := benchNormal(1, M*c.LatentDim)
	codes := make([]int32, M*c.NumCodebooks)
	for i := range codes {
		codes[i] = int32(rng.IntN(c.CodebookSize))
	}
	// stageIn reuses one pinned buffer: wait after each upload.
	if op == "encode" {
		x := benchNormal(2, M*c.InDim)
		must(be.stageIn(s, &s.in, f32ptr(x, 0), len(x)*4))
		must(s.stream.Synchronize())
	}
	must(be.stageIn(s, &s.lat, f32ptr(z, 0), len(z)*4))
	must(s.stream.Synchronize())
	must(be.stageIn(s, &s.codes, i32ptr(codes, 0), len(codes)*4))
	must(s.stream.Synchronize())
	if op == "decode" {
		must(growDevice(&s.out, dev, M*c.InDim*4))
	}
	step := func() error {
		switch op {
		case "quantize":
			return be.quantize(op, s, M, nil)
		case "encode":
			if err := be.project(op, s, &be.enc, s.in, s.lat, B, N); err != nil {
				return err
			}
			return be.quantize(op, s, M, nil)
		default:
			if err := be.lookup(op, s, M); err != nil {
				return err
			}
			return be.project(op, s, &be.dec, s.lat, s.out, B, N)
		}
	}
	must(step()) // warm up (sizes the workspace)
	must(s.stream.Synchronize())
	ev0, err := NewEvent(dev)
	must(err)
	defer ev0.Close()
	ev1, err := NewEvent(dev)
	must(err)
	defer ev1.Close()
	b.ResetTimer()
	start := time.Now()
	must(ev0.Record(s.stream))
	for i := 0; i < b.N; i++ {
		must(step())
	}
	must(ev1.Record(s.stream))
	must(s.stream.Synchronize())
	end := time.Now()
	b.StopTimer()
	gpu, err := ev1.Since(ev0)
	must(err)
	if gpu <= 0 && !emulated(be.dev) {
		b.Fatalf("CUDA events measured %v", gpu)
	}
	tokens := float64(M) * float64(b.N)
	if gpu > 0 {
		b.ReportMetric(tokens/gpu.Seconds(), "tokens/s")
		b.ReportMetric(gpu.Seconds()*1e3/float64(b.N), "gpu-ms/op")
	}
	b.ReportMetric(tokens/end.Sub(start).Seconds(), "wall-tokens/s")
	benchTimeLog(b, start, end)
}

// Many rows and codebooks select the four-tokens-per-thread instance of the
// d = 8 quantizer (the others use two); V = 19 leaves a partial chunk of 8.
func TestCUDAQuantizeManyRows(t *testing.T) {
	requireGPU(t)
	c := Config{InDim: 64, LatentDim: 512, NumCodebooks: 64, CodebookSize: 19, NumHeads: 8}
	for _, metric := range []Metric{Cosine, L2} {
		m, err := SynthModel(c, 12)
		require.NoError(t, err)
		cpu, err := New(m, WithDevice("cpu"), WithMetric(metric))
		require.NoError(t, err)
		gpu, err := New(m, WithDevice("cuda"), WithMetric(metric))
		require.NoError(t, err)
		M := 8192 + 37
		z := randNormal(rand.New(rand.NewPCG(12, uint64(metric))), M*c.LatentDim)
		want := poisoned(M * c.NumCodebooks)
		require.NoError(t, cpu.QuantizeInto(want, z, M))
		got := poisoned(M * c.NumCodebooks)
		require.NoError(t, gpu.QuantizeInto(got, z, M))
		compareCodes(t, "quantize "+metric.String(), m, metric, z, got, want, M, cudaQuantMarginTol)
		require.NoError(t, cpu.Close())
		require.NoError(t, gpu.Close())
	}
}

// Steady-state calls reuse the slot's buffers: no device, pinned or Go heap
// allocation.
func TestCUDASteadyStateAllocs(t *testing.T) {
	requireGPU(t)
	if os.Getenv("UNITOK_ASAN") != "" {
		t.Skip("allocation counts differ under -asan")
	}
	c := Config{InDim: 32, LatentDim: 16, NumCodebooks: 2, CodebookSize: 64, NumHeads: 2}
	m, err := SynthModel(c, 5)
	require.NoError(t, err)
	tok, err := New(m, WithDevice("cuda"), WithStreams(1))
	require.NoError(t, err)
	defer tok.Close()
	B, N := 2, 8
	x := randNormal(rand.New(rand.NewPCG(5, 6)), B*N*c.InDim)
	codes := make([]int32, B*N*c.NumCodebooks)
	feats := make([]float32, B*N*c.InDim)
	require.NoError(t, tok.EncodeInto(codes, x, B, N)) // sizes the buffers
	require.NoError(t, tok.DecodeInto(feats, codes, B, N))
	be := tok.be.(*cudaBackend)
	s := be.all[0]
	ws, in, out := s.ws, s.in, s.out
	allocs := testing.AllocsPerRun(3, func() {
		require.NoError(t, tok.EncodeInto(codes, x, B, N))
		require.NoError(t, tok.DecodeInto(feats, codes, B, N))
	})
	t.Logf("Go heap allocations per Encode+Decode: %.0f", allocs)
	require.Same(t, ws, s.ws, "workspace reallocated")
	require.Same(t, in, s.in)
	require.Same(t, out, s.out)
	require.Zero(t, allocs, "Go heap allocations in steady state")
}
