package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/unitok/unitok"
)

// Issue 13 through the CLI: UniTok's own modules saved with torch.save at
// C=256, D=64 (no num_heads recorded) encode to PyTorch's codes with no
// flags, and inspect says where the 4 heads came from.
func TestEncodeUniTokPthNoFlags(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "unitok", "c256")
	ckpt := filepath.Join(dir, "unitok.pth")
	out := filepath.Join(t.TempDir(), "codes.npy")
	r := cli("encode", "--checkpoint", ckpt, "--in", filepath.Join(dir, "features.npy"), "--out", out, "--codes-dtype", "int32")
	require.Equal(t, 0, r.code, r.stderr)
	shape, _, got := readInts(t, out)
	wshape, _, want := readInts(t, filepath.Join(dir, "codes.npy"))
	require.Equal(t, wshape, shape)
	// testdata/unitok/c256/margins.npy: every margin exceeds 1e-4, so every
	// code must match.
	require.Equal(t, want, got)

	r = cli("inspect", ckpt)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "C=256 D=64 K=8 V=64 (d=8, vocab 512) H=4 (not recorded; C/D, as UniTok's UniTok class builds it) attention=full")
	r = cli("inspect", "--json", ckpt)
	require.Equal(t, 0, r.code, r.stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Equal(t, 4, rep.Config.NumHeads)
	require.False(t, rep.Config.HeadsKnown)
	require.Equal(t, unitok.HeadsFromWidths, rep.Config.HeadsSource)

	// With --heads the flag wins (and, here, changes the codes).
	r = cli("encode", "--heads", "16", "--checkpoint", ckpt, "--in", filepath.Join(dir, "features.npy"), "--out", out, "--codes-dtype", "int32")
	require.Equal(t, 0, r.code, r.stderr)
	_, _, got = readInts(t, out)
	require.NotEqual(t, want, got)
}
