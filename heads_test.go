package unitok

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/unitok/unitok/internal/safetensors"
)

// Issue 13: a checkpoint that does not record num_heads gets C/D heads, as
// UniTok's UniTok class (models/unitok.py) builds quant_proj and
// post_quant_proj: embed_dim // vocab_width.

// headsMarginTol: codes are compared where PyTorch's top-two cosine gap
// exceeds this (float32 rounding may pick either codeword below it).
const headsMarginTol = 1e-5

// compareCodes counts codes equal to PyTorch's where the margin is safe and
// returns (equal, compared).
func countEqualCodes(got, want []int32, margins []float32) (equal, compared int) {
	for i := range want {
		if float64(margins[i]) <= headsMarginTol {
			continue
		}
		compared++
		if got[i] == want[i] {
			equal++
		}
	}
	return equal, compared
}

func encodeFile(t *testing.T, tok *Tokenizer, features string) []int32 {
	t.Helper()
	x, xs := readF32(t, features)
	require.Len(t, xs, 3)
	require.Equal(t, tok.Config().InDim, xs[2])
	codes, err := tok.Encode(x, xs[0], xs[1])
	require.NoError(t, err)
	return codes
}

// TestUniTokHeadsC256Pth: testdata/unitok/c256/unitok.pth is written by
// torch.save from UniTok's own AttnProjection and VectorQuantizerM (built
// as the UniTok class builds them: 256 // 64 = 4 heads), in the layout of
// UniTok's training checkpoints, with no num_heads anywhere. Opened with no
// options it must encode to PyTorch's codes (bench/torch_reference.py
// unitok).
func TestUniTokHeadsC256Pth(t *testing.T) {
	dir := filepath.Join("testdata", "unitok", "c256")
	p := filepath.Join(dir, "unitok.pth")
	info, err := InspectCheckpoint(p)
	require.NoError(t, err)
	require.Empty(t, info.ConfigError)
	require.False(t, info.HeadsKnown)
	require.Equal(t, HeadsFromWidths, info.HeadsSource)
	require.Equal(t, Config{InDim: 256, LatentDim: 64, NumCodebooks: 8, CodebookSize: 64, NumHeads: 4}, info.Config)
	require.Equal(t, "64", info.Metadata["args.vocab_width"])
	require.Equal(t, "512", info.Metadata["args.vocab_size"])

	tok, err := Open(p, WithDevice("cpu"))
	require.NoError(t, err)
	defer tok.Close()
	require.Equal(t, 4, tok.Config().NumHeads)
	got := encodeFile(t, tok, filepath.Join(dir, "features.npy"))
	want, _ := readI32(t, filepath.Join(dir, "codes.npy"))
	margins, _ := readF32(t, filepath.Join(dir, "margins.npy"))
	eq, n := countEqualCodes(got, want, margins)
	require.Equal(t, len(want), n, "no code may sit within the margin tolerance")
	require.Equal(t, n, eq, "codes equal to UniTok's PyTorch modules")

	// The head count matters: the old fixed default (16) or any other
	// count gives other codes on the same weights.
	for _, h := range []int{1, 2, 16} {
		wrong, err := Open(p, WithDevice("cpu"), WithHeads(h))
		require.NoError(t, err)
		eq, n := countEqualCodes(encodeFile(t, wrong, filepath.Join(dir, "features.npy")), want, margins)
		wrong.Close()
		require.Less(t, eq, n, "%d heads must not reproduce the 4-head codes", h)
		t.Logf("%d heads: %d of %d codes agree with PyTorch", h, eq, n)
	}
}

