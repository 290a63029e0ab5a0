package unitok

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/ckpt"
	"github.com/unitok/unitok/internal/mmapfile"
	"github.com/unitok/unitok/internal/model/vitamin"
	"github.com/unitok/unitok/internal/safetensors"
)

// imageFixture is testdata/image/CASE/config.json, written by
// bench/torch_image_reference.py from UniTok's own modules.
type imageFixture struct {
	Model        string `json:"model"`
	ImgSize      int    `json:"img_size"`
	B            int    `json:"B"`
	LatentDim    int    `json:"latent_dim"`
	NumCodebooks int    `json:"num_codebooks"`
	CodebookSize int    `json:"codebook_size"`
	EmbedDim     int    `json:"embed_dim"`
	Seed         uint64 `json:"seed"`
	NumHeads     int    `json:"num_heads"`
	Custom       *struct {
		Stem      int   `json:"stem"`
		Dims      []int `json:"dims"`
		Depths    []int `json:"depths"`
		Depth     int   `json:"depth"`
		Heads     int   `json:"heads"`
		DecDims   []int `json:"dec_dims"`
		DecDepths []int `json:"dec_depths"`
	} `json:"custom"`
}

func (f imageFixture) configs(t *testing.T) (Config, vitamin.Config) {
	var vc vitamin.Config
	if f.Custom != nil {
		c := f.Custom
		vc = vitamin.Config{Name: "custom", ImgSize: f.ImgSize, StemWidth: c.Stem, StageDims: c.Dims[:2], StageDepths: c.Depths,
			Width: c.Dims[2], Depth: c.Depth, Heads: c.Heads, MLPHidden: 2 * c.Dims[2], DecDepth: c.Depth,
			DecDims: c.DecDims[1:], DecDepths: c.DecDepths, EmbedDim: f.EmbedDim}
	} else {
		var ok bool
		vc, ok = vitamin.Preset(f.Model, f.EmbedDim)
		require.True(t, ok, f.Model)
	}
	return Config{InDim: vc.Width, LatentDim: f.LatentDim, NumCodebooks: f.NumCodebooks, CodebookSize: f.CodebookSize,
		NumHeads: f.NumHeads}, vc
}

func readImageFixture(t *testing.T, dir string) imageFixture {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	var f imageFixture
	require.NoError(t, json.Unmarshal(b, &f))
	return f
}

