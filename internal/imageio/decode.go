// Package imageio reads images and prepares them for UniTok exactly as
// UniTok's inference.py does with PIL and torchvision:
//
//	Image.open(p).convert("RGB")                    -> Decode + ToRGB
//	transforms.Resize(int(img_size*resize_ratio))   -> ResizeShorter (PIL bilinear, bit-exact)
//	transforms.CenterCrop(img_size)                 -> CenterCrop
//	transforms.ToTensor(), normalize_01_into_pm1    -> ToTensor
//	save_img                                        -> FromTensor + EncodePNG
//
// Preprocess runs all of them. Everything is pure Go.
package imageio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"strings"

	"golang.org/x/image/bmp"
	_ "golang.org/x/image/webp" // registers WebP
)

// DefaultMaxPixels is the pixel limit Decode applies when given maxPixels <= 0:
// 100 megapixels, refused from the header before any pixel is decoded.
const DefaultMaxPixels int64 = 100_000_000

// Sentinel errors; every error Decode returns (other than the reader's own)
// wraps exactly one of them, so callers can map them (the root package maps
// all four to ErrBadInput).
var (
	// ErrUnknownFormat: the bytes are not PNG, JPEG, GIF, BMP or WebP.
	ErrUnknownFormat = errors.New("not a PNG, JPEG, GIF, BMP or WebP image")
	// ErrTooLarge: width*height exceeds the pixel limit.
	ErrTooLarge = errors.New("image too large")
	// ErrCorrupt: the header or the pixel data could not be decoded
	// (truncated file, bad checksum).
	ErrCorrupt = errors.New("corrupt or truncated image")
	// ErrUnsupported: a valid file in a variant Go's decoders do not read
	// (e.g. a 4-channel JPEG without Adobe metadata, a 16-bit BMP).
	ErrUnsupported = errors.New("unsupported image variant")
)

// formatError wraps a decoder error as one line naming the format.
type formatError struct {
	sentinel error
	msg      string
}

func (e *formatError) Error() string { return e.msg }
func (e *formatError) Unwrap() error { return e.sentinel }

// DecodeConfig reads only the header: the dimensions, Go's color model and
// the format name ("png", "jpeg", "gif", "bmp" or "webp").
func DecodeConfig(r io.Reader) (image.Config, string, error) {
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return image.Config{}, "", classify(format, "header", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return image.Config{}, format, &formatError{ErrCorrupt, fmt.Sprintf("%s image has no pixels (%dx%d)", format, cfg.Width, cfg.Height)}
	}
	return cfg, format, nil
}

// Decode reads a whole PNG, JPEG, GIF (first frame), BMP or WebP image.
// Images with more than maxPixels pixels (DefaultMaxPixels when
// maxPixels <= 0) are refused from the header, before decoding. Errors are
// one line and wrap ErrUnknownFormat, ErrTooLarge, ErrCorrupt or
// ErrUnsupported.
//
// Four adjustments make the result carry what PIL sees:
//   - lossy WebP: Go's decoder returns YCbCr planes that its color
//     conversion would read as full-range JPEG YCbCr; Decode converts them
//     as libwebp does (limited range, fancy upsampling) to *image.NRGBA.
//   - GIF: Go's decoder replaces the transparent palette entry with
//     transparent black; PIL keeps the stored color, and convert("RGB") shows
//     it. Decode keeps the stored color (the palette entry stays opaque).
//   - GIF whose first frame covers only part of the logical screen: PIL's
//     image is screen-sized, filled with the transparent index (else index
//     0); Decode returns the same.
//   - PNG 16-bit gray with a tRNS chunk: Go returns NRGBA64, which would be
//     indistinguishable from 16-bit RGB; PIL opens it as mode I;16, whose
//     conversion to RGB differs (it clips at 255). Decode returns
//     *image.Gray16 (the transparency key is dropped, as convert("RGB")
//     drops it).
func Decode(r io.Reader, maxPixels int64) (image.Image, string, error) {
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	// The header is read first, through a tee, so that an image over the
	// limit is refused before any pixel data is read; the decoder then gets
	// the bytes already read followed by the rest of the stream.
	src := &errReader{r: r}
	var head bytes.Buffer
	cfg, format, err := DecodeConfig(io.TeeReader(src, &head))
	if src.err != nil {
		return nil, format, fmt.Errorf("reading image: %w", src.err)
	}
	if err != nil {
		return nil, format, err
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > maxPixels {
		return nil, format, &formatError{ErrTooLarge, fmt.Sprintf("%s image is %dx%d = %d pixels, over the limit of %d", format, cfg.Width, cfg.Height, px, maxPixels)}
	}
	if format == "webp" && isAnimatedWebP(head.Bytes()) {
		return nil, format, &formatError{ErrUnsupported, "unsupported webp image: animated WebP (PIL would read its first frame; Go's decoder reads none)"}
	}
	full := io.MultiReader(bytes.NewReader(head.Bytes()), src)
	var img image.Image
	switch format {
	case "gif":
		// The flag to clear sits before the first frame, so the whole file
		// is read (all frames: the pixel limit bounds each frame, not the
		// file).
		var data []byte
		if data, err = io.ReadAll(full); err != nil {
			break
		}
		var trns int
		data, trns = gifKeepTransparentColor(data)
		img, err = gif.Decode(bytes.NewReader(data))
		if m, ok := img.(*image.Paletted); ok && err == nil {
			img = gifCanvas(m, cfg.Width, cfg.Height, trns)
		}
	default:
		img, _, err = image.Decode(full)
	}
	if src.err != nil {
		return nil, format, fmt.Errorf("reading image: %w", src.err)
	}
	if err != nil {
		return nil, format, classify(format, "data", err)
	}
	if format == "webp" {
		// Go's VP8 decoder returns the planes; libwebp (PIL) converts them
		// with limited-range BT.601 and fancy upsampling. Go's own YCbCr
		// conversion would read them as full-range JFIF: wrong colors.
		switch m := img.(type) {
		case *image.YCbCr:
			img = webpToNRGBA(m, nil, 0)
		case *image.NYCbCrA:
			img = webpToNRGBA(&m.YCbCr, m.A, m.AStride)
		}
	}
	if format == "png" && isGray16PNG(head.Bytes()) {
		if m, ok := img.(*image.NRGBA64); ok {
			img = nrgba64ToGray16(m)
		}
	}
	return img, format, nil
}

// errReader remembers the first error of the underlying reader other than
// io.EOF, so that a failing disk is not reported as a corrupt image.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// Load opens and decodes the file at path (see Decode).
func Load(path string, maxPixels int64) (image.Image, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, "", fmt.Errorf("%s is a directory, not an image", path)
	}
	img, format, err := Decode(f, maxPixels)
	if err != nil {
		return nil, format, fmt.Errorf("%s: %w", path, err)
	}
	return img, format, nil
}

