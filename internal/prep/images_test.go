package prep

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
)

func tinyImageTokenizer(t *testing.T) *unitok.Tokenizer {
	t.Helper()
	tok, err := unitok.Open("../../testdata/image/tiny_pth/unitok_tiny_bf16.pth", unitok.WithDevice("cpu"), unitok.WithThreads(2))
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return tok
}

func imageTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for _, f := range []struct{ from, to string }{
		{"coffee.png", "a/coffee.png"}, {"chelsea_full.png", "chelsea.PNG"}, {"bmp.bmp", "a/b/bmp.bmp"},
	} {
		b, err := os.ReadFile(filepath.Join("../../testdata/images/inputs", f.from))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(src, f.to)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(src, f.to), b, 0o644))
	}
	return src
}

// TestRunImagesInterruptedResumes: a cancelled run publishes nothing
// partial and a rerun does the rest; --verify redoes an output whose
// bytes changed, a size check alone does not notice.
func TestRunImagesInterruptedResumes(t *testing.T) {
	tok := tinyImageTokenizer(t)
	src := imageTree(t)
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("stop now"))
	sum, err := RunImages(ctx, tok, ImageOptions{In: []string{src}, OutDir: out, Batch: 1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stop now")
	require.NotNil(t, sum)
	assert.True(t, sum.Interrupted)
	assert.Equal(t, 3, sum.Images)

	sum, err = RunImages(context.Background(), tok, ImageOptions{In: []string{src}, OutDir: out, Batch: 2})
	require.NoError(t, err)
	assert.Equal(t, 3, sum.Done+sum.Skipped)
	assert.Equal(t, int64(16*sum.Done), sum.Tokens)
	for _, p := range []string{"a/coffee.npy", "chelsea.npy", "a/b/bmp.npy"} {
		_, err := os.Stat(filepath.Join(out, p))
		require.NoError(t, err, p)
	}

	// Same size, other bytes: found only with Verify.
	p := filepath.Join(out, "a", "coffee.npy")
	good, err := os.ReadFile(p)
	require.NoError(t, err)
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xff
	require.NoError(t, os.WriteFile(p, bad, 0o644))
	sum, err = RunImages(context.Background(), tok, ImageOptions{In: []string{src}, OutDir: out})
	require.NoError(t, err)
	assert.Equal(t, 0, sum.Done)
	sum, err = RunImages(context.Background(), tok, ImageOptions{In: []string{src}, OutDir: out, Verify: true})
	require.NoError(t, err)
	assert.Equal(t, 1, sum.Done)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, good, b)

	// No images, and a core-only model, are errors before anything runs.
	_, err = RunImages(context.Background(), tok, ImageOptions{In: []string{t.TempDir()}, OutDir: out})
	assert.ErrorContains(t, err, "no images")
	core, err := unitok.Open("../../testdata/sample/model.safetensors", unitok.WithDevice("cpu"))
	require.NoError(t, err)
	defer core.Close()
	_, err = RunImages(context.Background(), core, ImageOptions{In: []string{src}, OutDir: out})
	assert.ErrorIs(t, err, unitok.ErrBadInput)
}

// cancelOnWrite cancels a run at its first progress message.
type cancelOnWrite struct{ cancel context.CancelCauseFunc }

func (w cancelOnWrite) Write(p []byte) (int, error) {
	w.cancel(errors.New("interrupted by the test"))
	return len(p), nil
}

// TestRunImagesCancelledMidRun: cancelled while loading (at the first bad
// file's message), the run stops between batches, leaves no temporaries,
// and a rerun finishes with the same outputs as an uninterrupted run.
func TestRunImagesCancelledMidRun(t *testing.T) {
	tok := tinyImageTokenizer(t)
	src := imageTree(t)
	require.NoError(t, os.WriteFile(filepath.Join(src, "0bad.png"), []byte("not a png"), 0o644))
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancelCause(context.Background())
	sum, err := RunImages(ctx, tok, ImageOptions{In: []string{src}, OutDir: out, Batch: 1, Progress: cancelOnWrite{cancel}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "interrupted by the test")
	assert.True(t, sum.Interrupted)
	assert.Less(t, sum.Done, 3)
	n, err := removeStaleTemps(out, map[string]bool{
		filepath.Join(out, "a", "coffee.npy"): true, filepath.Join(out, "chelsea.npy"): true, filepath.Join(out, "a", "b", "bmp.npy"): true})
	require.NoError(t, err)
	assert.Zero(t, n, "temporaries left behind")

	sum, err = RunImages(context.Background(), tok, ImageOptions{In: []string{src}, OutDir: out})
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Equal(t, 3, sum.Done+sum.Skipped)
	assert.Equal(t, 1, sum.Failed)
	ref := filepath.Join(t.TempDir(), "ref")
	_, err = RunImages(context.Background(), tok, ImageOptions{In: []string{src}, OutDir: ref, Batch: 3})
	require.ErrorIs(t, err, ErrShardsFailed)
	for _, p := range []string{"a/coffee.npy", "chelsea.npy", "a/b/bmp.npy"} {
		a, err := os.ReadFile(filepath.Join(out, p))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(ref, p))
		require.NoError(t, err)
		assert.Equal(t, b, a, p)
	}
}