// writeUniTokSafetensors writes the synthetic weights of fixture case dir
// (C=768 or 1024) as safetensors carrying the metadata meta and no
// num_heads unless meta says so, like `unitok convert` makes from UniTok's
// .pth (args.* recorded, heads not).
func writeUniTokSafetensors(t *testing.T, fc fixtureConfig, meta map[string]string) string {
	t.Helper()
	var ts []safetensors.Tensor
	for _, info := range SynthTensorInfos(fc.config()) {
		ts = append(ts, safetensors.F32Tensor(info.Name, info.Shape, SynthTensor(info.Name, info.Shape, fc.Seed)))
	}
	p := filepath.Join(t.TempDir(), "core.safetensors")
	require.NoError(t, safetensors.Write(p, ts, meta))
	return p
}

func readFixtureConfig(t *testing.T, dir string) fixtureConfig {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	var fc fixtureConfig
	require.NoError(t, json.Unmarshal(raw, &fc))
	return fc
}

// TestUniTokHeadsWidths: the vitamin_base (C=768) and vitamin_large
// (C=1024) fixtures, made by PyTorch with C/D heads (12 and 16; UniTok's own
// modules reproduce them, see bench/README_fixtures.md), encode to PyTorch's
// codes from a checkpoint without num_heads and with no options.
func TestUniTokHeadsWidths(t *testing.T) {
	for _, tc := range []struct {
		fixture, model string
		heads          int
	}{
		{"base_full", "vitamin_base", 12},
		{"real_full", "vitamin_large", 16},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			dir := filepath.Join("testdata", "fixtures", tc.fixture)
			fc := readFixtureConfig(t, dir)
			require.Equal(t, tc.heads, fc.NumHeads)
			require.False(t, fc.Causal)
			want, _ := readI32(t, filepath.Join(dir, "codes.npy"))
			margins, _ := readF32(t, filepath.Join(dir, "margins.npy"))
			features := filepath.Join(dir, "features.npy")
			args := map[string]string{"format": "pt", "args.model": tc.model, "args.vocab_width": "64", "args.quant_proj": "attn"}

			p := writeUniTokSafetensors(t, fc, args)
			info, err := InspectCheckpoint(p)
			require.NoError(t, err)
			require.Equal(t, HeadsFromWidths, info.HeadsSource)
			require.Equal(t, tc.heads, info.Config.NumHeads)
			tok, err := Open(p, WithDevice("cpu"))
			require.NoError(t, err)
			defer tok.Close()
			require.Equal(t, fc.config(), tok.Config())
			eq, n := countEqualCodes(encodeFile(t, tok, features), want, margins)
			require.Equal(t, len(want), n)
			require.Equal(t, n, eq, "codes equal to PyTorch with no options")

			// Recorded num_heads wins over C/D; WithHeads wins over both.
			other := 16
			if tc.heads == 16 {
				other = 8
			}
			meta := map[string]string{"num_heads": "16"}
			if tc.heads == 16 {
				meta["num_heads"] = "8"
			}
			for k, v := range args {
				meta[k] = v
			}
			p2 := writeUniTokSafetensors(t, fc, meta)
			info, err = InspectCheckpoint(p2)
			require.NoError(t, err)
			require.Equal(t, HeadsFromMetadata, info.HeadsSource)
			require.Equal(t, other, info.Config.NumHeads)
			wrong, err := Open(p2, WithDevice("cpu"))
			require.NoError(t, err)
			require.Equal(t, other, wrong.Config().NumHeads)
			eqWrong, _ := countEqualCodes(encodeFile(t, wrong, features), want, margins)
			wrong.Close()
			require.Less(t, eqWrong, n, "recorded %d heads must be used (and give other codes)", other)
			t.Logf("%d heads instead of %d: %d of %d codes agree with PyTorch", other, tc.heads, eqWrong, n)
			fixed, err := Open(p2, WithDevice("cpu"), WithHeads(tc.heads))
			require.NoError(t, err)
			defer fixed.Close()
			eq, _ = countEqualCodes(encodeFile(t, fixed, features), want, margins)
			require.Equal(t, n, eq, "WithHeads(%d) over metadata", tc.heads)

			// args naming another encoder width is refused.
			bad := map[string]string{"args.model": "vitamin_large", "args.vocab_width": "64"}
			if tc.model == "vitamin_large" {
				bad["args.model"] = "vitamin_base"
			}
			_, err = Open(writeUniTokSafetensors(t, fc, bad), WithDevice("cpu"))
			require.ErrorIs(t, err, ErrBadInput)
			require.ErrorContains(t, err, "args.model="+bad["args.model"])
			_, err = Open(writeUniTokSafetensors(t, fc, map[string]string{"args.vocab_width": "32"}), WithDevice("cpu"))
			require.ErrorIs(t, err, ErrBadInput)
			require.ErrorContains(t, err, "args.vocab_width=32")
		})
	}
}

