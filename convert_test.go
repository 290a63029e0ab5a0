package unitok

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/pth"
	"github.com/unitok/unitok/internal/safetensors"
)

const tinyPthPath = "testdata/image/tiny_pth/unitok_tiny_bf16.pth"

func requireSameBits(t *testing.T, want, got []float32, what string) {
	t.Helper()
	require.Equal(t, len(want), len(got), what)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%s: value %d is %v, want %v (bit for bit)", what, i, got[i], want[i])
		}
	}
}

// TestConvertWholeModel: the default conversion of UniTok's released layout
// (bf16, text tower included) keeps every core and image tensor byte for
// byte, records what the loader needs, and the converted file tokenizes,
// reconstructs and embeds photos exactly as the .pth does, with no options.
func TestConvertWholeModel(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "whole.safetensors")
	require.NoError(t, ConvertToSafetensors(tinyPthPath, out))

	src, err := pth.Open(tinyPthPath)
	require.NoError(t, err)
	defer src.Close()
	got, err := safetensors.Open(out)
	require.NoError(t, err)
	defer got.Close()
	var wantNames []string
	for _, ti := range src.AllTensors() {
		g, _, _ := strings.Cut(ti.Name, ".")
		switch {
		case g == "encoder" || g == "decoder" || g == "fc_norm" || g == "projection":
		case IsCoreTensor(ti.Name) && !strings.HasSuffix(ti.Name, ".vocab_usage"):
		default:
			continue // text_encoder, logit_scale, vocab_usage
		}
		wantNames = append(wantNames, ti.Name)
		have, ok := got.Info(ti.Name)
		require.True(t, ok, ti.Name)
		require.Equal(t, ti.DType, have.DType, ti.Name)
		require.Equal(t, "BF16", string(have.DType), ti.Name)
		require.Equal(t, ti.Shape, have.Shape, ti.Name)
		a, _, err := src.ReadRaw(ti.Name)
		require.NoError(t, err)
		b, err := got.Raw(ti.Name)
		require.NoError(t, err)
		require.Equal(t, a, b, ti.Name)
	}
	var gotNames []string
	for _, ti := range got.Tensors() {
		gotNames = append(gotNames, ti.Name)
	}
	require.Equal(t, wantNames, gotNames, "the image groups whole and the core, in the .pth's order")
	require.Contains(t, gotNames, "encoder.pos_embed")
	m := got.Metadata()
	for k, v := range map[string]string{"num_heads": "4", "causal": "false", "model": "custom", "vit_heads": "2",
		"img_size": "64", "args.model": "vitamin_tiny_test", "args.img_size": "64", "source": "unitok_tiny_bf16.pth"} {
		require.Equal(t, v, m[k], "metadata %s", k)
	}

	a, err := Open(tinyPthPath, WithDevice("cpu"))
	require.NoError(t, err)
	defer a.Close()
	b, err := Open(out, WithDevice("cpu"))
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, b.ImageModel())
	require.Equal(t, a.Config(), b.Config())
	archA, okA := a.ImageArch()
	archB, okB := b.ImageArch()
	require.True(t, okA && okB)
	require.Equal(t, archA, archB)

	ctx := context.Background()
	imgs := loadPhotos(t, "coffee", "chelsea_full")
	codesA, err := a.TokenizeImages(ctx, imgs)
	require.NoError(t, err)
	codesB, err := b.TokenizeImages(ctx, imgs)
	require.NoError(t, err)
	require.Equal(t, codesA, codesB)
	recA, err := a.Detokenize(ctx, codesA, len(imgs))
	require.NoError(t, err)
	recB, err := b.Detokenize(ctx, codesB, len(imgs))
	require.NoError(t, err)
	requireSameBits(t, recA, recB, "reconstruction")
	pngA, _, err := a.ReconstructImages(ctx, imgs[:1])
	require.NoError(t, err)
	pngB, _, err := b.ReconstructImages(ctx, imgs[:1])
	require.NoError(t, err)
	require.Equal(t, pngA[0].Pix, pngB[0].Pix)
	embA, err := a.EmbedImages(ctx, imgs)
	require.NoError(t, err)
	embB, err := b.EmbedImages(ctx, imgs)
	require.NoError(t, err)
	requireSameBits(t, embA, embB, "embedding")

	// A conversion of the converted file gives the same tensors and the
	// same recorded architecture.
	again := filepath.Join(dir, "again.safetensors")
	require.NoError(t, ConvertToSafetensors(out, again))
	g2, err := safetensors.Open(again)
	require.NoError(t, err)
	defer g2.Close()
	require.Equal(t, got.Tensors(), g2.Tensors())
	for _, k := range []string{"num_heads", "causal", "model", "vit_heads", "img_size"} {
		require.Equal(t, m[k], g2.Metadata()[k], k)
	}
}

