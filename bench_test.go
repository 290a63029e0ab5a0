package unitok

import (
	"math/rand/v2"
	"sync"
	"testing"
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
		b.Skipf("device %s unavailable: %v", device, err)
	}
	b.Cleanup(func() { tok.Close() })
	return tok
}

func reportTokens(b *testing.B, tokens int) {
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// benchQuantize, benchEncode and benchDecode are shared with the CUDA
// benchmarks: same shapes, same inputs, different device.
func benchQuantize(b *testing.B, device string, M int) {
	tok := benchTokenizer(b, device)
	z := randNormal(rand.New(rand.NewPCG(1, 1)), M*realConfig.LatentDim)
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
	x := randNormal(rand.New(rand.NewPCG(2, 2)), B*N*realConfig.InDim)
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
