package imageio

import (
	"image"
)

// JPEG and lossy WebP store YCbCr with subsampled chroma. Go's decoders
// hand back the planes; how they become RGB is up to the reader, and PIL's
// readers (libjpeg-turbo, libwebp) interpolate chroma ("fancy upsampling")
// and round in their own fixed point. The functions here redo that
// arithmetic on Go's planes, so only the decoders' own differences remain
// (Go's IDCT is not libjpeg-turbo's ISLOW IDCT; VP8 reconstruction is
// normative).

// --- libjpeg-turbo: jdsample.c (h2v1/h2v2 fancy upsampling), jdcolor.c ---

const jScaleBits = 16

func jFix(x float64) int32 { return int32(x*(1<<jScaleBits) + 0.5) }

// jpegTables are jdcolor.c's build_ycc_rgb_table.
var jCrR, jCbB, jCrG, jCbG = func() (crr, cbb, crg, cbg [256]int32) {
	const half = 1 << (jScaleBits - 1)
	for i := range 256 {
		x := int32(i - 128)
		crr[i] = (jFix(1.40200)*x + half) >> jScaleBits
		cbb[i] = (jFix(1.77200)*x + half) >> jScaleBits
		crg[i] = -jFix(0.71414) * x
		cbg[i] = -jFix(0.34414)*x + half
	}
	return
}()

func clampU8(v int32) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// jpegYCbCrToRGB is libjpeg-turbo's ycc_rgb_convert for one pixel.
func jpegYCbCrToRGB(y, cb, cr uint8) (uint8, uint8, uint8) {
	yy := int32(y)
	return clampU8(yy + jCrR[cr]),
		clampU8(yy + (jCbG[cb]+jCrG[cr])>>jScaleBits),
		clampU8(yy + jCbB[cb])
}

// fancyRowH2 is the horizontal half of libjpeg-turbo's fancy upsampling
// (h2v2) on a row of column sums s = 3*near + far, writing 2*len(s) values. The
// rounding biases alternate 8 and 7 as in jdsample.c.
func fancyRowH2(dst []uint8, s []int32) {
	n := len(s)
	if n == 1 {
		dst[0] = uint8((s[0]*4 + 8) >> 4)
		dst[1] = uint8((s[0]*4 + 7) >> 4)
		return
	}
	dst[0] = uint8((s[0]*4 + 8) >> 4)
	dst[1] = uint8((s[0]*3 + s[1] + 7) >> 4)
	for i := 1; i < n-1; i++ {
		dst[2*i] = uint8((s[i]*3 + s[i-1] + 8) >> 4)
		dst[2*i+1] = uint8((s[i]*3 + s[i+1] + 7) >> 4)
	}
	dst[2*n-2] = uint8((s[n-1]*3 + s[n-2] + 8) >> 4)
	dst[2*n-1] = uint8((s[n-1]*4 + 7) >> 4)
}

// jpegUpsampleRow writes the full-width chroma of output row y (relative to
// the image's top) for a 4:2:0 or 4:2:2 plane, as libjpeg-turbo's
// h2v2_fancy_upsample / h2v1_fancy_upsample compute it.
func jpegUpsampleRow(dst []uint8, plane []uint8, stride, cw, ch, y int, v2 bool, sums []int32) {
	if !v2 {
		row := plane[y*stride : y*stride+cw]
		// h2v1_fancy_upsample: (3*nearer + further + 1 or 2) >> 2.
		if cw == 1 {
			dst[0], dst[1] = row[0], row[0]
			return
		}
		dst[0] = row[0]
		dst[1] = uint8((int32(row[0])*3 + int32(row[1]) + 2) >> 2)
		for i := 1; i < cw-1; i++ {
			dst[2*i] = uint8((int32(row[i])*3 + int32(row[i-1]) + 1) >> 2)
			dst[2*i+1] = uint8((int32(row[i])*3 + int32(row[i+1]) + 2) >> 2)
		}
		dst[2*cw-2] = uint8((int32(row[cw-1])*3 + int32(row[cw-2]) + 1) >> 2)
		dst[2*cw-1] = row[cw-1]
		return
	}
	near := y / 2
	far := near - 1 // even rows look up, odd rows down
	if y%2 == 1 {
		far = near + 1
	}
	far = max(0, min(far, ch-1))
	rn := plane[near*stride : near*stride+cw]
	rf := plane[far*stride : far*stride+cw]
	for i := range cw {
		sums[i] = int32(rn[i])*3 + int32(rf[i])
	}
	fancyRowH2(dst, sums[:cw])
}

