package imageio

import (
	"image"
	"image/color"
)

// RGB is an 8-bit RGB image packed row-major as (H, W, 3): the pixel at
// (x, y) is Pix[3*(y*W+x) : 3*(y*W+x)+3]. It is what PIL calls mode "RGB".
type RGB struct {
	W, H int
	Pix  []uint8
}

// NewRGB returns a zeroed (black) w x h image.
func NewRGB(w, h int) *RGB {
	return &RGB{W: w, H: h, Pix: make([]uint8, 3*w*h)}
}

// ToRGB converts img as PIL's Image.convert("RGB") converts the image PIL
// opens from the same file:
//
//   - Gray (L): replicated. Gray16 is PIL's mode I;16 (16-bit gray PNG):
//     PIL clips, min(v, 255), it does not scale.
//   - NRGBA / NRGBA64 (PNG with alpha, gray+alpha, tRNS): alpha dropped, not
//     composited; 16-bit channels keep their high byte (PIL reads 16-bit
//     RGB/RGBA/LA PNGs as 8-bit with rawmode ;16B, the most significant byte).
//   - RGBA / RGBA64 (Go's premultiplied types): opaque pixels are copied
//     (16-bit: high byte); non-opaque ones are un-premultiplied first (no
//     decoder here produces those; they can come from callers).
//   - Paletted (P): palette lookup, transparency ignored.
//   - CMYK (JPEG, after the Adobe inversion Go's decoder applies): PIL's
//     cmyk2rgb, R = nk - (c*nk)/255 rounded as MULDIV255, nk = 255-k.
//   - YCbCr / NYCbCrA (JPEG): libjpeg-turbo's conversion, as PIL gets it:
//     fancy (triangle) chroma upsampling for 4:2:0 and 4:2:2 and jdcolor.c's
//     fixed-point tables. Go's IDCT is not libjpeg-turbo's, so JPEG inputs
//     are close to, not equal to, PIL's (about 98% of values equal, the
//     rest off by one). Lossy WebP never reaches here: Decode converts it.
//   - anything else: through color.NRGBAModel.
func ToRGB(img image.Image) *RGB {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := NewRGB(w, h)
	switch m := img.(type) {
	case *image.Gray:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[3*y*w:]
			for x := 0; x < w; x++ {
				v := src[x]
				dst[3*x], dst[3*x+1], dst[3*x+2] = v, v, v
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[3*y*w:]
			for x := 0; x < w; x++ {
				v := uint8(255)
				if s := uint16(src[2*x])<<8 | uint16(src[2*x+1]); s < 255 {
					v = uint8(s)
				}
				dst[3*x], dst[3*x+1], dst[3*x+2] = v, v, v
			}
		}
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[3*y*w:]
			for x := 0; x < w; x++ {
				dst[3*x], dst[3*x+1], dst[3*x+2] = src[4*x], src[4*x+1], src[4*x+2]
			}
		}
	case *image.NRGBA64:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[3*y*w:]
			for x := 0; x < w; x++ {
				dst[3*x], dst[3*x+1], dst[3*x+2] = src[8*x], src[8*x+2], src[8*x+4]
			}
		}
	case *image.RGBA:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[3*y*w:]
			for x := 0; x < w; x++ {
				p := src[4*x : 4*x+4]
				if p[3] == 0xff {
					dst[3*x], dst[3*x+1], dst[3*x+2] = p[0], p[1], p[2]
				} else if a := uint32(p[3]) * 0x101; a != 0 {
					// color.NRGBAModel's un-premultiplication, inlined.
					dst[3*x] = uint8((uint32(p[0]) * 0x101 * 0xffff / a) >> 8)
					dst[3*x+1] = uint8((uint32(p[1]) * 0x101 * 0xffff / a) >> 8)
					dst[3*x+2] = uint8((uint32(p[2]) * 0x101 * 0xffff / a) >> 8)
				}
			}
		}
	case *image.RGBA64:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[3*y*w:]
			for x := 0; x < w; x++ {
				p := src[8*x : 8*x+8]
				if p[6] == 0xff && p[7] == 0xff {
					dst[3*x], dst[3*x+1], dst[3*x+2] = p[0], p[2], p[4]
				} else {
					c := color.RGBA64{uint16(p[0])<<8 | uint16(p[1]), uint16(p[2])<<8 | uint16(p[3]),
						uint16(p[4])<<8 | uint16(p[5]), uint16(p[6])<<8 | uint16(p[7])}
					n := color.NRGBA64Model.Convert(c).(color.NRGBA64)
					dst[3*x], dst[3*x+1], dst[3*x+2] = uint8(n.R>>8), uint8(n.G>>8), uint8(n.B>>8)
				}
			}
		}
	case *image.Paletted:
		var lut [256][3]uint8
		for i, c := range m.Palette {
			if i == 256 {
				break
			}
			lut[i] = paletteRGB(c)
		}
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[3*y*w:]
			for x := 0; x < w; x++ {
				c := lut[src[x]]
				dst[3*x], dst[3*x+1], dst[3*x+2] = c[0], c[1], c[2]
			}
		}
	case *image.CMYK:
		for y := 0; y < h; y++ {
			src := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			dst := out.Pix[3*y*w:]
			for x := 0; x < w; x++ {
				nk := 255 - int(src[4*x+3])
				dst[3*x] = cmykChannel(src[4*x], nk)
				dst[3*x+1] = cmykChannel(src[4*x+1], nk)
				dst[3*x+2] = cmykChannel(src[4*x+2], nk)
			}
		}
	case *image.YCbCr:
		jpegToRGB(out, m)
	case *image.NYCbCrA:
		jpegToRGB(out, &m.YCbCr)
	default:
		i := 0
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
				out.Pix[i], out.Pix[i+1], out.Pix[i+2] = c.R, c.G, c.B
				i += 3
			}
		}
	}
	return out
}

// paletteRGB is the RGB a palette entry stores. Go's PNG decoder gives
// color.RGBA for opaque entries and color.NRGBA for entries with tRNS alpha;
// both carry the stored RGB, which is what PIL's P->RGB lookup returns.
func paletteRGB(c color.Color) [3]uint8 {
	switch p := c.(type) {
	case color.NRGBA:
		return [3]uint8{p.R, p.G, p.B}
	case color.RGBA:
		if p.A == 0xff {
			return [3]uint8{p.R, p.G, p.B}
		}
	}
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	return [3]uint8{n.R, n.G, n.B}
}

// cmykChannel is one channel of PIL's cmyk2rgb (libImaging/Convert.c):
// CLIP8(nk - MULDIV255(v, nk)), MULDIV255(a, b) = ((t>>8)+t)>>8 with
// t = a*b+128. The result is always in 0..nk, so CLIP8 never clips.
func cmykChannel(v uint8, nk int) uint8 {
	t := int(v)*nk + 128
	return uint8(nk - ((t>>8)+t)>>8)
}
