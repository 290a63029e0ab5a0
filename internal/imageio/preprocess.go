package imageio

import (
	"fmt"
	"image"
	"math"
)

// UniTok's defaults (utils/config.py): img_size 256, resize_ratio 1.125.
const (
	DefaultSize        = 256
	DefaultResizeRatio = 1.125
)

// CenterCrop is torchvision's CenterCrop(size) on a PIL image: when the
// image is smaller than size on a side it is first padded with zeros,
// (size-w)//2 on the left and (size-w+1)//2 on the right (likewise top and
// bottom); then the crop starts at top = int(round((h - size) / 2.0)) and
// left likewise, Python's round being half to even.
func CenterCrop(src *RGB, size int) *RGB {
	img := src
	if size > img.W || size > img.H {
		var left, top int
		pw, ph := img.W, img.H
		if size > img.W {
			left, pw = (size-img.W)/2, size
		}
		if size > img.H {
			top, ph = (size-img.H)/2, size
		}
		padded := NewRGB(pw, ph)
		for y := 0; y < img.H; y++ {
			copy(padded.Pix[3*((y+top)*pw+left):], img.Pix[3*y*img.W:3*(y+1)*img.W])
		}
		img = padded
		if img.W == size && img.H == size {
			return img
		}
	}
	top := int(math.RoundToEven(float64(img.H-size) / 2.0))
	left := int(math.RoundToEven(float64(img.W-size) / 2.0))
	out := NewRGB(size, size)
	for y := 0; y < size; y++ {
		copy(out.Pix[3*y*size:3*(y+1)*size], img.Pix[3*((y+top)*img.W+left):])
	}
	return out
}

// pm1 maps a uint8 to ToTensor's v/255 followed by UniTok's
// normalize_01_into_pm1, x.add(x).add_(-1), every step in float32 as torch
// computes it.
var pm1 = func() (t [256]float32) {
	for v := range t {
		x := float32(v) / 255
		t[v] = (x + x) - 1
	}
	return t
}()

// ToTensor is torchvision's ToTensor followed by UniTok's
// normalize_01_into_pm1: a (3, H, W) row-major float32 tensor with values
// v/255*2-1 in [-1, 1].
func ToTensor(src *RGB) []float32 {
	out := make([]float32, 3*src.W*src.H)
	toTensorInto(out, src)
	return out
}

func toTensorInto(dst []float32, src *RGB) {
	n := src.W * src.H
	r, g, b := dst[:n], dst[n:2*n], dst[2*n:3*n]
	for i := 0; i < n; i++ {
		p := src.Pix[3*i : 3*i+3]
		r[i], g[i], b[i] = pm1[p[0]], pm1[p[1]], pm1[p[2]]
	}
}

// PreprocessRGB runs UniTok's inference transform on an RGB image:
// Resize(int(size*ratio)), CenterCrop(size), ToTensor, x*2-1. The result is
// (3, size, size) float32, row-major.
func PreprocessRGB(rgb *RGB, size int, ratio float64) []float32 {
	out := make([]float32, 3*size*size)
	preprocessInto(out, rgb, size, ratio)
	return out
}

func preprocessInto(dst []float32, rgb *RGB, size int, ratio float64) {
	// Python int() truncates: int(256 * 1.125) = 288.
	resized := ResizeShorter(rgb, int(float64(size)*ratio))
	toTensorInto(dst, CenterCrop(resized, size))
}

// Preprocess is UniTok's inference.py input pipeline on a decoded image:
// convert("RGB") (ToRGB), Resize(int(size*ratio)), CenterCrop(size),
// ToTensor, x*2-1. It returns (3, size, size) float32 in [-1, 1]. For 8-bit
// non-JPEG inputs the result equals PIL + torchvision bit for bit.
func Preprocess(img image.Image, size int, ratio float64) ([]float32, error) {
	out := make([]float32, 3*size*size)
	if err := PreprocessInto(out, img, size, ratio); err != nil {
		return nil, err
	}
	return out, nil
}

