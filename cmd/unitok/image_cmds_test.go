package main

import (
	"context"
	"encoding/json"
	"fmt"
	"image"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/imageio"
	"github.com/unitok/unitok/internal/npy"
)

// The tiny UniTok checkpoint in the released .pth layout (bf16 weights,
// text tower included) and the PyTorch outputs of inference.py on two
// photos with it (bench/image_cli_fixture.py).
const (
	tinyPth   = "../../testdata/image/tiny_pth/unitok_tiny_bf16.pth"
	cliFix    = "../../testdata/image/cli"
	tinyHeads = "4" // UniTok's args do not record the projections' heads
)

var cliImages = []string{"chelsea_full", "coffee"}

func photo(name string) string { return filepath.Join(imageFixtures, "inputs", name+".png") }

func imgCLI(cmd string, args ...string) result {
	return cli(append([]string{cmd, "--checkpoint", tinyPth, "--heads", tinyHeads, "--device", "cpu", "--threads", "2"}, args...)...)
}

func relL2(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

// pixelDiff compares two images' RGB: the count of differing values and
// the largest difference.
func pixelDiff(t *testing.T, a, b image.Image) (int, int) {
	t.Helper()
	ra, rb := imageio.ToRGB(a), imageio.ToRGB(b)
	require.Equal(t, [2]int{ra.W, ra.H}, [2]int{rb.W, rb.H})
	n, m := 0, 0
	for i := range ra.Pix {
		d := int(ra.Pix[i]) - int(rb.Pix[i])
		if d != 0 {
			n++
			m = max(m, d, -d)
		}
	}
	return n, m
}

func loadPNG(t *testing.T, p string) image.Image {
	t.Helper()
	img, _, err := imageio.Load(p, 0)
	require.NoError(t, err)
	return img
}

// TestImageCommandsMatchPyTorch runs tokenize, detokenize, reconstruct and
// embed on two photos and checks them against inference.py in PyTorch and
// against the Go library.
func TestImageCommandsMatchPyTorch(t *testing.T) {
	dir := t.TempDir()
	_, wantCodes := readIntsFile(t, filepath.Join(cliFix, "codes.npy"))
	_, margins := readFloats(t, filepath.Join(cliFix, "margins.npy"))
	_, wantRec := readFloats(t, filepath.Join(cliFix, "rec.npy"))
	_, wantEmb := readFloats(t, filepath.Join(cliFix, "emb.npy"))
	_, wantX := readFloats(t, filepath.Join(cliFix, "x.npy"))
	const S, N, K, E = 64, 16, 4, 48
	tok := openLib(t, tinyPth, unitok.WithHeads(4))
	ctx := context.Background()
	for i, name := range cliImages {
		t.Run(name, func(t *testing.T) {
			in := photo(name)
			// tokenize: codes equal PyTorch's above the margin, and the library's.
			codesOut := filepath.Join(dir, name+"_codes.npy")
			r := imgCLI("tokenize", "--in", in, "--out", codesOut)
			require.Equal(t, 0, r.code, r.stderr)
			assert.Regexp(t, `^tokenized .*`+name+`\.png \(\d+x\d+\) -> codes \(16,4\) uint16 in [0-9.]+s \(cpu, 64x64 input, 16 tokens\)\n$`, r.stderr)
			shape, dt, codes := readInts(t, codesOut)
			require.Equal(t, []int{N, K}, shape)
			require.Equal(t, npy.Uint16, dt)
			want := wantCodes[i*N*K : (i+1)*N*K]
			checked := 0
			for j := range want {
				if margins[i*N*K+j] > 1e-4 {
					require.Equal(t, want[j], codes[j], "code %d", j)
					checked++
				}
			}
			require.Greater(t, checked, N*K*9/10, "too few codes above the margin")
			img := loadPNG(t, in)
			lib, err := tok.TokenizeImages(ctx, []image.Image{img})
			require.NoError(t, err)
			require.Equal(t, lib, codes)

			// detokenize PyTorch's codes: .npy within 1e-4 of idx_to_img,
			// .png equal to save_img up to rounding at .5 ties.
			pyCodes := filepath.Join(dir, name+"_py.npy")
			require.NoError(t, npy.WriteInts(pyCodes, []int{N, K}, want, "int64"))
			recNpy := filepath.Join(dir, name+"_rec.npy")
			r = imgCLI("detokenize", "--in", pyCodes, "--out", recNpy)
			require.Equal(t, 0, r.code, r.stderr)
			shape, rec := readFloats(t, recNpy)
			require.Equal(t, []int{3, S, S}, shape)
			wr := wantRec[i*3*S*S : (i+1)*3*S*S]
			assert.Less(t, relL2(rec, wr), 1e-4)
			recPng := filepath.Join(dir, name+"_rec.png")
			r = imgCLI("detokenize", "--in", pyCodes, "--out", recPng)
			require.Equal(t, 0, r.code, r.stderr)
			assert.Contains(t, r.stderr, "-> "+recPng+" (64x64)")
			pyImg, err := imageio.FromTensor(wr, 3, S, S)
			require.NoError(t, err)
			n, m := pixelDiff(t, loadPNG(t, recPng), pyImg)
			assert.LessOrEqual(t, m, 1)
			assert.Less(t, n, 3*S*S/100)

			// reconstruct --side-by-side: inference.py's picture. The left
			// half (preprocessed input) is exact; the right half within
			// one level where a value sits at a rounding tie.
			side := filepath.Join(dir, name+"_side.png")
			r = imgCLI("reconstruct", in, side, "--side-by-side")
			require.Equal(t, 0, r.code, r.stderr)
			assert.Regexp(t, regexp.MustCompile(`^reconstructed .* \(\d+x\d+ -> 64x64\) through codes \(16,4\) in [0-9.]+s \(tokenize [0-9.]+s, detokenize [0-9.]+s, cpu\): PSNR [0-9.]+ dB vs the preprocessed input -> .*_side\.png \(left: input after resize\+crop, right: reconstruction\)\n$`), r.stderr)
			got := loadPNG(t, side)
			require.Equal(t, image.Rect(0, 0, 2*S, S), got.Bounds())
			wantSide := loadPNG(t, filepath.Join(cliFix, name+"_side.png"))
			left := func(m image.Image) image.Image {
				return m.(interface {
					SubImage(image.Rectangle) image.Image
				}).SubImage(image.Rect(0, 0, S, S))
			}
			n, _ = pixelDiff(t, left(got), left(wantSide))
			assert.Zero(t, n, "preprocessed input differs from PIL's")
			n, m = pixelDiff(t, got, wantSide)
			require.True(t, equalInts(codes, want), "codes differ from PyTorch's; the side-by-side check needs them equal")
			assert.LessOrEqual(t, m, 1)
			assert.Less(t, n, 3*S*S/100)
			t.Logf("%d codes checked above margin 1e-4; side by side: %d of %d values differ from PyTorch's, max %d; rec rel L2 %.2g",
				checked, n, 2*3*S*S, m, relL2(rec, wr))
			// The PSNR printed is the library's on the two halves.
			xin, err := imageio.FromTensor(wantX[i*3*S*S:(i+1)*3*S*S], 3, S, S)
			require.NoError(t, err)
			recs, err := tok.DetokenizeImages(ctx, lib, 1)
			require.NoError(t, err)
			psnr, err := unitok.PSNR(xin, recs[0])
			require.NoError(t, err)
			assert.Contains(t, r.stderr, "PSNR "+strings.TrimSpace(psnrStr(psnr)))
			// Without --side-by-side: the reconstruction alone, and --codes.
			recOnly := filepath.Join(dir, name+"_only.png")
			codes2 := filepath.Join(dir, name+"_codes2.npy")
			r = imgCLI("reconstruct", "--in", in, "--out", recOnly, "--codes", codes2)
			require.Equal(t, 0, r.code, r.stderr)
			n, _ = pixelDiff(t, loadPNG(t, recOnly), recs[0])
			assert.Zero(t, n)
			_, _, c2 := readInts(t, codes2)
			assert.Equal(t, codes, c2)

			// embed: within 1e-3 of encode_image(normalize=True).
			embOut := filepath.Join(dir, name+"_emb.npy")
			r = imgCLI("embed", "--in", in, "--out", embOut)
			require.Equal(t, 0, r.code, r.stderr)
			shape, emb := readFloats(t, embOut)
			require.Equal(t, []int{E}, shape)
			for j, v := range wantEmb[i*E : (i+1)*E] {
				assert.InDelta(t, v, emb[j], 1e-3)
			}
		})
	}

	// Batched detokenize: (B,N,K) -> OUT-000.png, OUT-001.png; .npy (B,3,S,S).
	all := filepath.Join(dir, "all.npy")
	require.NoError(t, npy.WriteInts(all, []int{2, N, K}, wantCodes, "int32"))
	r := imgCLI("detokenize", "--in", all, "--out", filepath.Join(dir, "b.png"))
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "b-000.png ... ")
	for i := range 2 {
		pyImg, err := imageio.FromTensor(wantRec[i*3*S*S:(i+1)*3*S*S], 3, S, S)
		require.NoError(t, err)
		_, m := pixelDiff(t, loadPNG(t, filepath.Join(dir, []string{"b-000.png", "b-001.png"}[i])), pyImg)
		assert.LessOrEqual(t, m, 1)
	}
	_, err := os.Stat(filepath.Join(dir, "b.png"))
	assert.True(t, os.IsNotExist(err), "B>1 writes numbered files only")
	r = imgCLI("detokenize", "--in", all, "--out", filepath.Join(dir, "b.npy"))
	require.Equal(t, 0, r.code, r.stderr)
	shape, rec := readFloats(t, filepath.Join(dir, "b.npy"))
	require.Equal(t, []int{2, 3, S, S}, shape)
	assert.Less(t, relL2(rec, wantRec), 1e-4)
	assertNoTemps(t, dir)
}