// relL2 is |got - want| / |want| in float64.
func relL2(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

func maxAbsDiff(got, want []float32) float64 {
	m := 0.0
	for i := range want {
		m = max(m, math.Abs(float64(got[i])-float64(want[i])))
	}
	return m
}

// synthFixtureTokenizer builds a case's model from the synthetic generator.
func synthFixtureTokenizer(t *testing.T, dir string) *Tokenizer {
	f := readImageFixture(t, dir)
	c, vc := f.configs(t)
	tok, err := openSynthImage(c, vc, f.Seed, WithDevice("cpu"))
	require.NoError(t, err)
	return tok
}

// runImageFixture checks every stage of the image path against PyTorch.
func runImageFixture(t *testing.T, dir string, tok *Tokenizer) {
	f := readImageFixture(t, dir)
	c, vc := f.configs(t)
	require.NoError(t, tok.ImageModel())
	got, _ := tok.ImageArch()
	require.Equal(t, vc.Width, got.Width)
	require.Equal(t, vc.Heads, got.Heads)
	require.Equal(t, c.NumHeads, tok.Config().NumHeads)
	require.Equal(t, f.ImgSize, tok.ImageSize())
	im := tok.img()
	ctx := context.Background()
	B, N := f.B, vc.Tokens()

	x, xs := readF32(t, filepath.Join(dir, "x.npy"))
	require.Equal(t, []int{B, 3, f.ImgSize, f.ImgSize}, xs)

	// Encoder output (intermediate): features (B, N, C).
	wantFeat, _ := readF32(t, filepath.Join(dir, "features.npy"))
	feat, err := im.enc.Encode(ctx, im.eng, x, B)
	require.NoError(t, err)
	require.Less(t, relL2(feat, wantFeat), 1e-4, "encoder features")

	// Codes equal wherever the float64 top-two margin exceeds 1e-4.
	wantCodes, cs := readI32(t, filepath.Join(dir, "codes.npy"))
	require.Equal(t, []int{B, N, c.NumCodebooks}, cs)
	margins, _ := readF32(t, filepath.Join(dir, "margins.npy"))
	codes, err := tok.TokenizePixels(ctx, x, B)
	require.NoError(t, err)
	checked := 0
	for i := range wantCodes {
		if margins[i] > 1e-4 {
			require.Equal(t, wantCodes[i], codes[i], "code %d (margin %g)", i, margins[i])
			checked++
		}
	}
	require.Greater(t, checked, len(wantCodes)*9/10, "too few codes above the margin to be a test")

	// Decoder input and output from the reference codes (optional files:
	// the vitamin_base case omits them to keep the repository small).
	if _, err := os.Stat(filepath.Join(dir, "dec_in.npy")); err == nil {
		wantDecIn, _ := readF32(t, filepath.Join(dir, "dec_in.npy"))
		decIn, err := tok.Decode(wantCodes, B, N)
		require.NoError(t, err)
		require.Less(t, relL2(decIn, wantDecIn), 1e-4, "post_quant_proj(idx_to_f(codes))")
		wantDecOut, _ := readF32(t, filepath.Join(dir, "dec_out.npy"))
		decOut, err := im.dec.Decode(ctx, im.eng, wantDecIn, B, false)
		require.NoError(t, err)
		require.Less(t, relL2(decOut, wantDecOut), 1e-4, "decoder output before the clamp")
		t.Logf("dec_in %.2g, dec_out %.2g (rel L2)", relL2(decIn, wantDecIn), relL2(decOut, wantDecOut))
	}
	wantRec, _ := readF32(t, filepath.Join(dir, "rec.npy"))
	rec, err := tok.Detokenize(ctx, wantCodes, B)
	require.NoError(t, err)
	require.Less(t, relL2(rec, wantRec), 1e-4, "idx_to_img")
	for _, v := range rec {
		require.True(t, v >= -1 && v <= 1, "reconstruction not clamped: %v", v)
	}

	// CLIP image embedding.
	wantEmb, es := readF32(t, filepath.Join(dir, "emb.npy"))
	require.Equal(t, []int{B, f.EmbedDim}, es)
	emb, err := tok.EmbedPixels(ctx, x, B)
	require.NoError(t, err)
	require.Less(t, maxAbsDiff(emb, wantEmb), 1e-3, "encode_image(normalize=True)")
	t.Logf("features %.2g, rec %.2g (rel L2); emb max diff %.2g; %d/%d codes above margin",
		relL2(feat, wantFeat), relL2(rec, wantRec), maxAbsDiff(emb, wantEmb), checked, len(wantCodes))
}

func TestImageTinyMatchesPyTorch(t *testing.T) {
	tok := synthFixtureTokenizer(t, "testdata/image/tiny")
	defer tok.Close()
	runImageFixture(t, "testdata/image/tiny", tok)
}

// TestImageFromReleasedLayoutPth opens a torch.save of UniTok's own class
// (text tower included, bf16 weights) and checks the whole image path
// against PyTorch on the same (upcast) weights. UniTok's args do not
// record the projections' head count (UniTok uses C // D = 4 here).
func TestImageFromReleasedLayoutPth(t *testing.T) {
	const dir = "testdata/image/tiny_pth"
	tok, err := Open(filepath.Join(dir, "unitok_tiny_bf16.pth"), WithDevice("cpu"), WithHeads(4))
	require.NoError(t, err)
	defer tok.Close()
	require.Nil(t, tok.image.Load(), "the image path must load on first use, not at Open")
	runImageFixture(t, dir, tok)
	require.NotNil(t, tok.image.Load())
}

// TestImageVitaminBaseMatchesPyTorch runs the vitamin_base case (about a
// minute on two cores with the reference GEMM); opt in with
// UNITOK_TEST_VITAMIN_BASE=1.
func TestImageVitaminBaseMatchesPyTorch(t *testing.T) {
	if os.Getenv("UNITOK_TEST_VITAMIN_BASE") == "" {
		t.Skip("set UNITOK_TEST_VITAMIN_BASE=1 to run the vitamin_base image case")
	}
	tok := synthFixtureTokenizer(t, "testdata/image/vitamin_base")
	defer tok.Close()
	runImageFixture(t, "testdata/image/vitamin_base", tok)
}

func TestImageModelMissingOnCoreOnlyCheckpoint(t *testing.T) {
	tok, err := Open("testdata/sample/model.safetensors", WithDevice("cpu"))
	require.NoError(t, err)
	defer tok.Close()
	err = tok.ImageModel()
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrBadInput))
	require.Contains(t, err.Error(), "encoder.patch_embed.backbone.stem.conv1.weight")
	_, err = tok.TokenizePixels(context.Background(), make([]float32, 3*256*256), 1)
	require.ErrorIs(t, err, ErrBadInput)
	require.Equal(t, 0, tok.ImageSize())
}

