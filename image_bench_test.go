package unitok

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/unitok/unitok/internal/cputime"
	"github.com/unitok/unitok/internal/model/vitamin"
)

// The image benchmarks run UniTok-Large's whole image path (vitamin_large
// encoder and decoder, the real core) on synthetic weights, B images per
// op (UNITOK_BENCH_IMAGES, default 1). The PyTorch eager comparison on the
// same CPU and threads is bench/torch_image_reference.py bench (see
// docs/notes/vitamin.md). Building the model takes a few seconds and ~3 GB.
var benchImageTok = sync.OnceValues(func() (*Tokenizer, error) {
	return openSynthImage(realConfig, vitamin.VitaminLarge(1024), 1, WithDevice("cpu"))
})

func imageBenchBatch() int {
	if n, err := strconv.Atoi(os.Getenv("UNITOK_BENCH_IMAGES")); err == nil && n > 0 {
		return n
	}
	return 1
}

func imageBenchSetup(b *testing.B) (*Tokenizer, []float32, []int32, int) {
	b.Helper()
	tok, err := benchImageTok()
	if err != nil {
		b.Fatal(err)
	}
	B, S := imageBenchBatch(), tok.ImageSize()
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, B*3*S*S)
	for i := range x {
		x[i] = float32(rng.Float64()*2 - 1)
	}
	N := tok.img().cfg.Tokens()
	codes := make([]int32, B*N*realConfig.NumCodebooks)
	for i := range codes {
		codes[i] = int32(rng.IntN(realConfig.CodebookSize))
	}
	return tok, x, codes, B
}

func BenchmarkImageTokenizeLarge(b *testing.B) {
	tok, x, _, B := imageBenchSetup(b)
	ctx := context.Background()
	b.ResetTimer()
	cpu0 := cputime.Process().Seconds()
	for i := 0; i < b.N; i++ {
		if _, err := tok.TokenizePixels(ctx, x, B); err != nil {
			b.Fatal(err)
		}
	}
	reportImages(b, B, cpu0)
}

func BenchmarkImageDetokenizeLarge(b *testing.B) {
	tok, _, codes, B := imageBenchSetup(b)
	ctx := context.Background()
	b.ResetTimer()
	cpu0 := cputime.Process().Seconds()
	for i := 0; i < b.N; i++ {
		if _, err := tok.Detokenize(ctx, codes, B); err != nil {
			b.Fatal(err)
		}
	}
	reportImages(b, B, cpu0)
}

// reportImages reports images/s (wall) and CPU seconds per image (all
// threads; robust to other load on a shared machine).
func reportImages(b *testing.B, B int, cpu0 float64) {
	b.ReportMetric(float64(B*b.N)/b.Elapsed().Seconds(), "images/s")
	if cpu := cputime.Process().Seconds() - cpu0; cpu > 0 {
		b.ReportMetric(cpu/float64(B*b.N), "cpu-s/image")
	}
}
