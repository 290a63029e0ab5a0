package prep

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/wds"
)

const tarK, tarV, tarN = 3, 40, 5

// tarTokenize is a fake image tokenizer with TokenizeImages' shape: codes
// (B, N, K) from the pixels. It calls onCall (if set) before each batch.
func tarTokenize(onCall func()) wds.TokenizeFunc {
	return func(ctx context.Context, imgs []image.Image) ([]int32, error) {
		if onCall != nil {
			onCall()
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var out []int32
		for _, img := range imgs {
			for n := 0; n < tarN; n++ {
				r, g, b, _ := img.At(n, n%img.Bounds().Dy()).RGBA()
				out = append(out, int32(r>>8)%tarV, int32(g>>8)%tarV, int32(b>>8)%tarV)
			}
		}
		return out, nil
	}
}

// writeTarShards writes webdataset shards: 6 samples each (PNG + caption),
// shard 2 with a sample lacking its image, and bad.tar truncated.
func writeTarShards(t *testing.T, root string) []string {
	t.Helper()
	rels := []string{"train/00000.tar", "train/00001.tar", "train/00002.tar", "val/00000.tar", "00009.tar"}
	for si, rel := range rels {
		var buf bytes.Buffer
		w := wds.NewWriter(&buf)
		for i := 0; i < 6; i++ {
			img := image.NewRGBA(image.Rect(0, 0, 6, 4))
			for y := 0; y < 4; y++ {
				for x := 0; x < 6; x++ {
					img.Set(x, y, color.RGBA{uint8(si*50 + i*13 + x*7), uint8(y*31 + i), uint8(x*y + si), 255})
				}
			}
			var p bytes.Buffer
			require.NoError(t, png.Encode(&p, img))
			s := &wds.Sample{Key: fmt.Sprintf("%s_%02d", strings.TrimSuffix(filepath.Base(rel), ".tar"), i)}
			s.Members = append(s.Members, wds.Member{Ext: "txt", Data: []byte(fmt.Sprintf("caption %d/%d", si, i))})
			if !(si == 2 && i == 3) {
				s.Members = append(s.Members, wds.Member{Ext: "png", Data: p.Bytes()})
			}
			require.NoError(t, w.Write(s))
		}
		require.NoError(t, w.Close())
		p := filepath.Join(root, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, buf.Bytes(), 0o644))
		if si == 0 {
			require.NoError(t, os.WriteFile(filepath.Join(root, "bad.tar"), buf.Bytes()[:1500], 0o644))
		}
	}
	return append(rels, "bad.tar")
}

func tarOpts(in, out string) TarOptions {
	return TarOptions{In: []string{in}, OutDir: out, Tokenize: tarTokenize(nil), K: tarK, V: tarV, Fingerprint: "fake", Batch: 4, Workers: 2}
}