func TestInspectImage(t *testing.T) {
	info, err := InspectImage("testdata/image/tiny_pth/unitok_tiny_bf16.pth")
	require.NoError(t, err)
	require.Empty(t, info.Error)
	require.Empty(t, info.Missing)
	require.Empty(t, info.Misshapen)
	a := info.Arch
	require.Equal(t, "custom", a.Model)
	require.Equal(t, 64, a.ImageSize)
	require.Equal(t, 16, a.Tokens)
	require.Equal(t, []int{16, 32}, a.StageWidths)
	require.Equal(t, []int{2, 2}, a.StageDepths)
	require.Equal(t, 128, a.Width)
	require.Equal(t, 2, a.Heads)
	require.Equal(t, []int{32, 16}, a.DecoderWidths)
	require.Equal(t, []int{2, 1}, a.DecoderDepths)
	require.Equal(t, 48, a.EmbedDim)
	require.Equal(t, 48*128+48+2*128, info.Params["head"])

	info, err = InspectImage("testdata/sample/model.safetensors")
	require.NoError(t, err)
	require.Contains(t, info.Error, "encoder.patch_embed.backbone.stem.conv1.weight")
}

func TestVitaminPresetsMatchUniTokParamCounts(t *testing.T) {
	count := func(ts []vitamin.Tensor) int {
		n := 0
		for _, x := range ts {
			p := 1
			for _, d := range x.Shape {
				p *= d
			}
			n += p
		}
		return n
	}
	// Parameter counts of UniTok's modules as built by timm 1.0.9
	// (timm.create_model(...) as UniTok calls it, pos_embed='none';
	// ViTaminDecoder(model)), counted in PyTorch.
	l, b := vitamin.VitaminLarge(1024), vitamin.VitaminBase(768)
	require.Equal(t, 332330912, count(l.EncoderTensors()))
	require.Equal(t, 352402531, count(l.DecoderTensors()))
	require.Equal(t, 86981504, count(b.EncoderTensors()))
	require.Equal(t, 99827587, count(b.DecoderTensors()))
}

// cancelAfter is a context whose Err turns to Canceled after n calls, to
// cancel in the middle of the encoder or decoder.
type cancelAfter struct {
	context.Context
	n int
}

func (c *cancelAfter) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

func TestImageCallsHonourCancellation(t *testing.T) {
	tok := synthFixtureTokenizer(t, "testdata/image/tiny")
	defer tok.Close()
	x, _ := readF32(t, "testdata/image/tiny/x.npy")
	codes, _ := readI32(t, "testdata/image/tiny/codes.npy")
	for _, n := range []int{0, 1, 3, 5} {
		ctx := &cancelAfter{Context: context.Background(), n: n}
		_, err := tok.TokenizePixels(ctx, x, 2)
		require.ErrorIs(t, err, context.Canceled, "tokenize, cancelled after %d checks", n)
		ctx = &cancelAfter{Context: context.Background(), n: n}
		_, err = tok.Detokenize(ctx, codes, 2)
		require.ErrorIs(t, err, context.Canceled, "detokenize, cancelled after %d checks", n)
	}
	_, err := tok.EmbedPixels(&cancelAfter{Context: context.Background(), n: 2}, x, 2)
	require.ErrorIs(t, err, context.Canceled)
	// Bad shapes and non-finite pixels are ErrBadInput.
	_, err = tok.TokenizePixels(context.Background(), x[:len(x)-1], 2)
	require.ErrorIs(t, err, ErrBadInput)
	bad := append([]float32(nil), x...)
	bad[5] = float32(math.NaN())
	_, err = tok.EmbedPixels(context.Background(), bad, 2)
	require.ErrorIs(t, err, ErrBadInput)
	_, err = tok.Detokenize(context.Background(), codes[:len(codes)-1], 2)
	require.ErrorIs(t, err, ErrBadInput)
}

// partialReader hides some tensors of a reader.
type partialReader struct {
	*synthImageReader
	drop func(name string) bool
}

func (p partialReader) Tensors() []ckpt.Info {
	var out []ckpt.Info
	for _, t := range p.synthImageReader.Tensors() {
		if !p.drop(t.Name) {
			out = append(out, t)
		}
	}
	return out
}

func TestImageModelNamesWhatIsMissing(t *testing.T) {
	f := readImageFixture(t, "testdata/image/tiny")
	c, vc := f.configs(t)
	for _, tc := range []struct {
		drop func(string) bool
		want string
	}{
		{func(n string) bool { return n == "decoder.up_conv3.0.up.conv.weight" }, "1 image tensors missing (decoder.up_conv3.0.up.conv.weight)"},
		{func(n string) bool { return strings.HasPrefix(n, "decoder.") }, "no decoder"},
		{func(n string) bool { return strings.HasPrefix(n, "encoder.blocks.1.attn.") }, "4 image tensors missing (encoder.blocks.1.attn.proj.bias, encoder.blocks.1.attn.proj.weight, encoder.blocks.1.attn.qkv.bias, and 1 more)"},
	} {
		tok, err := openReader(partialReader{newSynthImageReader(c, vc, f.Seed), tc.drop}, WithDevice("cpu"))
		require.NoError(t, err)
		err = tok.ImageModel()
		require.ErrorIs(t, err, ErrBadInput)
		require.Contains(t, err.Error(), tc.want)
		tok.Close()
	}
	// Without the CLIP head, tokenize works and embed says what is missing.
	tok, err := openReader(partialReader{newSynthImageReader(c, vc, f.Seed), func(n string) bool { return strings.HasPrefix(n, "projection.") }}, WithDevice("cpu"))
	require.NoError(t, err)
	defer tok.Close()
	require.NoError(t, tok.ImageModel())
	x, _ := readF32(t, "testdata/image/tiny/x.npy")
	_, err = tok.EmbedPixels(context.Background(), x, 2)
	require.ErrorIs(t, err, ErrBadInput)
	require.Contains(t, err.Error(), "projection.weight")
}

