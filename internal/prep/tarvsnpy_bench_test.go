package prep

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/wds"
)

// BenchmarkTarVsNpy tokenizes the same JPEGs (256x256, quality 90,
// UNITOK_TARVSNPY_IMAGES of them, default 64) with the tiny UniTok
// checkpoint through the two data-prep pipelines:
//
//	npy:       one .jpg file per image -> RunImages -> one codes .npy per image
//	tar:       the same JPEGs in webdataset shards of 32 -> RunTars -> .tar with KEY.codes.npy
//	tar+embed: as tar, with KEY.embed.npy from the same encoder pass
//	tokenize-only: TokenizeImages on the images already decoded in memory
//	(preprocessing + model, no files, no JPEG decoding), for reference
//
// all with 32 images per tokenizer call, reporting images/s (each
// iteration writes into a fresh output directory). The tiny model (64x64
// input) makes the tokenizer cheap, so the numbers mostly measure the
// pipelines' own cost: file handling, JPEG decoding, preprocessing,
// writing.
//
//	go test -run '^$' -bench TarVsNpy -benchtime 3x ./internal/prep/
func BenchmarkTarVsNpy(b *testing.B) {
	n := envInt(b, "UNITOK_TARVSNPY_IMAGES", 64)
	tok, err := unitok.Open(tinyPth, unitok.WithDevice("cpu"), unitok.WithHeads(4))
	if err != nil {
		b.Fatal(err)
	}
	defer tok.Close()
	if err := tok.ImageModel(); err != nil {
		b.Fatal(err)
	}
	root := b.TempDir()
	imgDir, tarDir := filepath.Join(root, "images"), filepath.Join(root, "tars")
	for _, d := range []string{imgDir, tarDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	var shard bytes.Buffer
	w := wds.NewWriter(&shard)
	flush := func(i int) {
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tarDir, fmt.Sprintf("%05d.tar", i)), shard.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
		shard.Reset()
		w = wds.NewWriter(&shard)
	}
	for i := 0; i < n; i++ {
		img := image.NewRGBA(image.Rect(0, 0, 256, 256))
		for y := 0; y < 256; y++ {
			for x := 0; x < 256; x++ {
				img.Set(x, y, color.RGBA{uint8(x + 3*i), uint8(y ^ x + i), uint8((x*y + 7*i) >> 5), 255})
			}
		}
		var j bytes.Buffer
		if err := jpeg.Encode(&j, img, &jpeg.Options{Quality: 90}); err != nil {
			b.Fatal(err)
		}
		key := fmt.Sprintf("%06d", i)
		if err := os.WriteFile(filepath.Join(imgDir, key+".jpg"), j.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := w.Write(&wds.Sample{Key: key, Members: []wds.Member{
			{Ext: "jpg", Data: j.Bytes()}, {Ext: "txt", Data: []byte("caption " + key)}}}); err != nil {
			b.Fatal(err)
		}
		if (i+1)%32 == 0 || i == n-1 {
			flush(i / 32)
		}
	}
	var decoded []image.Image
	for i := 0; i < n; i++ {
		img, err := unitok.LoadImage(filepath.Join(imgDir, fmt.Sprintf("%06d.jpg", i)), 0)
		if err != nil {
			b.Fatal(err)
		}
		decoded = append(decoded, img)
	}
	c := tok.Config()
	fp := Fingerprint(tok)
	run := map[string]func(out string) error{
		"tokenize-only": func(string) error { // decoded images in memory, no files
			for i := 0; i < n; i += 32 {
				if _, err := tok.TokenizeImages(context.Background(), decoded[i:min(i+32, n)]); err != nil {
					return err
				}
			}
			return nil
		},
		"npy": func(out string) error {
			_, err := RunImages(context.Background(), tok, ImageOptions{In: []string{imgDir}, OutDir: out, Batch: 32})
			return err
		},
		"tar": func(out string) error {
			_, err := RunTars(context.Background(), TarOptions{In: []string{tarDir}, OutDir: out, Tokenize: tok.TokenizeImages,
				K: c.NumCodebooks, V: c.CodebookSize, Fingerprint: fp, Batch: 32})
			return err
		},
		"tar+embed": func(out string) error {
			_, err := RunTars(context.Background(), TarOptions{In: []string{tarDir}, OutDir: out, TokenizeEmbed: tok.TokenizeAndEmbedImages,
				K: c.NumCodebooks, V: c.CodebookSize, Fingerprint: fp, Batch: 32})
			return err
		},
	}
	for _, name := range []string{"tokenize-only", "npy", "tar", "tar+embed"} {
		b.Run(name, func(b *testing.B) {
			var busy time.Duration
			for i := 0; i < b.N; i++ {
				out := filepath.Join(b.TempDir(), "out")
				t0 := time.Now()
				if err := run[name](out); err != nil {
					b.Fatal(err)
				}
				busy += time.Since(t0)
			}
			b.ReportMetric(float64(n*b.N)/busy.Seconds(), "images/s")
		})
	}
}