func TestRunTarsPartitionsAndResume(t *testing.T) {
	in := t.TempDir()
	rels := writeTarShards(t, in)
	good := len(rels) - 1

	refDir := t.TempDir()
	ref, err := RunTars(context.Background(), tarOpts(in, refDir))
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Equal(t, good, ref.Done)
	require.Len(t, ref.Failures, 1)
	assert.Equal(t, "bad.tar", ref.Failures[0].Shard)
	assert.Equal(t, int64(good*6-1)*tarN, ref.Tokens)
	want := shardOutputs(t, refDir)
	require.Len(t, want, good)

	// Outputs: the same keys less the bad sample, caption then codes.
	recs := manifestLines(t, refDir)
	require.Len(t, recs, good)
	for _, r := range recs {
		if r.Shard == "train/00002.tar" {
			require.Len(t, r.Bad, 1)
			assert.Equal(t, "00002_03", r.Bad[0].Key)
			assert.Contains(t, r.Bad[0].Reason, "no image member")
			assert.Equal(t, 5, r.Rows)
		} else {
			assert.Empty(t, r.Bad)
			assert.Equal(t, 6, r.Rows)
		}
	}
	f, err := os.Open(filepath.Join(refDir, "val", "00000.tar"))
	require.NoError(t, err)
	rd := wds.NewReader(f)
	s, err := rd.Next()
	require.NoError(t, err)
	f.Close()
	assert.Equal(t, "00000_00", s.Key)
	require.Len(t, s.Members, 2)
	assert.Equal(t, "txt", s.Members[0].Ext)
	assert.Equal(t, "codes.npy", s.Members[1].Ext)

	// Partitions, in-process one after another (the process-level run is
	// TestPartitionsAsProcesses): the union equals the single run.
	for _, N := range []int{2, 9} {
		out := t.TempDir()
		for i := 0; i < N; i++ {
			o := tarOpts(in, out)
			o.Partition = Partition{Index: i, Count: N}
			_, err := RunTars(context.Background(), o)
			if o.Partition.Owns("bad.tar") {
				require.ErrorIs(t, err, ErrShardsFailed)
			} else {
				require.NoError(t, err, "partition %d/%d", i, N)
			}
		}
		assert.Equal(t, want, shardOutputs(t, out), "N=%d", N)
		pubs := map[string]int{}
		mfs, err := listManifests(out)
		require.NoError(t, err)
		require.Len(t, mfs, N)
		for _, mf := range mfs {
			b, err := os.ReadFile(mf.path)
			require.NoError(t, err)
			for out, r := range parseManifest(b).done {
				pubs[out]++
				assert.True(t, mf.part.Owns(r.Shard))
			}
		}
		require.Len(t, pubs, good)
		for o, n := range pubs {
			assert.Equal(t, 1, n, o)
		}
		st, err := Status(StatusOptions{OutDir: out, In: []string{in}})
		require.NoError(t, err)
		assert.Equal(t, good, st.Done)
		require.Len(t, st.Failed, 1)
		assert.Empty(t, st.Missing)
		assert.Equal(t, ref.Counts, st.Counts, "N=%d", N)
		assert.Equal(t, ref.Perplexity, st.Perplexity)
	}

	// Interrupted after the third batch, then resumed: the same bytes, and
	// only what was missing is done.
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	o := tarOpts(in, out)
	o.Tokenize = tarTokenize(func() {
		if calls.Add(1) == 3 {
			cancel()
		}
	})
	sum, err := RunTars(ctx, o)
	require.ErrorIs(t, err, context.Canceled)
	assert.True(t, sum.Interrupted)
	assertNoTemps(t, out)
	done := sum.Done
	require.Less(t, done, good)
	sum, err = RunTars(context.Background(), tarOpts(in, out))
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Equal(t, done, sum.Skipped)
	assert.Equal(t, good-done, sum.Done)
	assert.Equal(t, want, shardOutputs(t, out))
	assert.Equal(t, ref.Counts, sum.Counts, "statistics include shards done before the interruption")

	// Another model is not "done".
	o = tarOpts(in, out)
	o.Fingerprint = "other"
	sum, err = RunTars(context.Background(), o)
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Equal(t, good, sum.Done)
}

// Whether embeddings are written is part of the params: switching --embed
// on or off redoes every shard, rerunning the same choice skips them.
func TestRunTarsEmbedParams(t *testing.T) {
	in, out := filepath.Join(t.TempDir(), "in"), filepath.Join(t.TempDir(), "out")
	writeTarShards(t, in)
	good := 5 // bad.tar fails every time
	embedOpts := func() TarOptions {
		o := tarOpts(in, out)
		o.Tokenize = nil
		o.TokenizeEmbed = func(ctx context.Context, imgs []image.Image) ([]int32, []float32, error) {
			codes, err := tarTokenize(nil)(ctx, imgs)
			return codes, make([]float32, 2*len(imgs)), err
		}
		return o
	}
	members := func() []string {
		f, err := os.Open(filepath.Join(out, "val", "00000.tar"))
		require.NoError(t, err)
		defer f.Close()
		s, err := wds.NewReader(f).Next()
		require.NoError(t, err)
		var exts []string
		for _, m := range s.Members {
			exts = append(exts, m.Ext)
		}
		return exts
	}
	for i, step := range []struct {
		opt           TarOptions
		done, skipped int
		exts          []string
	}{
		{tarOpts(in, out), good, 0, []string{"txt", "codes.npy"}},
		{embedOpts(), good, 0, []string{"txt", "codes.npy", "embed.npy"}},
		{embedOpts(), 0, good, []string{"txt", "codes.npy", "embed.npy"}},
		{tarOpts(in, out), good, 0, []string{"txt", "codes.npy"}},
	} {
		sum, err := RunTars(context.Background(), step.opt)
		require.ErrorIs(t, err, ErrShardsFailed, "step %d", i)
		assert.Equal(t, step.done, sum.Done, "step %d", i)
		assert.Equal(t, step.skipped, sum.Skipped, "step %d", i)
		assert.Equal(t, step.exts, members(), "step %d", i)
	}
}
