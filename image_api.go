package unitok

import (
	"context"
	"errors"
	"image"
	"io"
	"math"
	"strings"

	"github.com/unitok/unitok/internal/imageio"
)

// The image API: UniTok's inference.py on image.Image values. Every call
// preprocesses exactly as inference.py does (convert("RGB"), Resize of the
// shorter side to int(S*1.125) with PIL's bilinear filter, CenterCrop(S),
// ToTensor, x*2-1, S = ImageSize()) and then runs the pixel calls of
// image.go. All of them are safe for concurrent use.

// DefaultMaxPixels is the largest image (width*height) the image calls and
// LoadImage accept unless WithMaxPixels says otherwise.
const DefaultMaxPixels int64 = imageio.DefaultMaxPixels

// ImageResizeRatio is UniTok's resize_ratio: the shorter side is resized to
// int(ImageSize()*ImageResizeRatio) before the center crop.
const ImageResizeRatio = imageio.DefaultResizeRatio

// WithMaxPixels sets the pixel limit (width*height) of the image calls
// (default DefaultMaxPixels); larger images are refused with ErrBadInput.
func WithMaxPixels(n int64) Option { return func(o *options) { o.maxPixels = n } }

func (t *Tokenizer) maxPixels() int64 {
	if t.opts.maxPixels > 0 {
		return t.opts.maxPixels
	}
	return DefaultMaxPixels
}

// LoadImage reads an image file (PNG, JPEG, GIF (first frame), BMP or
// WebP) as PIL's Image.open does, refusing from the header alone images
// with more than maxPixels pixels (<= 0: DefaultMaxPixels). Errors are
// ErrBadInput and name the file.
func LoadImage(path string, maxPixels int64) (image.Image, error) {
	img, _, err := imageio.Load(path, maxPixels)
	if err != nil {
		return nil, imageErr("load image", err)
	}
	return img, nil
}

// DecodeImage is LoadImage on a stream.
func DecodeImage(r io.Reader, maxPixels int64) (image.Image, error) {
	img, _, err := imageio.Decode(r, maxPixels)
	if err != nil {
		return nil, imageErr("decode image", err)
	}
	return img, nil
}

// imageErr turns imageio's errors (all about the input) into ErrBadInput.
func imageErr(op string, err error) error {
	var ue *Error
	if errors.As(err, &ue) {
		return err
	}
	return badInput(op, "%s", imageioOneLine(err.Error()))
}

func imageioOneLine(s string) string {
	return strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ").Replace(strings.TrimSpace(s))
}

// checkImages validates a batch before any pixel is touched: at least one
// image, none nil or empty, none over the pixel limit.
func (t *Tokenizer) checkImages(op string, imgs []image.Image) error {
	if len(imgs) == 0 {
		return badInput(op, "no images")
	}
	limit := t.maxPixels()
	for i, img := range imgs {
		if img == nil {
			return badInput(op, "image %d is nil", i)
		}
		b := img.Bounds()
		if b.Dx() <= 0 || b.Dy() <= 0 {
			return badInput(op, "image %d is empty (%dx%d)", i, max(b.Dx(), 0), max(b.Dy(), 0))
		}
		if px := int64(b.Dx()) * int64(b.Dy()); px > limit {
			return badInput(op, "image %d is %dx%d = %d pixels, over the limit of %d", i, b.Dx(), b.Dy(), px, limit)
		}
	}
	return nil
}

// PreprocessImages is inference.py's input pipeline on a batch: the
// (B, 3, S, S) float32 tensor in [-1, 1] that TokenizePixels and
// EmbedPixels take (S = ImageSize()). It needs the image model only for S.
func (t *Tokenizer) PreprocessImages(imgs []image.Image) ([]float32, error) {
	return t.preprocess("preprocess", imgs)
}

func (t *Tokenizer) preprocess(op string, imgs []image.Image) ([]float32, error) {
	im, err := t.imageReady(op, context.Background())
	if err != nil {
		return nil, err
	}
	if err := t.checkImages(op, imgs); err != nil {
		return nil, err
	}
	x, err := imageio.PreprocessBatch(imgs, im.cfg.ImgSize, ImageResizeRatio)
	if err != nil {
		return nil, badInput(op, "%v", err)
	}
	return x, nil
}