func classify(format, part string, err error) error {
	if errors.Is(err, image.ErrFormat) {
		return &formatError{ErrUnknownFormat, ErrUnknownFormat.Error()}
	}
	msg := err.Error()
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		msg = "unexpected end of file"
	}
	var ju jpeg.UnsupportedError
	var pu png.UnsupportedError
	if errors.As(err, &ju) || errors.As(err, &pu) || errors.Is(err, bmp.ErrUnsupported) || strings.Contains(msg, "unsupported") {
		return &formatError{ErrUnsupported, fmt.Sprintf("unsupported %s image: %s", format, oneLine(msg))}
	}
	return &formatError{ErrCorrupt, fmt.Sprintf("%s image %s is truncated or corrupt: %s", format, part, oneLine(msg))}
}

func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}

// isGray16PNG reports whether the PNG header says color type 0 (gray) at
// bit depth 16. IHDR is always the first chunk: signature (8), length (4),
// "IHDR" (4), width (4), height (4), bit depth (1), color type (1).
func isGray16PNG(data []byte) bool {
	return len(data) >= 26 && string(data[12:16]) == "IHDR" && data[24] == 16 && data[25] == 0
}

// isAnimatedWebP reports whether the extended header (VP8X, the first
// chunk after "RIFF" size "WEBP") has its animation flag set.
func isAnimatedWebP(data []byte) bool {
	return len(data) >= 21 && string(data[12:16]) == "VP8X" && data[20]&0x02 != 0
}

func nrgba64ToGray16(m *image.NRGBA64) *image.Gray16 {
	b := m.Bounds()
	g := image.NewGray16(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		src := m.Pix[m.PixOffset(b.Min.X, y):]
		dst := g.Pix[g.PixOffset(b.Min.X, y):]
		for x := 0; x < b.Dx(); x++ {
			dst[2*x], dst[2*x+1] = src[8*x], src[8*x+1]
		}
	}
	return g
}

// gifKeepTransparentColor returns data with the transparency flag of the
// graphic control extension that precedes the first image cleared, so that
// Go's decoder keeps the palette color stored at the transparent index (as
// PIL does), and that index (-1 if none). Data it cannot walk is returned
// unchanged (the decoder then reports the problem).
func gifKeepTransparentColor(data []byte) ([]byte, int) {
	const hdr = 6 + 7
	if len(data) < hdr {
		return data, -1
	}
	p := hdr
	if flags := data[10]; flags&0x80 != 0 {
		p += 3 << ((flags & 7) + 1)
	}
	for p < len(data) {
		if data[p] != 0x21 || p+1 >= len(data) {
			// Image descriptor (0x2C), trailer or garbage: stop.
			return data, -1
		}
		// Extension: label, then sub-blocks.
		label := data[p+1]
		q := p + 2
		if label == 0xF9 && q+4 < len(data) && data[q] == 4 && data[q+1]&1 != 0 {
			out := append([]byte(nil), data...)
			out[q+1] &^= 1
			return out, int(data[q+4])
		}
		for q < len(data) && data[q] != 0 {
			q += int(data[q]) + 1
		}
		p = q + 1
	}
	return data, -1
}

// gifCanvas places a first frame that does not cover the logical screen on
// a screen-sized image filled, as PIL fills it, with the transparent index
// if there is one and index 0 otherwise (not the background color).
func gifCanvas(m *image.Paletted, w, h, trns int) *image.Paletted {
	screen := image.Rect(0, 0, w, h)
	if m.Rect == screen {
		return m
	}
	out := image.NewPaletted(screen, m.Palette)
	if trns > 0 {
		for i := range out.Pix {
			out.Pix[i] = uint8(trns)
		}
	}
	r := m.Rect.Intersect(screen)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		copy(out.Pix[out.PixOffset(r.Min.X, y):out.PixOffset(r.Max.X, y)], m.Pix[m.PixOffset(r.Min.X, y):])
	}
	return out
}

// EncodePNG writes img as a PNG (Go's encoder at default compression; the
// pixel values are what matters, the bytes differ from PIL's).
func EncodePNG(w io.Writer, img image.Image) error {
	return png.Encode(w, img)
}
