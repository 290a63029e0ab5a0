package unitok_test

import (
	"context"
	"fmt"
	"image"
	"log"

	"github.com/unitok/unitok"
)

// Tokenize a photo and reconstruct it, as UniTok's inference.py does.
func ExampleTokenizer_ReconstructImages() {
	tok, err := unitok.Open("testdata/image/tiny_pth/unitok_tiny_bf16.pth", unitok.WithDevice("cpu"))
	if err != nil {
		log.Fatal(err)
	}
	defer tok.Close()
	if err := tok.ImageModel(); err != nil {
		log.Fatal(err) // a core-only checkpoint: says which tensors are missing
	}
	img, err := unitok.LoadImage("testdata/images/inputs/chelsea_full.png", 0)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	recs, codes, err := tok.ReconstructImages(ctx, []image.Image{img})
	if err != nil {
		log.Fatal(err)
	}
	x, _ := tok.PreprocessImages([]image.Image{img})
	orig, _ := unitok.PixelsToImage(x, tok.ImageSize())
	psnr, _ := unitok.PSNR(orig, recs[0])
	K := tok.Config().NumCodebooks
	fmt.Printf("input %v -> codes (%d,%d) -> image %v, PSNR %.2f dB\n",
		img.Bounds().Size(), len(codes)/K, K, recs[0].Bounds().Size(), psnr)
	// Output: input (451,300) -> codes (16,4) -> image (64,64), PSNR 12.25 dB
}
