package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConvertWholeModelCLI: `convert` writes the image path by default and
// `--core` only the core; tokenize and reconstruct on the whole-model file
// give the .pth's bytes, inspect shows its image model, and the core-only
// file's image commands say what is missing, in one line.
func TestConvertWholeModelCLI(t *testing.T) {
	dir := t.TempDir()
	whole, core := filepath.Join(dir, "whole.safetensors"), filepath.Join(dir, "core.safetensors")
	r := cli("convert", tinyPth, whole)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "48 core tensors")
	require.Contains(t, r.stderr, "image path: 157 tensors, custom 64x64, 2 ViT heads")
	r = cli("convert", "--core", tinyPth, core)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "image path: none (--core)")

	r = cli("inspect", whole)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "H=4 (from metadata)")
	require.Contains(t, r.stdout, "image path  custom 64x64 -> 16 tokens")
	require.Contains(t, r.stdout, "image tensors: all present")
	r = cli("inspect", core)
	require.Contains(t, r.stdout, "image path  none: missing tensor encoder.patch_embed.backbone.stem.conv1.weight")

	run := func(ckpt string, args ...string) result {
		return cli(append([]string{args[0], "--checkpoint", ckpt, "--device", "cpu", "--threads", "2"}, args[1:]...)...)
	}
	out := func(name string) string { return filepath.Join(dir, name) }
	for _, c := range []struct{ ckpt, tag string }{{tinyPth, "pth"}, {whole, "st"}} {
		r = run(c.ckpt, "tokenize", "--in", photo("coffee"), "--out", out("codes-"+c.tag+".npy"))
		require.Equal(t, 0, r.code, r.stderr)
		r = run(c.ckpt, "reconstruct", photo("coffee"), out("rec-"+c.tag+".png"))
		require.Equal(t, 0, r.code, r.stderr)
		r = run(c.ckpt, "embed", "--in", photo("coffee"), "--out", out("emb-"+c.tag+".npy"))
		require.Equal(t, 0, r.code, r.stderr)
	}
	for _, f := range []string{"codes", "rec", "emb"} {
		ext := ".npy"
		if f == "rec" {
			ext = ".png"
		}
		a, err := os.ReadFile(out(f + "-pth" + ext))
		require.NoError(t, err)
		b, err := os.ReadFile(out(f + "-st" + ext))
		require.NoError(t, err)
		require.Equal(t, a, b, f)
	}

	r = run(core, "tokenize", "--in", photo("coffee"), "--out", out("codes-core.npy"))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "encoder.patch_embed.backbone.stem.conv1.weight")
	require.Equal(t, 1, countLines(r.stderr), r.stderr)
	require.NoFileExists(t, out("codes-core.npy"))
	assertNoTemps(t, dir)
}

func countLines(s string) int {
	n := 0
	for _, c := range s {
		if c == '\n' {
			n++
		}
	}
	return n
}
