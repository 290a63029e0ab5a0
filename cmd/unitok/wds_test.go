package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/wds"
)

// Webdataset shards through the CLI, with a fake image tokenizer standing
// in for (*unitok.Tokenizer).TokenizeImages: codes (B, N=3, K) from pixels.
func TestEncodeWebdatasetShards(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	in := filepath.Join(dir, "wds")
	require.NoError(t, os.MkdirAll(in, 0o755))
	for si := 0; si < 4; si++ {
		var buf bytes.Buffer
		w := wds.NewWriter(&buf)
		for i := 0; i < 5; i++ {
			img := image.NewRGBA(image.Rect(0, 0, 4, 4))
			img.Set(0, 0, color.RGBA{uint8(si*10 + i), 1, 2, 255})
			var p bytes.Buffer
			require.NoError(t, png.Encode(&p, img))
			require.NoError(t, w.Write(&wds.Sample{Key: fmt.Sprintf("%d_%d", si, i), Members: []wds.Member{
				{Ext: "png", Data: p.Bytes()}, {Ext: "txt", Data: []byte("hi")}}}))
		}
		require.NoError(t, w.Close())
		require.NoError(t, os.WriteFile(filepath.Join(in, fmt.Sprintf("%05d.tar", si)), buf.Bytes(), 0o644))
	}
	out := filepath.Join(dir, "out")

	// A core-only checkpoint has no image model: one line, nothing written.
	r := cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "webdataset shards (.tar), whose images need the image model")
	require.Contains(t, r.stderr, "missing tensor encoder.")
	require.NoDirExists(t, out)
	r = cli("decode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "only encode reads")

	K := testCfg.NumCodebooks
	real := tokenizeImages
	t.Cleanup(func() { tokenizeImages = real })
	tokenizeImages = func(*unitok.Tokenizer) (wds.TokenizeFunc, error) {
		return func(_ context.Context, imgs []image.Image) ([]int32, error) {
			var codes []int32
			for _, img := range imgs {
				r, _, _, _ := img.At(0, 0).RGBA()
				for n := 0; n < 3*K; n++ {
					codes = append(codes, int32(r>>8+uint32(n))%int32(testCfg.CodebookSize))
				}
			}
			return codes, nil
		}, nil
	}
	for i := 0; i < 2; i++ {
		r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out, "--partition", fmt.Sprintf("%d/2", i), "--keep")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stderr, fmt.Sprintf("partition %d/2:", i))
	}
	r = cli("prep", "status", "--out", out, "--in", in)
	require.Equal(t, 0, r.code, r.stderr+r.stdout)
	require.Contains(t, r.stdout, "4 done, 0 failed, 0 missing (of 4 listed); 60 tokens")
	f, err := os.Open(filepath.Join(out, "00002.tar"))
	require.NoError(t, err)
	defer f.Close()
	s, err := wds.NewReader(f).Next()
	require.NoError(t, err)
	require.Equal(t, "2_0", s.Key)
	require.Len(t, s.Members, 3) // png (--keep), txt, codes.npy
	require.Equal(t, "codes.npy", s.Members[2].Ext)
}