// jpegToRGB converts Go's decoded JPEG planes as libjpeg-turbo would (fancy
// upsampling for 4:2:0 and 4:2:2, jdcolor.c's tables). Other subsampling
// ratios, and sub-images (whose planes need not start on a chroma sample),
// use Go's chroma replication with libjpeg's color tables.
func jpegToRGB(out *RGB, m *image.YCbCr) {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	var v2 bool
	switch {
	case b.Min != image.Point{}:
		v2 = false
		goto replicate
	case m.SubsampleRatio == image.YCbCrSubsampleRatio420:
		v2 = true
	case m.SubsampleRatio == image.YCbCrSubsampleRatio422:
	default:
		goto replicate
	}
	{
		cw := (w + 1) / 2
		ch := h
		if v2 {
			ch = (h + 1) / 2
		}
		cb := make([]uint8, 2*cw)
		cr := make([]uint8, 2*cw)
		sums := make([]int32, cw)
		for y := 0; y < h; y++ {
			jpegUpsampleRow(cb, m.Cb, m.CStride, cw, ch, y, v2, sums)
			jpegUpsampleRow(cr, m.Cr, m.CStride, cw, ch, y, v2, sums)
			yrow := m.Y[y*m.YStride : y*m.YStride+w]
			dst := out.Pix[3*y*w : 3*(y+1)*w]
			for x := range w {
				dst[3*x], dst[3*x+1], dst[3*x+2] = jpegYCbCrToRGB(yrow[x], cb[x], cr[x])
			}
		}
		return
	}
replicate:
	{
		i := 0
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				yi, ci := m.YOffset(x, y), m.COffset(x, y)
				out.Pix[i], out.Pix[i+1], out.Pix[i+2] = jpegYCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				i += 3
			}
		}
	}
}

// --- libwebp: dsp/yuv.h, dsp/upsampling.c, dec/io_dec.c EmitFancyRGB ---

func webpClip8(v int) uint8 {
	const mask = (256 << 6) - 1
	if v&^mask == 0 {
		return uint8(v >> 6)
	}
	if v < 0 {
		return 0
	}
	return 255
}

func multHi(v, c int) int { return (v * c) >> 8 }

func webpYUVToRGB(y, u, v int) (uint8, uint8, uint8) {
	return webpClip8(multHi(y, 19077) + multHi(v, 26149) - 14234),
		webpClip8(multHi(y, 19077) - multHi(u, 6419) - multHi(v, 13320) + 8708),
		webpClip8(multHi(y, 19077) + multHi(u, 33050) - 17685)
}

// webpUpsampleRow is one output row of UpsampleRgbaLinePair for one chroma
// channel: near is the chroma row weighted 3/4 vertically, far the other
// (the same row at the top edge and at the bottom of an even height).
func webpUpsampleRow(dst []uint8, n, f []uint8, w int) {
	dst[0] = uint8((3*int(n[0]) + int(f[0]) + 2) >> 2)
	last := (w - 1) >> 1
	for x := 1; x <= last; x++ {
		avg := int(n[x-1]) + int(n[x]) + int(f[x-1]) + int(f[x]) + 8
		dst[2*x-1] = uint8((((avg + 2*(int(n[x])+int(f[x-1]))) >> 3) + int(n[x-1])) >> 1)
		dst[2*x] = uint8((((avg + 2*(int(n[x-1])+int(f[x]))) >> 3) + int(n[x])) >> 1)
	}
	if w&1 == 0 {
		dst[w-1] = uint8((3*int(n[last]) + int(f[last]) + 2) >> 2)
	}
}

// webpToNRGBA converts the planes Go's VP8 decoder returns as libwebp
// (and so PIL) does: BT.601 limited range, fancy upsampling. alpha may be
// nil (opaque).
func webpToNRGBA(m *image.YCbCr, alpha []uint8, astride int) *image.NRGBA {
	b := m.Rect
	w, h := b.Dx(), b.Dy()
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	ch := (h + 1) / 2
	u := make([]uint8, w+1)
	v := make([]uint8, w+1)
	for y := 0; y < h; y++ {
		var near, far int
		switch {
		case y == 0:
			near, far = 0, 0
		case y%2 == 1:
			near, far = (y-1)/2, min((y+1)/2, ch-1)
		default:
			near, far = y/2, y/2-1
		}
		cw := (w + 1) / 2
		webpUpsampleRow(u, m.Cb[near*m.CStride:near*m.CStride+cw], m.Cb[far*m.CStride:far*m.CStride+cw], w)
		webpUpsampleRow(v, m.Cr[near*m.CStride:near*m.CStride+cw], m.Cr[far*m.CStride:far*m.CStride+cw], w)
		yrow := m.Y[y*m.YStride : y*m.YStride+w]
		dst := out.Pix[y*out.Stride : y*out.Stride+4*w]
		for x := range w {
			dst[4*x], dst[4*x+1], dst[4*x+2] = webpYUVToRGB(int(yrow[x]), int(u[x]), int(v[x]))
			if alpha != nil {
				dst[4*x+3] = alpha[y*astride+x]
			} else {
				dst[4*x+3] = 255
			}
		}
	}
	return out
}
