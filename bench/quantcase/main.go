// Command quantcase writes one quantize case at the real widths for
// bench/faiss_compare.py: the normalized codebooks (K, V, d), random
// latents (M, D) and unitok's CPU codes (M, K) for them, as raw
// little-endian float32/int32 files plus meta.json.
//
//	go run ./bench/quantcase -out DIR [-m 65536] [-seed 1]
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/cpu/kern"
)

func main() {
	out := flag.String("out", "", "output directory")
	M := flag.Int("m", 65536, "latent rows")
	seed := flag.Uint64("seed", 1, "model and latent seed")
	flag.Parse()
	if err := run(*out, *M, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "quantcase:", err)
		os.Exit(1)
	}
}

func run(out string, M int, seed uint64) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	c := unitok.Config{InDim: 1024, LatentDim: 64, NumCodebooks: 8, CodebookSize: 4096, NumHeads: 16}
	m, err := unitok.SynthModel(c, seed)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	z := make([]float32, M*c.LatentDim)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	tok, err := unitok.New(m, unitok.WithDevice("cpu"))
	if err != nil {
		return err
	}
	defer tok.Close()
	codes, err := tok.Quantize(z, M)
	if err != nil {
		return err
	}
	var cb []float32
	for _, w := range m.NormCodebooks {
		cb = append(cb, w...)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, data := range map[string]any{"codebooks.f32": cb, "latents.f32": z, "codes.i32": codes} {
		if err := write(filepath.Join(out, name), data); err != nil {
			return err
		}
	}
	meta, _ := json.Marshal(map[string]any{
		"K": c.NumCodebooks, "V": c.CodebookSize, "d": c.LatentDim / c.NumCodebooks, "M": M,
		"argmax_path": kern.ArgmaxPath(), "argmax_paths": kern.ArgmaxPaths(),
	})
	return os.WriteFile(filepath.Join(out, "meta.json"), meta, 0o644)
}

func write(path string, data any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := binary.Write(f, binary.LittleEndian, data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