func equalInts(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func readIntsFile(t *testing.T, p string) ([]int, []int32) {
	s, _, v := readInts(t, p)
	return s, v
}

// TestImageCommandsBadInput: one line, exit 1, nothing written, an existing
// output left alone.
func TestImageCommandsBadInput(t *testing.T) {
	dir := t.TempDir()
	good := photo("coffee")
	codes := func(name string, shape []int, v []int32, dt string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, npy.WriteInts(p, shape, v, dt))
		return p
	}
	okCodes := make([]int32, 16*4)
	bigCode := append([]int32{64}, okCodes[1:]...)
	negCode := append([]int32{-1}, okCodes[1:]...)
	floats := filepath.Join(dir, "f.npy")
	require.NoError(t, npy.WriteFloat32(floats, []int{16, 4}, make([]float32, 64)))
	in := func(p string) []string { return []string{"--in", p} }
	for _, tc := range []struct {
		name, cmd, out string
		args           []string
		want           string
	}{
		{"missing image", "tokenize", "o.npy", in(filepath.Join(dir, "nope.png")), "no such file"},
		{"truncated png", "tokenize", "o.npy", in(filepath.Join(imageFixtures, "inputs/truncated_png.png")), "truncated or corrupt"},
		{"truncated jpeg", "embed", "o.npy", in(filepath.Join(imageFixtures, "inputs/truncated_jpeg.jpg")), "truncated or corrupt"},
		{"not an image", "reconstruct", "o.png", in(filepath.Join(imageFixtures, "inputs/not_an_image.png")), "not a PNG, JPEG, GIF, BMP or WebP image"},
		{"over the pixel limit", "tokenize", "o.npy", append(in(good), "--max-pixels", "1000"), "over the limit of 1000"},
		{"bad max pixels", "tokenize", "o.npy", append(in(good), "--max-pixels", "0"), "--max-pixels 0"},
		{"tokenize out not npy", "embed", "o.png", in(good), "want a .npy file"},
		{"reconstruct out not png", "reconstruct", "o.npy", in(good), "want a .png file"},
		{"detokenize out ext", "detokenize", "o.jpg", in(codes("c.npy", []int{16, 4}, okCodes, "int32")), "want a .png or .npy file"},
		{"code out of range", "detokenize", "o.png", in(codes("big.npy", []int{16, 4}, bigCode, "int32")), "64"},
		{"negative code", "detokenize", "o.npy", in(codes("neg.npy", []int{16, 4}, negCode, "int64")), "-1"},
		{"codes rank 1", "detokenize", "o.png", in(codes("r1.npy", []int{64}, okCodes, "int32")), "shape (64,): detokenize wants (N,K) or (B,N,K) codes"},
		{"codes wrong N", "detokenize", "o.png", in(codes("n.npy", []int{8, 8}, okCodes, "int32")), "N=8, K=8, but the checkpoint takes N=16 tokens (64x64 image) and K=4"},
		{"codes float", "detokenize", "o.png", in(floats), "dtype float32"},
		{"missing codes", "detokenize", "o.png", in(filepath.Join(dir, "none.npy")), "no such file"},
		{"unknown flag", "embed", "o.npy", append(in(good), "--bogus"), "unknown flag --bogus"},
		{"extra positional", "embed", "o.npy", append(in(good), "x"), `unexpected argument "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.out)
			require.NoError(t, os.WriteFile(out, []byte("precious"), 0o644))
			r := imgCLI(tc.cmd, append([]string{"--out", out}, tc.args...)...)
			assert.Equal(t, 1, r.code)
			assert.True(t, strings.HasPrefix(r.stderr, "unitok: "), r.stderr)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
			assert.Contains(t, r.stderr, tc.want)
			b, _ := os.ReadFile(out)
			assert.Equal(t, "precious", string(b), "existing output replaced")
			assertNoTemps(t, dir)
		})
	}

	// A core-only checkpoint names what is missing, for every image command.
	core := "../../testdata/sample/model.safetensors"
	for _, cmd := range [][]string{
		{"tokenize", "--in", good, "--out", filepath.Join(dir, "c1.npy")},
		{"embed", "--in", good, "--out", filepath.Join(dir, "c2.npy")},
		{"reconstruct", good, filepath.Join(dir, "c3.png")},
		{"detokenize", "--in", codes("c4in.npy", []int{16, 4}, okCodes, "int32"), "--out", filepath.Join(dir, "c4.png")},
		{"tokenize", "--in", filepath.Join(imageFixtures, "inputs"), "--out", filepath.Join(dir, "c5")},
	} {
		r := cli(append([]string{cmd[0], "--checkpoint", core, "--device", "cpu"}, cmd[1:]...)...)
		assert.Equal(t, 1, r.code, cmd)
		assert.Equal(t, "unitok: "+core+": image model: missing tensor encoder.patch_embed.backbone.stem.conv1.weight (no ViTamin encoder in the checkpoint)\n", r.stderr)
	}
	for _, p := range []string{"c1.npy", "c2.npy", "c3.png", "c4.png", "c5"} {
		_, err := os.Stat(filepath.Join(dir, p))
		assert.True(t, os.IsNotExist(err), p)
	}
	// Batched PNG output: when one name cannot be published none is.
	all := codes("all.npy", []int{2, 16, 4}, append(okCodes, okCodes...), "int32")
	require.NoError(t, os.Mkdir(filepath.Join(dir, "b-001.png"), 0o755))
	r := imgCLI("detokenize", "--in", all, "--out", filepath.Join(dir, "b.png"))
	assert.Equal(t, 1, r.code)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), r.stderr)
	_, err := os.Stat(filepath.Join(dir, "b-000.png"))
	assert.True(t, os.IsNotExist(err), "b-000.png published although b-001.png failed")
	assertNoTemps(t, dir)
}

// TestTokenizeDirectory: the data-prep mode over images: mirrored outputs
// equal to the one-image command's, a manifest, a bad file named and
// skipped with exit 1, and resume.
func TestTokenizeDirectory(t *testing.T) {
	src := t.TempDir()
	out := filepath.Join(t.TempDir(), "codes")
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(to), 0o755))
		require.NoError(t, os.WriteFile(to, b, 0o644))
	}
	copyFile(photo("chelsea_full"), filepath.Join(src, "chelsea_full.png"))
	copyFile(photo("coffee"), filepath.Join(src, "sub", "coffee.png"))
	copyFile(filepath.Join(imageFixtures, "inputs/gif.gif"), filepath.Join(src, "sub", "deep", "anim.gif"))
	copyFile(filepath.Join(imageFixtures, "inputs/truncated_png.png"), filepath.Join(src, "sub", "broken.png"))
	require.NoError(t, os.WriteFile(filepath.Join(src, "notes.txt"), []byte("not an image, not looked at"), 0o644))

	r := imgCLI("tokenize", "--in", src, "--out", out, "--batch", "2", "--codes-dtype", "int32")
	assert.Equal(t, 1, r.code, r.stderr)
	assert.Contains(t, r.stderr, "tokenize on cpu: 4 images: 3 done, 0 already done, 1 failed\n")
	assert.Contains(t, r.stderr, "  failed: sub/broken.png: png image data is truncated or corrupt")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	assert.True(t, strings.HasPrefix(last, "unitok: prep: 1 of 4 images failed (first: sub/broken.png: "), last)

	// Each output equals the one-image command's, byte for byte.
	for _, p := range []struct{ in, out string }{
		{"chelsea_full.png", "chelsea_full.npy"}, {"sub/coffee.png", "sub/coffee.npy"}, {"sub/deep/anim.gif", "sub/deep/anim.npy"},
	} {
		one := filepath.Join(t.TempDir(), "one.npy")
		r := imgCLI("tokenize", "--in", filepath.Join(src, p.in), "--out", one, "--codes-dtype", "int32")
		require.Equal(t, 0, r.code, r.stderr)
		a, err := os.ReadFile(one)
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(out, p.out))
		require.NoError(t, err, p.out)
		assert.Equal(t, a, b, p.out)
	}
	_, err := os.Stat(filepath.Join(out, "sub", "broken.npy"))
	assert.True(t, os.IsNotExist(err))
	recs := readManifestFile(t, filepath.Join(out, "manifest.jsonl"))
	assert.Len(t, recs, 3)
	for _, rec := range recs {
		assert.Contains(t, rec["params"], "op=tokenize-image")
		assert.Contains(t, rec["params"], "dtype=int32")
		assert.EqualValues(t, 16, rec["tokens"])
	}

	// Rerun: the done images are skipped, the bad one is reported again.
	r = imgCLI("tokenize", "--in", src, "--out", out, "--codes-dtype", "int32")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "4 images: 0 done, 3 already done, 1 failed")
	// Fix the bad file and lose one output: only those two are done.
	copyFile(photo("coffee"), filepath.Join(src, "sub", "broken.png"))
	require.NoError(t, os.Remove(filepath.Join(out, "chelsea_full.npy")))
	r = imgCLI("tokenize", "--in", src, "--out", out, "--codes-dtype", "int32")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "4 images: 2 done, 2 already done, 0 failed")
	a, _ := os.ReadFile(filepath.Join(out, "sub", "coffee.npy"))
	b, _ := os.ReadFile(filepath.Join(out, "sub", "broken.npy"))
	assert.Equal(t, a, b)
	// Another codes dtype is another output: nothing is taken as done.
	r = imgCLI("tokenize", "--in", filepath.Join(src, "sub", "*.png"), "--out", out)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "2 images: 2 done, 0 already done, 0 failed")
	_, dt, _ := readInts(t, filepath.Join(out, "coffee.npy"))
	assert.Equal(t, npy.Uint16, dt)
}

func readManifestFile(t *testing.T, p string) map[string]map[string]any {
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	out := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		out[m["output"].(string)] = m
	}
	return out
}

// TestImageCommandsHeadsFromUniTokArgs: a UniTok .pth needs no --heads: the
// projections have embed_dim // vocab_width heads (128 // 32 = 4 here), as
// UniTok builds them, so the codes are PyTorch's.
func TestImageCommandsHeadsFromUniTokArgs(t *testing.T) {
	out := filepath.Join(t.TempDir(), "c.npy")
	r := cli("tokenize", "--checkpoint", tinyPth, "--device", "cpu", "--in", photo("coffee"), "--out", out, "--codes-dtype", "int32")
	require.Equal(t, 0, r.code, r.stderr)
	_, _, codes := readInts(t, out)
	_, want := readIntsFile(t, filepath.Join(cliFix, "codes.npy"))
	require.Equal(t, want[16*4:], codes)
}

// TestImageCommandsLayoutBKN: --layout bkn writes UniTok's (K, N) codes
// and detokenize reads them back to the same picture.
func TestImageCommandsLayoutBKN(t *testing.T) {
	dir := t.TempDir()
	bnk, bkn := filepath.Join(dir, "bnk.npy"), filepath.Join(dir, "bkn.npy")
	require.Equal(t, 0, imgCLI("tokenize", "--in", photo("coffee"), "--out", bnk).code)
	r := imgCLI("tokenize", "--in", photo("coffee"), "--out", bkn, "--layout", "bkn")
	require.Equal(t, 0, r.code, r.stderr)
	s1, _, c1 := readInts(t, bnk)
	s2, _, c2 := readInts(t, bkn)
	require.Equal(t, []int{16, 4}, s1)
	require.Equal(t, []int{4, 16}, s2)
	for n := range 16 {
		for k := range 4 {
			require.Equal(t, c1[n*4+k], c2[k*16+n])
		}
	}
	p1, p2 := filepath.Join(dir, "1.png"), filepath.Join(dir, "2.png")
	require.Equal(t, 0, imgCLI("detokenize", "--in", bnk, "--out", p1).code)
	r = imgCLI("detokenize", "--in", bkn, "--out", p2, "--layout", "bkn")
	require.Equal(t, 0, r.code, r.stderr)
	n, _ := pixelDiff(t, loadPNG(t, p1), loadPNG(t, p2))
	assert.Zero(t, n)
	// (K, N) codes read as (N, K) are refused by shape.
	r = imgCLI("detokenize", "--in", bkn, "--out", filepath.Join(dir, "3.png"))
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "shape (4,16) has N=4, K=16")
}

// TestReadmeReconstruct runs the README's main command as written (no
// --heads, no --device) on the shipped demo checkpoint and photo when they
// are committed, else on the tiny test checkpoint. On the trained demo
// checkpoint the reconstruction must look like the photo (PSNR > 16 dB;
// random weights give about 12 dB).
func TestReadmeReconstruct(t *testing.T) {
	ckpt, in, minPSNR := "../../testdata/demo/unitok_small.pth", "../../testdata/demo/chelsea.png", 16.0
	if _, err := os.Stat(ckpt); err != nil {
		ckpt, in, minPSNR = tinyPth, photo("chelsea_full"), 0
	}
	out := filepath.Join(t.TempDir(), "chelsea-rec.png")
	r := cli("reconstruct", "--checkpoint", ckpt, in, out, "--side-by-side")
	require.Equal(t, 0, r.code, r.stderr)
	m := regexp.MustCompile(`through codes \((\d+),(\d+)\) in [0-9.]+s .*: PSNR ([0-9.]+) dB vs the preprocessed input`).FindStringSubmatch(r.stderr)
	require.NotNil(t, m, r.stderr)
	t.Log(strings.TrimSpace(r.stderr))
	var psnr float64
	_, err := fmt.Sscan(m[3], &psnr)
	require.NoError(t, err)
	assert.Greater(t, psnr, minPSNR)
	img := loadPNG(t, out)
	S := img.Bounds().Dy()
	assert.Equal(t, 2*S, img.Bounds().Dx())
	if minPSNR == 0 {
		return
	}
	// bench/train_small.py also writes PyTorch's own side-by-side picture
	// and the PSNR it measured on the held-out photo: the same picture
	// (within one level at rounding ties) and the same PSNR.
	if want, err := os.Stat("../../testdata/demo/torch_reconstruction.png"); err == nil && want.Mode().IsRegular() {
		n, m := pixelDiff(t, img, loadPNG(t, "../../testdata/demo/torch_reconstruction.png"))
		assert.LessOrEqual(t, m, 1)
		assert.Less(t, n, 3*2*S*S/1000)
	}
	if b, err := os.ReadFile("../../testdata/demo/train_log.json"); err == nil {
		var log struct {
			PSNR map[string]float64 `json:"psnr_db_256_uint8"`
		}
		require.NoError(t, json.Unmarshal(b, &log))
		if v, ok := log.PSNR["held_out_chelsea.png"]; ok {
			assert.InDelta(t, v, psnr, 0.05, "PSNR vs train_small.py's")
		}
	}
}