// TestUniTokHeadsNotDivisible: when D does not divide C there is no C/D;
// the error names both and points at --heads, and WithHeads loads it.
func TestUniTokHeadsNotDivisible(t *testing.T) {
	fc := fixtureConfig{InDim: 60, LatentDim: 16, NumCodebooks: 4, CodebookSize: 10, NumHeads: 4, Seed: 3}
	p := writeUniTokSafetensors(t, fc, nil)
	_, err := Open(p, WithDevice("cpu"))
	require.ErrorIs(t, err, ErrBadInput)
	for _, s := range []string{"C=60", "D=16", "--heads"} {
		require.ErrorContains(t, err, s)
	}
	var ue *Error
	require.True(t, errors.As(err, &ue))
	info, err := InspectCheckpoint(p)
	require.NoError(t, err)
	require.Contains(t, info.ConfigError, "C=60")
	tok, err := Open(p, WithDevice("cpu"), WithHeads(4))
	require.NoError(t, err)
	require.Equal(t, 4, tok.Config().NumHeads)
	tok.Close()
}

// TestUniTokHeadsTorchPth runs the C=768 and C=1024 checkpoints that
// `bench/torch_reference.py unitok --big-out DIR` writes with torch.save from
// UniTok's own modules (26 MB and 45 MB, not committed), and with --full the
// whole UniTok class on vitamin_base (1.3 GB, the reproduction): set
// UNITOK_TORCH_PTH_DIR=DIR. They must encode the fixtures' features to the
// fixtures' codes with no options.
func TestUniTokHeadsTorchPth(t *testing.T) {
	root := os.Getenv("UNITOK_TORCH_PTH_DIR")
	if root == "" {
		t.Skip("UNITOK_TORCH_PTH_DIR not set (see bench/README_fixtures.md)")
	}
	for _, tc := range []struct {
		name, fixture string
		heads         int
	}{{"base", "base_full", 12}, {"large", "real_full", 16}, {"base_full", "base_full", 12}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join("testdata", "fixtures", tc.fixture)
			p := filepath.Join(root, tc.name, "unitok.pth")
			if _, err := os.Stat(p); err != nil && tc.name == "base_full" {
				t.Skip("no base_full (made with --full)")
			}
			info, err := InspectCheckpoint(p)
			require.NoError(t, err)
			require.Equal(t, HeadsFromWidths, info.HeadsSource)
			require.Empty(t, info.Missing)
			t.Logf("%s: %d core tensors, ignored %v", tc.name, len(info.Tensors), info.Ignored)
			tok, err := Open(p, WithDevice("cpu"))
			require.NoError(t, err)
			defer tok.Close()
			require.Equal(t, tc.heads, tok.Config().NumHeads)
			want, _ := readI32(t, filepath.Join(dir, "codes.npy"))
			margins, _ := readF32(t, filepath.Join(dir, "margins.npy"))
			eq, n := countEqualCodes(encodeFile(t, tok, filepath.Join(dir, "features.npy")), want, margins)
			require.Equal(t, len(want), n)
			require.Equal(t, n, eq)
			require.True(t, strings.HasPrefix(tok.Device(), "cpu"))
		})
	}
}
