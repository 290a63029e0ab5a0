package unitok

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
)

// RealConfig is UniTok-Large's tokenizer core at its real widths.
var realConfig = Config{InDim: 1024, LatentDim: 64, NumCodebooks: 8, CodebookSize: 4096, NumHeads: 16}

var benchModel = sync.OnceValues(func() (*Model, error) { return SynthModel(realConfig, 1) })

func benchTokenizer(b *testing.B, device string, opts ...Option) *Tokenizer {
	b.Helper()
	m, err := benchModel()
	if err != nil {
		b.Fatal(err)
	}
	tok, err := New(m, append([]Option{WithDevice(device)}, opts...)...)
	if err != nil {
		if device != "cpu" && os.Getenv("UNITOK_REQUIRE_GPU") == "1" {
			b.Fatalf("UNITOK_REQUIRE_GPU=1 but device %s is unavailable: %v", device, err)
		}
		b.Skipf("device %s unavailable: %v", device, err)
	}
	b.Cleanup(func() { tok.Close() })
	return tok
}

func reportTokens(b *testing.B, tokens int) {
	end := time.Now()
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	benchTimeLog(b, end.Add(-b.Elapsed()), end)
}

var benchTimeLogMu sync.Mutex

// benchTimeLog appends "name b.N start_unix_ns end_unix_ns" for the timed
// loop to the file $UNITOK_BENCH_TIMELOG (when set), so that
// bench/device_check.sh can match its clock and throttle samples to each
// figure. The last line of a name is the run that was reported.
func benchTimeLog(b *testing.B, start, end time.Time) {
	path := os.Getenv("UNITOK_BENCH_TIMELOG")
	if path == "" {
		return
	}
	benchTimeLogMu.Lock()
	defer benchTimeLogMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Logf("bench time log: %v", err)
		return
	}
	fmt.Fprintf(f, "%s %d %d %d\n", b.Name(), b.N, start.UnixNano(), end.UnixNano())
	if err := f.Close(); err != nil {
		b.Logf("bench time log: %v", err)
	}
}

var (
	benchInputsMu sync.Mutex
	benchInputs   = map[string][]float32{}
)

// benchNormal is randNormal(seed, n), made once per (seed, n): the large
// inputs take longer to draw than to process.
func benchNormal(seed uint64, n int) []float32 {
	benchInputsMu.Lock()
	defer benchInputsMu.Unlock()
	key := fmt.Sprint(seed, "/", n)
	if v, ok := benchInputs[key]; ok {
		return v
	}
	v := randNormal(rand.New(rand.NewPCG(seed, seed)), n)
	benchInputs[key] = v
	return v
}

// benchQuantize, benchEncode and benchDecode are shared with the CUDA
// benchmarks: same shapes, same inputs, different device.
func benchQuantize(b *testing.B, device string, M int) {
	tok := benchTokenizer(b, device)
	z := benchNormal(1, M*realConfig.LatentDim)
	dst := make([]int32, M*realConfig.NumCodebooks)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tok.QuantizeInto(dst, z, M); err != nil {
			b.Fatal(err)
		}
	}
	reportTokens(b, M)
}

func benchEncode(b *testing.B, device string, B, N int, causal bool) {
	tok := benchTokenizer(b, device, WithCausal(causal))
	x := benchNormal(2, B*N*realConfig.InDim)
	dst := make([]int32, B*N*realConfig.NumCodebooks)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tok.EncodeInto(dst, x, B, N); err != nil {
			b.Fatal(err)
		}
	}
	reportTokens(b, B*N)
}

func benchDecode(b *testing.B, device string, B, N int) {
	tok := benchTokenizer(b, device)
	rng := rand.New(rand.NewPCG(3, 3))
	codes := make([]int32, B*N*realConfig.NumCodebooks)
	for i := range codes {
		codes[i] = int32(rng.IntN(realConfig.CodebookSize))
	}
	dst := make([]float32, B*N*realConfig.InDim)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tok.DecodeInto(dst, codes, B, N); err != nil {
			b.Fatal(err)
		}
	}
	reportTokens(b, B*N)
}

// Real widths: C=1024, D=64, K=8, V=4096, H=16, N=256 tokens per image.
func BenchmarkCPUQuantize(b *testing.B)     { benchQuantize(b, "cpu", 1024) }
func BenchmarkCPUEncode(b *testing.B)       { benchEncode(b, "cpu", 1, 256, false) }
func BenchmarkCPUEncodeCausal(b *testing.B) { benchEncode(b, "cpu", 1, 256, true) }
func BenchmarkCPUDecode(b *testing.B)       { benchDecode(b, "cpu", 1, 256) }
