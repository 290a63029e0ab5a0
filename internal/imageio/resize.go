package imageio

import (
	"math"
	"runtime"
	"sync"
)

// ResizedSize is the (width, height) torchvision's Resize(size) gives an
// image of w x h (transforms.functional._compute_resized_output_size with
// one int and no max_size): the shorter side becomes size and the longer
// one int(size * long / short), the quotient in float64 and truncated.
func ResizedSize(w, h, size int) (int, int) {
	short, long := w, h
	if w > h {
		short, long = h, w
	}
	newLong := int(float64(size*long) / float64(short))
	if w <= h {
		return size, newLong
	}
	return newLong, size
}

// ResizeShorter is torchvision's Resize(size) on a PIL RGB image: the size
// from ResizedSize, then PIL's Image.resize((w', h'), BILINEAR). The result
// equals PIL's bit for bit. An image already at that size is returned as is.
func ResizeShorter(src *RGB, size int) *RGB {
	w, h := ResizedSize(src.W, src.H, size)
	return Resize(src, w, h)
}

// Resize is PIL's Image.resize((w, h), Image.BILINEAR) on an RGB image:
// libImaging/Resample.c's ImagingResample with its antialiasing support
// (the triangle filter widened by the downscale factor), coefficients in
// fixed point with 22 fraction bits, horizontal pass first, each pass
// rounded and clipped to uint8. An image already at w x h is returned as is.
func Resize(src *RGB, w, h int) *RGB {
	if w == src.W && h == src.H {
		return src
	}
	vert := bilinearCoeffs(src.H, h)
	img := src
	if w != src.W {
		// Only the source rows the vertical pass reads are resampled, as
		// ImagingResampleInner does; the values are the same either way.
		first := vert.bounds[0]
		last := vert.bounds[2*(h-1)] + vert.bounds[2*(h-1)+1]
		horiz := bilinearCoeffs(src.W, w)
		img = resampleHorizontal(src, first, last, horiz)
		for i := 0; i < h; i++ {
			vert.bounds[2*i] -= first
		}
	}
	if h != src.H {
		img = resampleVertical(img, h, vert)
	}
	return img
}

const precisionBits = 32 - 8 - 2

// coeffs holds, for each output pixel, the first input pixel (bounds[2i]),
// the number of taps (bounds[2i+1]) and ksize fixed-point weights.
type coeffs struct {
	ksize  int
	bounds []int
	k      []int32
}

// bilinearCoeffs is precompute_coeffs followed by normalize_coeffs_8bpc for
// the bilinear filter and the box (0, inSize).
func bilinearCoeffs(inSize, outSize int) coeffs {
	const support0 = 1.0 // bilinear filter support
	// scale = (double)(in1 - in0) / outSize, in1 - in0 computed in float.
	scale := float64(float32(inSize)) / float64(outSize)
	filterscale := scale
	if filterscale < 1 {
		filterscale = 1
	}
	support := support0 * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	c := coeffs{ksize: ksize, bounds: make([]int, 2*outSize), k: make([]int32, outSize*ksize)}
	kk := make([]float64, ksize)
	for xx := 0; xx < outSize; xx++ {
		// float64(...) around each product keeps Go from fusing it into an
		// FMA, which the C code (built for baseline x86-64) does not do.
		center := 0 + float64((float64(xx)+0.5)*scale)
		ww := 0.0
		ss := 1.0 / filterscale
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > inSize {
			xmax = inSize
		}
		xmax -= xmin
		for x := 0; x < xmax; x++ {
			w := bilinear(float64((float64(x+xmin) - center + 0.5) * ss))
			kk[x] = w
			ww += w
		}
		k := c.k[xx*ksize : (xx+1)*ksize]
		for x := 0; x < xmax; x++ {
			v := kk[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				k[x] = int32(-0.5 + v*(1<<precisionBits))
			} else {
				k[x] = int32(0.5 + v*(1<<precisionBits))
			}
		}
		c.bounds[2*xx] = xmin
		c.bounds[2*xx+1] = xmax
	}
	return c
}

func bilinear(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if x < 1 {
		return 1 - x
	}
	return 0
}

// clip8 is libImaging's clip8: the sum shifted down by PRECISION_BITS and
// clamped to 0..255.
func clip8(ss int32) uint8 {
	v := ss >> precisionBits
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// resampleHorizontal is ImagingResampleHorizontal_8bpc over source rows
// [first, last).
func resampleHorizontal(src *RGB, first, last int, c coeffs) *RGB {
	w := len(c.bounds) / 2
	out := NewRGB(w, last-first)
	parallelRows(out.H, func(y0, y1 int) {
		for yy := y0; yy < y1; yy++ {
			row := src.Pix[3*(yy+first)*src.W : 3*(yy+first+1)*src.W]
			dst := out.Pix[3*yy*w : 3*(yy+1)*w]
			for xx := 0; xx < w; xx++ {
				xmin, n := c.bounds[2*xx], c.bounds[2*xx+1]
				k := c.k[xx*c.ksize : xx*c.ksize+n]
				p := row[3*xmin : 3*(xmin+n)]
				var s0, s1, s2 int32 = 1 << (precisionBits - 1), 1 << (precisionBits - 1), 1 << (precisionBits - 1)
				for x, kx := range k {
					s0 += int32(p[3*x]) * kx
					s1 += int32(p[3*x+1]) * kx
					s2 += int32(p[3*x+2]) * kx
				}
				dst[3*xx], dst[3*xx+1], dst[3*xx+2] = clip8(s0), clip8(s1), clip8(s2)
			}
		}
	})
	return out
}

// resampleVertical is ImagingResampleVertical_8bpc.
func resampleVertical(src *RGB, h int, c coeffs) *RGB {
	out := NewRGB(src.W, h)
	stride := 3 * src.W
	parallelRows(h, func(y0, y1 int) {
		acc := make([]int32, stride)
		for yy := y0; yy < y1; yy++ {
			ymin, n := c.bounds[2*yy], c.bounds[2*yy+1]
			k := c.k[yy*c.ksize : yy*c.ksize+n]
			for i := range acc {
				acc[i] = 1 << (precisionBits - 1)
			}
			for y, ky := range k {
				row := src.Pix[(ymin+y)*stride : (ymin+y+1)*stride]
				for i, v := range row {
					acc[i] += int32(v) * ky
				}
			}
			dst := out.Pix[yy*stride : (yy+1)*stride]
			for i, s := range acc {
				dst[i] = clip8(s)
			}
		}
	})
	return out
}

// parallelRows splits [0, n) into contiguous chunks over up to GOMAXPROCS
// goroutines; small jobs run inline.
func parallelRows(n int, fn func(y0, y1 int)) {
	workers := runtime.GOMAXPROCS(0)
	if workers > n/16 {
		workers = n / 16
	}
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for y0 := 0; y0 < n; y0 += chunk {
		y1 := min(y0+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(y0, y1)
		}()
	}
	wg.Wait()
}