// TestImageFromSafetensors writes the tiny model (core and image tensors,
// UniTok key names) as safetensors with the architecture in __metadata__
// and checks the whole path against PyTorch from that file.
func TestImageFromSafetensors(t *testing.T) {
	const dir = "testdata/image/tiny"
	f := readImageFixture(t, dir)
	c, vc := f.configs(t)
	r := newSynthImageReader(c, vc, f.Seed)
	var ts []safetensors.Tensor
	for _, info := range r.Tensors() {
		v, err := r.ReadFloat32(info.Name)
		require.NoError(t, err)
		ts = append(ts, safetensors.F32Tensor(info.Name, info.Shape, v))
	}
	path := filepath.Join(t.TempDir(), "tiny.safetensors")
	// A custom config: heads and image size come from the metadata.
	require.NoError(t, safetensors.Write(path, ts, map[string]string{"num_heads": "4", "vit_heads": "2", "img_size": "64"}))
	tok, err := Open(path, WithDevice("cpu"))
	require.NoError(t, err)
	defer tok.Close()
	runImageFixture(t, dir, tok)
	// The weights were views of the file's mapping, which was unmapped
	// once the model was built, before any image ran: the engine kept
	// none of them (a kept view would fault).
	if mmapfile.Supported {
		require.Equal(t, len(ts)-len(SynthTensorInfos(c)), tok.image.Load().views, "image tensors read as views")
	}
}

func TestImageConcurrentCallsAgree(t *testing.T) {
	tok := synthFixtureTokenizer(t, "testdata/image/tiny")
	defer tok.Close()
	x, _ := readF32(t, "testdata/image/tiny/x.npy")
	codes, _ := readI32(t, "testdata/image/tiny/codes.npy")
	ctx := context.Background()
	wantCodes, err := tok.TokenizePixels(ctx, x, 2)
	require.NoError(t, err)
	wantRec, err := tok.Detokenize(ctx, codes, 2)
	require.NoError(t, err)
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		go func() {
			c, err := tok.TokenizePixels(ctx, x, 2)
			if err == nil && fmt.Sprint(c) != fmt.Sprint(wantCodes) {
				err = fmt.Errorf("concurrent tokenize differs")
			}
			errs <- err
		}()
		go func() {
			r, err := tok.Detokenize(ctx, codes, 2)
			if err == nil && maxAbsDiff(r, wantRec) != 0 {
				err = fmt.Errorf("concurrent detokenize differs by %g", maxAbsDiff(r, wantRec))
			}
			errs <- err
		}()
	}
	for i := 0; i < 8; i++ {
		require.NoError(t, <-errs)
	}
}

// TestImageCloseDropsModel: Close lets the image path go even while the
// Tokenizer value lives on; calls racing with Close either finish with the
// right result or say the tokenizer is closed, and later calls say so.
func TestImageCloseDropsModel(t *testing.T) {
	tok := synthFixtureTokenizer(t, "testdata/image/tiny")
	x, _ := readF32(t, "testdata/image/tiny/x.npy")
	codes, _ := readI32(t, "testdata/image/tiny/codes.npy")
	ctx := context.Background()
	wantCodes, err := tok.TokenizePixels(ctx, x, 2)
	require.NoError(t, err)
	require.NotNil(t, tok.image.Load())

	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		go func() {
			c, err := tok.TokenizePixels(ctx, x, 2)
			if err == nil && fmt.Sprint(c) != fmt.Sprint(wantCodes) {
				err = fmt.Errorf("tokenize racing Close differs")
			}
			errs <- err
		}()
		go func() {
			_, err := tok.Detokenize(ctx, codes, 2)
			errs <- err
		}()
	}
	require.NoError(t, tok.Close())
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			require.ErrorIs(t, err, ErrClosed)
		}
	}
	require.Nil(t, tok.image.Load(), "Close keeps the image path")
	_, err = tok.TokenizePixels(ctx, x, 2)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, tok.ImageModel(), ErrClosed)
	require.Zero(t, tok.ImageSize())
}
