package unitok

import (
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/imageio"
)

const cliFixture = "testdata/image/cli"

func openTinyPth(t *testing.T, opts ...Option) *Tokenizer {
	t.Helper()
	tok, err := Open("testdata/image/tiny_pth/unitok_tiny_bf16.pth", append([]Option{WithDevice("cpu"), WithHeads(4)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return tok
}

func loadPhotos(t *testing.T, names ...string) []image.Image {
	t.Helper()
	var out []image.Image
	for _, n := range names {
		img, err := LoadImage(filepath.Join("testdata/images/inputs", n+".png"), 0)
		require.NoError(t, err)
		out = append(out, img)
	}
	return out
}

// TestImageAPIMatchesPyTorch: the image calls on two photos against
// inference.py in PyTorch (bench/image_cli_fixture.py), batched.
func TestImageAPIMatchesPyTorch(t *testing.T) {
	tok := openTinyPth(t)
	ctx := context.Background()
	imgs := loadPhotos(t, "chelsea_full", "coffee")
	const B, S, N, K = 2, 64, 16, 4

	x, err := tok.PreprocessImages(imgs)
	require.NoError(t, err)
	wantX, xs := readF32(t, filepath.Join(cliFixture, "x.npy"))
	require.Equal(t, []int{B, 3, S, S}, xs)
	for i := range wantX {
		require.Equal(t, math.Float32bits(wantX[i]), math.Float32bits(x[i]), "preprocessed value %d", i)
	}

	codes, err := tok.TokenizeImages(ctx, imgs)
	require.NoError(t, err)
	wantCodes, _ := readI32(t, filepath.Join(cliFixture, "codes.npy"))
	margins, _ := readF32(t, filepath.Join(cliFixture, "margins.npy"))
	checked := 0
	for i := range wantCodes {
		if margins[i] > 1e-4 {
			require.Equal(t, wantCodes[i], codes[i], "code %d", i)
			checked++
		}
	}
	require.Greater(t, checked, B*N*K*9/10)
	// One image at a time gives the same codes as the batch.
	for b := range B {
		one, err := tok.TokenizeImages(ctx, imgs[b:b+1])
		require.NoError(t, err)
		require.Equal(t, codes[b*N*K:(b+1)*N*K], one)
	}

	emb, err := tok.EmbedImages(ctx, imgs)
	require.NoError(t, err)
	wantEmb, _ := readF32(t, filepath.Join(cliFixture, "emb.npy"))
	require.Less(t, maxAbsDiff(emb, wantEmb), 1e-3)
	t.Logf("%d/%d codes checked above margin 1e-4, all equal; embedding max diff %.2g", checked, len(wantCodes), maxAbsDiff(emb, wantEmb))
	for b := range B {
		var n float64
		for _, v := range emb[b*48 : (b+1)*48] {
			n += float64(v) * float64(v)
		}
		require.InDelta(t, 1, n, 1e-5, "embedding %d is not unit length", b)
	}

	recs, gotCodes, err := tok.ReconstructImages(ctx, imgs)
	require.NoError(t, err)
	require.Equal(t, codes, gotCodes)
	wantRec, _ := readF32(t, filepath.Join(cliFixture, "rec.npy"))
	for b, rec := range recs {
		want, err := PixelsToImage(wantRec[b*3*S*S:(b+1)*3*S*S], S)
		require.NoError(t, err)
		n, m := rgbDiff(rec, want)
		require.LessOrEqual(t, m, 1, "reconstruction %d vs save_img(idx_to_img)", b)
		require.Less(t, n, 3*S*S/100)
	}
}

func rgbDiff(a, b image.Image) (n, m int) {
	ra, rb := imageio.ToRGB(a), imageio.ToRGB(b)
	for i := range ra.Pix {
		d := int(ra.Pix[i]) - int(rb.Pix[i])
		if d != 0 {
			n++
			m = max(m, d, -d)
		}
	}
	return
}

func TestImageAPIBadInput(t *testing.T) {
	tok := openTinyPth(t, WithMaxPixels(500*500))
	ctx := context.Background()
	good := loadPhotos(t, "coffee")[0]
	for _, tc := range []struct {
		name string
		imgs []image.Image
		want string
	}{
		{"no images", nil, "tokenize: no images"},
		{"nil image", []image.Image{good, nil}, "tokenize: image 1 is nil"},
		{"empty image", []image.Image{image.NewRGBA(image.Rect(0, 0, 0, 5))}, "tokenize: image 0 is empty (0x5)"},
		{"over the limit", []image.Image{image.NewGray(image.Rect(0, 0, 1000, 300))}, "tokenize: image 0 is 1000x300 = 300000 pixels, over the limit of 250000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tok.TokenizeImages(ctx, tc.imgs)
			require.ErrorIs(t, err, ErrBadInput)
			require.EqualError(t, err, tc.want)
			_, err = tok.EmbedImages(ctx, tc.imgs)
			require.ErrorIs(t, err, ErrBadInput)
			_, _, err = tok.ReconstructImages(ctx, tc.imgs)
			require.ErrorIs(t, err, ErrBadInput)
		})
	}
	// Codes out of range and the wrong count.
	codes := make([]int32, 16*4)
	codes[5] = 64
	_, err := tok.DetokenizeImages(ctx, codes, 1)
	require.ErrorIs(t, err, ErrBadInput)
	_, err = tok.DetokenizeImages(ctx, codes[:60], 1)
	require.ErrorIs(t, err, ErrBadInput)
	// A cancelled context stops the call.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = tok.TokenizeImages(cctx, []image.Image{good})
	require.ErrorIs(t, err, context.Canceled)
	// LoadImage: errors are ErrBadInput and name the file.
	_, err = LoadImage("testdata/images/inputs/truncated_png.png", 0)
	require.ErrorIs(t, err, ErrBadInput)
	require.Contains(t, err.Error(), "truncated_png.png")
	_, err = LoadImage("testdata/images/inputs/coffee.png", 100)
	require.ErrorIs(t, err, ErrBadInput)
	// A core-only checkpoint.
	core, err := Open("testdata/sample/model.safetensors", WithDevice("cpu"))
	require.NoError(t, err)
	defer core.Close()
	_, err = core.TokenizeImages(ctx, []image.Image{good})
	require.ErrorIs(t, err, ErrBadInput)
	require.Contains(t, err.Error(), "missing tensor encoder.patch_embed.backbone.stem.conv1.weight")
	// Closed.
	tok2 := openTinyPth(t)
	tok2.Close()
	_, err = tok2.TokenizeImages(ctx, []image.Image{good})
	require.True(t, errors.Is(err, ErrClosed), "%v", err)
}

// TestImageAPIConcurrent: concurrent calls on one Tokenizer give the
// results of sequential ones (run under -race in CI's race job).
func TestImageAPIConcurrent(t *testing.T) {
	tok := openTinyPth(t, WithThreads(2))
	ctx := context.Background()
	imgs := loadPhotos(t, "chelsea_full", "coffee")
	want := make([][]int32, len(imgs))
	for i := range imgs {
		var err error
		want[i], err = tok.TokenizeImages(ctx, imgs[i:i+1])
		require.NoError(t, err)
	}
	wantRec, err := tok.DetokenizeImages(ctx, want[0], 1)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := g % len(imgs)
			got, err := tok.TokenizeImages(ctx, imgs[i:i+1])
			if err != nil {
				errs <- err
				return
			}
			if !assert.Equal(t, want[i], got) {
				return
			}
			if g == 0 {
				rec, err := tok.DetokenizeImages(ctx, got, 1)
				if err != nil {
					errs <- err
					return
				}
				n, _ := rgbDiff(rec[0], wantRec[0])
				assert.Zero(t, n)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestPixelsToImageAndPSNR(t *testing.T) {
	// The preprocessed input maps back to the uint8 crop exactly:
	// round((v/255*2-1+1)*127.5) = v for every byte value.
	x := make([]float32, 3*16*16)
	for i := range x {
		v := float32(i%256) / 255
		x[i] = v + v - 1
	}
	img, err := PixelsToImage(x, 16)
	require.NoError(t, err)
	for i := 0; i < 16*16; i++ {
		for c := 0; c < 3; c++ {
			require.Equal(t, uint8((c*256+i)%256), img.Pix[4*i+c])
		}
	}
	_, err = PixelsToImage(x[:10], 16)
	require.ErrorIs(t, err, ErrBadInput)

	a := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	b := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	for i := range a.Pix {
		a.Pix[i], b.Pix[i] = 100, 100
	}
	p, err := PSNR(a, b)
	require.NoError(t, err)
	require.True(t, math.IsInf(p, 1))
	b.Set(0, 0, color.NRGBA{110, 100, 100, 255}) // MSE = 100/6
	p, err = PSNR(a, b)
	require.NoError(t, err)
	require.InDelta(t, 10*math.Log10(255*255*6/100.0), p, 1e-12)
	_, err = PSNR(a, image.NewNRGBA(image.Rect(0, 0, 1, 1)))
	require.ErrorIs(t, err, ErrBadInput)

	s, err := SideBySide(a, b)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 4, 1), s.Bounds())
	require.Equal(t, uint8(110), s.Pix[4*2])
}

// TestImageJPEGCodesVsPIL measures what Go's JPEG decoder (IDCT rounding
// differs from libjpeg-turbo's) does to the codes: for each JPEG the codes
// above margin 1e-3 must be >= 97% equal to PyTorch's on PIL's decode (the
// issue's bar); all of them are reported.
func TestImageJPEGCodesVsPIL(t *testing.T) {
	var list struct {
		Images []string `json:"images"`
	}
	b, err := os.ReadFile(filepath.Join(cliFixture, "jpeg.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &list))
	want, ws := readI32(t, filepath.Join(cliFixture, "jpeg_codes.npy"))
	margins, _ := readF32(t, filepath.Join(cliFixture, "jpeg_margins.npy"))
	require.Equal(t, len(list.Images), ws[0])
	per := ws[1] * ws[2]
	tok := openTinyPth(t)
	total, totalEq := 0, 0
	for i, name := range list.Images {
		img, err := LoadImage(filepath.Join("testdata/images/inputs", name), 0)
		require.NoError(t, err)
		codes, err := tok.TokenizeImages(context.Background(), []image.Image{img})
		require.NoError(t, err)
		n, eq, all := 0, 0, 0
		for j := range per {
			if codes[j] == want[i*per+j] {
				all++
			}
			if margins[i*per+j] > 1e-3 {
				n++
				if codes[j] == want[i*per+j] {
					eq++
				}
			}
		}
		require.Greater(t, n, per/2, "%s: too few codes above the margin to measure", name)
		t.Logf("%-22s codes above margin 1e-3 equal: %d/%d (%.1f%%); all codes equal: %d/%d", name, eq, n, 100*float64(eq)/float64(n), all, per)
		assert.GreaterOrEqual(t, float64(eq), 0.97*float64(n), name)
		total += n
		totalEq += eq
	}
	t.Logf("all JPEGs: %d/%d codes above margin 1e-3 equal (%.2f%%)", totalEq, total, 100*float64(totalEq)/float64(total))
}