// TokenizeImages is UniTok's img_to_idx on images: codes (B, N, K) (or
// (B, K, N) with CodebookMajor), B = len(imgs), N = (S/16)^2.
func (t *Tokenizer) TokenizeImages(ctx context.Context, imgs []image.Image) ([]int32, error) {
	x, err := t.preprocess("tokenize", imgs)
	if err != nil {
		return nil, err
	}
	return t.TokenizePixels(ctx, x, len(imgs))
}

// EmbedImages is UniTok's encode_image(normalize=True) on images: (B, E)
// float32, each row L2-normalized.
func (t *Tokenizer) EmbedImages(ctx context.Context, imgs []image.Image) ([]float32, error) {
	x, err := t.preprocess("embed", imgs)
	if err != nil {
		return nil, err
	}
	return t.EmbedPixels(ctx, x, len(imgs))
}

// DetokenizeImages is idx_to_img followed by inference.py's save_img: codes
// (B, N, K) (or (B, K, N) with CodebookMajor) -> B images of S x S.
func (t *Tokenizer) DetokenizeImages(ctx context.Context, codes []int32, B int) ([]*image.NRGBA, error) {
	rec, err := t.Detokenize(ctx, codes, B)
	if err != nil {
		return nil, err
	}
	S := int(math.Round(math.Sqrt(float64(len(rec) / (3 * B))))) // rec is (B, 3, S, S)
	return PixelsToImages(rec, B, S)
}

// ReconstructImages tokenizes imgs and decodes the codes back to images:
// inference.py's round trip, B images of S x S. The codes come back too
// ((B, N, K) in the tokenizer's layout).
func (t *Tokenizer) ReconstructImages(ctx context.Context, imgs []image.Image) ([]*image.NRGBA, []int32, error) {
	codes, err := t.TokenizeImages(ctx, imgs)
	if err != nil {
		return nil, nil, err
	}
	out, err := t.DetokenizeImages(ctx, codes, len(imgs))
	if err != nil {
		return nil, nil, err
	}
	return out, codes, nil
}

// PixelsToImage is inference.py's save_img on one image: x is (3, S, S)
// float32 (UniTok's [-1, 1] convention); each value becomes
// round((x+1)*127.5) (half to even, as torch.round), clamped to 0..255,
// NaN -> 128.
func PixelsToImage(x []float32, size int) (*image.NRGBA, error) {
	img, err := imageio.FromTensor(x, 3, size, size)
	if err != nil {
		return nil, badInput("image", "%v", err)
	}
	return img, nil
}

// PixelsToImages is PixelsToImage on a batch x (B, 3, S, S).
func PixelsToImages(x []float32, B, size int) ([]*image.NRGBA, error) {
	per := 3 * size * size
	if B <= 0 || size <= 0 || len(x) != B*per {
		return nil, badInput("image", "pixels: have %d values, want %d x 3 x %d x %d", len(x), B, size, size)
	}
	out := make([]*image.NRGBA, B)
	for b := range out {
		img, err := PixelsToImage(x[b*per:(b+1)*per], size)
		if err != nil {
			return nil, err
		}
		out[b] = img
	}
	return out, nil
}

// SideBySide places images left to right on one canvas (inference.py's
// torch.cat((img, rec_img), dim=3) before save_img).
func SideBySide(imgs ...*image.NRGBA) (*image.NRGBA, error) {
	for i, m := range imgs {
		if m == nil {
			return nil, badInput("image", "side by side: image %d is nil", i)
		}
	}
	if len(imgs) == 0 {
		return nil, badInput("image", "side by side: no images")
	}
	return imageio.SideBySide(imgs...), nil
}

// PSNR is the peak signal-to-noise ratio in dB between two 8-bit images of
// the same size over their RGB channels (peak 255): 10*log10(255^2/MSE).
// Identical images give +Inf.
func PSNR(a, b image.Image) (float64, error) {
	ra, rb := imageio.ToRGB(a), imageio.ToRGB(b)
	if ra.W != rb.W || ra.H != rb.H {
		return 0, badInput("psnr", "sizes differ: %dx%d and %dx%d", ra.W, ra.H, rb.W, rb.H)
	}
	var se float64
	for i := range ra.Pix {
		d := float64(ra.Pix[i]) - float64(rb.Pix[i])
		se += d * d
	}
	if len(ra.Pix) == 0 {
		return 0, badInput("psnr", "empty images")
	}
	mse := se / float64(len(ra.Pix))
	return 10 * math.Log10(255*255/mse), nil
}
