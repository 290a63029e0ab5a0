package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/imageio"
)

const imageFixtures = "../../testdata/images"

// TestPreprocessMatchesPIL: the written tensor is torchvision's, bit for
// bit (bench/image_fixtures.py stores the crop and the v/255*2-1 table).
func TestPreprocessMatchesPIL(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.npy")
	r := cli("preprocess", "--in", filepath.Join(imageFixtures, "inputs/chelsea_full.png"), "--out", out)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "(451x300)")
	shape, x := readFloats(t, out)
	require.Equal(t, []int{3, 256, 256}, shape)

	img, _, err := imageio.Load(filepath.Join(imageFixtures, "want/694ecf603bf70561.png"), 0)
	require.NoError(t, err)
	crop := imageio.ToRGB(img)
	_, pm1 := readFloats(t, filepath.Join(imageFixtures, "pm1.npy"))
	n := 256 * 256
	bad := 0
	for i := 0; i < n; i++ {
		for c := 0; c < 3; c++ {
			if math.Float32bits(x[c*n+i]) != math.Float32bits(pm1[crop.Pix[3*i+c]]) {
				bad++
			}
		}
	}
	assert.Zero(t, bad, "values differing from PIL + torchvision")
	assertNoTemps(t, dir)

	// --size/--resize-ratio change the geometry.
	r = cli("preprocess", "--in", filepath.Join(imageFixtures, "inputs/tiny_1x1.png"), "--out", out, "--size", "8", "--resize-ratio", "1")
	require.Equal(t, 0, r.code, r.stderr)
	shape, x = readFloats(t, out)
	require.Equal(t, []int{3, 8, 8}, shape)
	assert.Equal(t, pm1[200], x[0]) // the pixel is (200, 30, 90)
	assert.Equal(t, pm1[90], x[2*64+63])
}

func TestPreprocessBadInput(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(imageFixtures, "inputs/coffee.png")
	out := filepath.Join(dir, "x.npy")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"truncated", []string{"--in", filepath.Join(imageFixtures, "inputs/truncated_png.png")}, "truncated or corrupt"},
		{"truncated jpeg", []string{"--in", filepath.Join(imageFixtures, "inputs/truncated_jpeg.jpg")}, "truncated or corrupt"},
		{"not an image", []string{"--in", filepath.Join(imageFixtures, "inputs/not_an_image.png")}, "not a PNG, JPEG, GIF, BMP or WebP image"},
		{"missing", []string{"--in", filepath.Join(dir, "nope.png")}, "no such file"},
		{"too large", []string{"--in", good, "--max-pixels", "1000"}, "over the limit of 1000"},
		{"no in", []string{}, "--in IMG and --out X.npy are required"},
		{"bad size", []string{"--in", good, "--size", "0"}, "--size 0"},
		{"bad ratio", []string{"--in", good, "--resize-ratio", "NaN"}, "--resize-ratio"},
		{"stray arg", []string{"--in", good, "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(out, []byte("precious"), 0o644))
			r := cli(append([]string{"preprocess", "--out", out}, tc.args...)...)
			assert.Equal(t, 1, r.code)
			assert.True(t, strings.HasPrefix(r.stderr, "unitok: "), r.stderr)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
			assert.Contains(t, r.stderr, tc.want)
			b, _ := os.ReadFile(out)
			assert.Equal(t, "precious", string(b), "existing output replaced")
			assertNoTemps(t, dir)
		})
	}
	// Outputs that cannot be written: nothing is created.
	for _, o := range []string{filepath.Join(dir, "x.png"), filepath.Join(dir, "missing", "x.npy"), dir} {
		r := cli("preprocess", "--in", good, "--out", o)
		assert.Equal(t, 1, r.code, o)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	}
	_, err := os.Stat(filepath.Join(dir, "x.png"))
	assert.True(t, os.IsNotExist(err))
	assertNoTemps(t, dir)
}