// TestConvertCoreOnly: --core writes the 48 core tensors; the file encodes
// features exactly as the .pth does and ImageModel names what is missing.
func TestConvertCoreOnly(t *testing.T) {
	out := filepath.Join(t.TempDir(), "core.safetensors")
	require.NoError(t, ConvertCoreToSafetensors(tinyPthPath, out))
	f, err := safetensors.Open(out)
	require.NoError(t, err)
	for _, ti := range f.Tensors() {
		require.True(t, IsCoreTensor(ti.Name), ti.Name)
	}
	require.Len(t, f.Tensors(), 48)
	require.NotContains(t, f.Metadata(), "vit_heads")
	f.Close()

	a, err := Open(tinyPthPath, WithDevice("cpu"))
	require.NoError(t, err)
	defer a.Close()
	b, err := Open(out, WithDevice("cpu"))
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, a.Config(), b.Config())
	const B, N, C = 2, 16, 128
	feats := synthUniform(7, B*N*C)
	codesA, err := a.Encode(feats, B, N)
	require.NoError(t, err)
	codesB, err := b.Encode(feats, B, N)
	require.NoError(t, err)
	require.Equal(t, codesA, codesB)
	decA, err := a.Decode(codesA, B, N)
	require.NoError(t, err)
	decB, err := b.Decode(codesB, B, N)
	require.NoError(t, err)
	requireSameBits(t, decA, decB, "decoded features")

	err = b.ImageModel()
	require.ErrorIs(t, err, ErrBadInput)
	require.Contains(t, err.Error(), "encoder.patch_embed.backbone.stem.conv1.weight")
	require.Equal(t, 0, b.ImageSize())
}

// TestConvertRefusesBrokenImagePath: an image path with a tensor missing
// or misshapen is refused by name, nothing is written; --core still
// converts the core. A core-only input converts to the core by default.
func TestConvertRefusesBrokenImagePath(t *testing.T) {
	dir := t.TempDir()
	whole := filepath.Join(dir, "whole.safetensors")
	require.NoError(t, ConvertToSafetensors(tinyPthPath, whole))
	f, err := safetensors.Open(whole)
	require.NoError(t, err)
	var drop, bent []safetensors.Tensor
	for _, ti := range f.Tensors() {
		raw, err := f.Raw(ti.Name)
		require.NoError(t, err)
		tt := safetensors.Tensor{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: append([]byte(nil), raw...)}
		if ti.Name != "decoder.blocks.1.attn.qkv.weight" {
			drop = append(drop, tt)
		}
		if ti.Name == "decoder.norm.weight" {
			tt.Shape = []int{2, ti.Shape[0] / 2}
		}
		bent = append(bent, tt)
	}
	meta := f.Metadata()
	f.Close()
	for name, c := range map[string]struct {
		ts  []safetensors.Tensor
		msg string
	}{
		"missing.safetensors":   {drop, "1 image tensors missing (decoder.blocks.1.attn.qkv.weight)"},
		"misshapen.safetensors": {bent, "decoder.norm.weight: have [2 64], want [128]"},
	} {
		in := filepath.Join(dir, name)
		require.NoError(t, safetensors.Write(in, c.ts, meta))
		out := filepath.Join(dir, "out-"+name)
		err := ConvertToSafetensors(in, out)
		require.ErrorIs(t, err, ErrBadInput, name)
		require.ErrorContains(t, err, c.msg)
		require.ErrorContains(t, err, "--core")
		require.NotContains(t, err.Error(), "\n")
		require.NoFileExists(t, out)
		require.NoError(t, ConvertCoreToSafetensors(in, out), name)
		require.FileExists(t, out)
	}

	// A core-only input (stand-in encoder tensors, no ViTamin) gives the core.
	out := filepath.Join(dir, "small.safetensors")
	require.NoError(t, ConvertToSafetensors(pthFixture(t, "small_bf16.pth"), out))
	g, err := safetensors.Open(out)
	require.NoError(t, err)
	defer g.Close()
	for _, ti := range g.Tensors() {
		require.True(t, IsCoreTensor(ti.Name), ti.Name)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		require.False(t, strings.HasPrefix(e.Name(), "."), "temp file %s left", e.Name())
	}
}
