package imageio

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode: no input panics Decode or the conversions after it, and an
// image that decodes preprocesses to values in [-1, 1].
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"gif_trns.gif", "gif_subframe_local.gif", "webp_lossy_alpha.webp", "webp_lossy_odd.webp",
		"jpeg_420_odd.jpg", "jpeg_cmyk.jpg", "gray16_trns.png", "palette_trns.png", "bmp_palette.bmp", "tiny_1x1.png"} {
		b, err := os.ReadFile(filepath.Join(fixtures, "inputs", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, _, err := Decode(bytes.NewReader(data), 1<<16)
		if err != nil {
			return
		}
		x, err := Preprocess(img, 8, 1.125)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range x {
			if !(v >= -1 && v <= 1) {
				t.Fatalf("value %v", v)
			}
		}
	})
}

// TestMutatedInputs runs Decode and Preprocess on fixture files with a few
// random bytes changed (deterministic seed): no panic, no hang (the test
// timeout), and decodable results stay in [-1, 1].
func TestMutatedInputs(t *testing.T) {
	names, err := filepath.Glob(filepath.Join(fixtures, "inputs", "*"))
	if err != nil || len(names) < 30 {
		t.Fatalf("%v, %d inputs", err, len(names))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	decoded := 0
	for range 400 {
		b, err := os.ReadFile(names[rng.IntN(len(names))])
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 20000 {
			continue
		}
		for range 1 + rng.IntN(4) {
			b[rng.IntN(len(b))] = byte(rng.IntN(256))
		}
		img, _, err := Decode(bytes.NewReader(b), 1<<16)
		if err != nil {
			continue
		}
		decoded++
		x, err := Preprocess(img, 8, 1.125)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range x {
			if !(v >= -1 && v <= 1) {
				t.Fatalf("value %v", v)
			}
		}
	}
	if decoded == 0 {
		t.Fatal("no mutated input decoded")
	}
}