// PreprocessInto is Preprocess writing into dst, which must hold exactly
// 3*size*size values (one image of a batch laid out as (B, 3, size, size)).
func PreprocessInto(dst []float32, img image.Image, size int, ratio float64) error {
	if size <= 0 || ratio <= 0 || math.IsNaN(ratio) || math.IsInf(ratio, 0) || int(float64(size)*ratio) <= 0 {
		return fmt.Errorf("preprocess: bad size %d or resize ratio %v", size, ratio)
	}
	if len(dst) != 3*size*size {
		return fmt.Errorf("preprocess: destination holds %d values, want 3*%d*%d = %d", len(dst), size, size, 3*size*size)
	}
	if img == nil || img.Bounds().Empty() {
		return fmt.Errorf("preprocess: empty image")
	}
	preprocessInto(dst, ToRGB(img), size, ratio)
	return nil
}

// FromTensor is inference.py's save_img on one image: x is (C, H, W)
// float32 row-major with C = 3 (RGB) or 1 (gray, replicated); each value
// becomes (x+1)*127.5 in float32, rounded half to even (torch.round),
// NaN -> 128, +Inf -> 0, -Inf -> 255 (nan_to_num_(128, 0, 255): the
// positional arguments are nan, posinf, neginf), clamped to 0..255.
func FromTensor(x []float32, c, h, w int) (*image.NRGBA, error) {
	if c != 3 && c != 1 {
		return nil, fmt.Errorf("image tensor has %d channels, want 3 (or 1)", c)
	}
	if h <= 0 || w <= 0 || len(x) != c*h*w {
		return nil, fmt.Errorf("image tensor holds %d values, want %d*%d*%d", len(x), c, h, w)
	}
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	n := h * w
	for i := 0; i < n; i++ {
		p := img.Pix[4*i : 4*i+4]
		for ch := 0; ch < 3; ch++ {
			src := x[i]
			if c == 3 {
				src = x[ch*n+i]
			}
			p[ch] = toByte(src)
		}
		p[3] = 255
	}
	return img, nil
}

// toByte is save_img's per-value mapping.
func toByte(v float32) uint8 {
	s := (v + 1) * 127.5
	switch {
	case s != s:
		return 128
	case math.IsInf(float64(s), 1):
		return 0
	case math.IsInf(float64(s), -1):
		return 255
	}
	r := math.RoundToEven(float64(s))
	if r < 0 {
		return 0
	}
	if r > 255 {
		return 255
	}
	return uint8(r)
}

// PreprocessBatch preprocesses imgs into one (B, 3, size, size) float32
// tensor, row-major (see Preprocess). An error names the index of the image
// that caused it.
func PreprocessBatch(imgs []image.Image, size int, ratio float64) ([]float32, error) {
	if size <= 0 {
		return nil, fmt.Errorf("preprocess: bad size %d", size)
	}
	per := 3 * size * size
	out := make([]float32, len(imgs)*per)
	for i, img := range imgs {
		if err := PreprocessInto(out[i*per:(i+1)*per], img, size, ratio); err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
	}
	return out, nil
}

// SideBySide places images left to right on one canvas, top-aligned, the
// rest black: inference.py's torch.cat((img, rec_img), dim=3) before
// save_img (which maps each value on its own, so concatenating after
// FromTensor gives the same pixels).
func SideBySide(imgs ...*image.NRGBA) *image.NRGBA {
	w, h := 0, 0
	for _, m := range imgs {
		w += m.Rect.Dx()
		h = max(h, m.Rect.Dy())
	}
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	x0 := 0
	for _, m := range imgs {
		b := m.Rect
		for y := 0; y < b.Dy(); y++ {
			copy(out.Pix[out.PixOffset(x0, y):out.PixOffset(x0+b.Dx(), y)], m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):])
		}
		x0 += b.Dx()
	}
	return out
}
