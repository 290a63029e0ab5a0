package imageio

// Preprocessing a 12 MP photo; PIL + torchvision take ~0.4 s for the same
// on this machine (bench/image_fixtures.py's pipeline).

import (
	"image"
	"testing"
)

func BenchmarkPreprocess4000x3000(b *testing.B) {
	img := image.NewRGBA(image.Rect(0, 0, 4000, 3000))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
		if i%4 == 3 {
			img.Pix[i] = 255 // opaque, as decoded RGB files are
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Preprocess(img, 256, 1.125); err != nil {
			b.Fatal(err)
		}
	}
}
