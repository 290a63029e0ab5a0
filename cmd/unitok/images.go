package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/unitok/unitok/internal/imageio"
	"github.com/unitok/unitok/internal/npy"
)

// runPreprocess writes UniTok's model input for one image: inference.py's
// convert("RGB"), Resize(int(size*ratio)), CenterCrop(size), ToTensor,
// x*2-1, as a float32 (3, size, size) .npy, atomically.
func runPreprocess(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("preprocess")
	in := fs.String("in", "", "input image (PNG, JPEG, GIF, BMP or WebP)")
	out := fs.String("out", "", "output .npy: float32 (3, size, size) in [-1, 1]")
	size := fs.Int("size", imageio.DefaultSize, "crop size (UniTok's img_size)")
	ratio := fs.Float64("resize-ratio", imageio.DefaultResizeRatio, "the shorter side is resized to int(size*ratio) first")
	maxPixels := fs.Int64("max-pixels", imageio.DefaultMaxPixels, "refuse images with more pixels than this (read from the header)")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("preprocess: unexpected argument %q (use --in and --out)", pos[0])
	}
	if *in == "" || *out == "" {
		return fmt.Errorf("preprocess: --in IMG and --out X.npy are required")
	}
	if !strings.HasSuffix(*out, ".npy") {
		return fmt.Errorf("preprocess: --out %s must end in .npy", *out)
	}
	if *size <= 0 || *size > 16384 {
		return fmt.Errorf("preprocess: --size %d: want 1..16384", *size)
	}
	if !(*ratio > 0 && *ratio <= 16) || int(float64(*size)**ratio) < 1 {
		return fmt.Errorf("preprocess: --resize-ratio %v: want a number in (0, 16]", *ratio)
	}
	if *maxPixels <= 0 {
		return fmt.Errorf("preprocess: --max-pixels %d: want a positive number", *maxPixels)
	}
	if a, _ := filepath.Abs(*in); a != "" {
		if b, _ := filepath.Abs(*out); a == b {
			return fmt.Errorf("preprocess: --out %s is the input", *out)
		}
	}
	if err := checkOut(*out); err != nil {
		return err
	}
	img, _, err := imageio.Load(*in, *maxPixels)
	if err != nil {
		return pathErr(*in, err)
	}
	x, err := imageio.Preprocess(img, *size, *ratio)
	if err != nil {
		return pathErr(*in, err)
	}
	if err := npy.WriteFloat32(*out, []int{3, *size, *size}, x); err != nil {
		return fmt.Errorf("--out %s: %w", *out, err)
	}
	b := img.Bounds()
	fmt.Fprintf(stderr, "preprocessed %s (%dx%d) -> %s (3, %d, %d)\n", *in, b.Dx(), b.Dy(), *out, *size, *size)
	return nil
}
