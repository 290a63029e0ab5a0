package wds

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"testing"
)

// BenchmarkProcessJPEG measures the tar pipeline's own cost per image
// (read, JPEG decode, write codes; the tokenizer is a no-op returning zero
// codes of UniTok's shape, N=256, K=8): what it adds to the tokenizer's
// time. 256x256 JPEGs, quality 90, 64 samples per shard.
func BenchmarkProcessJPEG(b *testing.B) {
	img := image.NewRGBA(image.Rect(0, 0, 256, 256))
	for y := 0; y < 256; y++ {
		for x := 0; x < 256; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	var jb bytes.Buffer
	if err := jpeg.Encode(&jb, img, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	var src bytes.Buffer
	w := NewWriter(&src)
	const S = 64
	for i := 0; i < S; i++ {
		if err := w.Write(&Sample{Key: fmt.Sprintf("%06d", i), Members: []Member{
			{Ext: "jpg", Data: jb.Bytes()}, {Ext: "txt", Data: []byte("a caption")}}}); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	tok := func(_ context.Context, imgs []image.Image) ([]int32, error) {
		return make([]int32, len(imgs)*256*8), nil
	}
	b.SetBytes(int64(src.Len()))
	b.ResetTimer()
	for range b.N {
		res, err := Process(context.Background(), bytes.NewReader(src.Bytes()), io.Discard, Options{Tokenize: tok, K: 8, Batch: 32})
		if err != nil || res.Written != S {
			b.Fatal(err, res)
		}
	}
	b.ReportMetric(float64(S*b.N)/b.Elapsed().Seconds(), "images/s")
}
