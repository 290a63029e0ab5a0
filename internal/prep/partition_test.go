package prep

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/npy"
)

func jsonUnmarshalString(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func TestPartitionRefusesSharedHistogram(t *testing.T) {
	tok := newTok(t)
	_, err := Run(context.Background(), tok, Encode, Options{In: []string{t.TempDir()}, OutDir: t.TempDir(),
		Partition: Partition{1, 4}, Histogram: filepath.Join(t.TempDir(), "h.npy")})
	require.ErrorContains(t, err, "each partition writes its own")
	_, err = RunTars(context.Background(), TarOptions{In: []string{t.TempDir()}, OutDir: t.TempDir(), Tokenize: tarTokenize(nil), K: 1, V: 1,
		Partition: Partition{1, 4}, Histogram: "h.npy"})
	require.ErrorContains(t, err, "each partition writes its own")
}

func TestParsePartition(t *testing.T) {
	for in, want := range map[string]Partition{"3/64": {3, 64}, "0/1": {0, 1}, " 7/8 ": {7, 8}, "off": {}, "none": {}} {
		p, err := ParsePartition(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, p, in)
	}
	for _, in := range []string{"64/64", "-1/4", "3", "3/0", "a/b", "1/2/3", ""} {
		_, err := ParsePartition(in)
		assert.Error(t, err, in)
	}
	assert.Equal(t, "manifest-00003-of-00064.jsonl", manifestName(Partition{3, 64}))
	assert.Equal(t, "manifest.jsonl", manifestName(Partition{}))
	assert.Equal(t, "histogram-00003-of-00064.npy", histogramName(Partition{3, 64}))
}

func TestPartitionFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name string
		env  func(string) string
		want Partition
		err  string
	}{
		{"none", env(), Partition{}, ""},
		{"k8s", env("JOB_COMPLETION_INDEX", "5", "UNITOK_PARTITIONS", "64"), Partition{5, 64}, ""},
		{"k8s without count", env("JOB_COMPLETION_INDEX", "5"), Partition{}, "UNITOK_PARTITIONS"},
		{"k8s index too big", env("JOB_COMPLETION_INDEX", "64", "UNITOK_PARTITIONS", "64"), Partition{}, "0 <= I < N"},
		{"slurm 0-based", env("SLURM_ARRAY_TASK_ID", "3", "SLURM_ARRAY_TASK_COUNT", "8", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_MAX", "7"), Partition{3, 8}, ""},
		{"slurm 1-based", env("SLURM_ARRAY_TASK_ID", "1", "SLURM_ARRAY_TASK_COUNT", "8", "SLURM_ARRAY_TASK_MIN", "1", "SLURM_ARRAY_TASK_MAX", "8"), Partition{0, 8}, ""},
		{"slurm step", env("SLURM_ARRAY_TASK_ID", "5", "SLURM_ARRAY_TASK_COUNT", "4", "SLURM_ARRAY_TASK_MIN", "1", "SLURM_ARRAY_TASK_MAX", "7", "SLURM_ARRAY_TASK_STEP", "2"), Partition{2, 4}, ""},
		{"slurm list", env("SLURM_ARRAY_TASK_ID", "5", "SLURM_ARRAY_TASK_COUNT", "3", "SLURM_ARRAY_TASK_MIN", "1", "SLURM_ARRAY_TASK_MAX", "9"), Partition{}, "--partition"},
		{"slurm without count", env("SLURM_ARRAY_TASK_ID", "5"), Partition{}, "SLURM_ARRAY_TASK_COUNT"},
		{"garbage", env("SLURM_ARRAY_TASK_ID", "x"), Partition{}, "SLURM_ARRAY_TASK_ID"},
		{"k8s wins", env("JOB_COMPLETION_INDEX", "1", "UNITOK_PARTITIONS", "2", "SLURM_ARRAY_TASK_ID", "5", "SLURM_ARRAY_TASK_COUNT", "8"), Partition{1, 2}, ""},
	} {
		p, src, err := PartitionFromEnv(tc.env)
		if tc.err != "" {
			require.Error(t, err, tc.name)
			assert.Contains(t, err.Error(), tc.err, tc.name)
			continue
		}
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, p, tc.name)
		if p.Enabled() {
			assert.NotEmpty(t, src, tc.name)
		}
	}
}

// The assignment is a function of the shard's relative path alone: the
// same whatever the listing order or the other shards, and every shard has
// exactly one owner.
func TestOwnerDeterministic(t *testing.T) {
	var rels []string
	for i := range 2000 {
		rels = append(rels, fmt.Sprintf("part-%d/shard-%06d.tar", i%7, i))
	}
	const N = 16
	first := map[string]int{}
	count := make([]int, N)
	for _, r := range rels {
		first[r] = Owner(r, N)
		count[first[r]]++
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(rels), func(i, j int) { rels[i], rels[j] = rels[j], rels[i] })
	for _, r := range rels[:500] { // another order, another subset
		assert.Equal(t, first[r], Owner(r, N))
		owners := 0
		for i := 0; i < N; i++ {
			if (Partition{Index: i, Count: N}).Owns(r) {
				owners++
			}
		}
		assert.Equal(t, 1, owners)
	}
	// Balance: 2000 shards over 16 partitions, 125 expected each; the
	// binomial sd is about 11.
	for i, c := range count {
		assert.InDelta(t, 125, c, 45, "partition %d", i)
	}
	// Known values pin the hash (changing it would reassign running jobs):
	// int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big") % 64.
	assert.Equal(t, 20, Owner("a/s00.npy", 64))
	assert.Equal(t, 8, Owner("shard-000000.tar", 64))
}

// TestStatusFailuresAndRecount: a failing shard is recorded in its
// partition's manifest and reported by Status as failed (not missing); a
// lost histogram is made up for by recounting the outputs; a later run over
// the whole set skips what the partitions did.
func TestStatusFailuresAndRecount(t *testing.T) {
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	writeFeatureShards(t, in, testShards)
	C := testConfig.InDim
	bad := randFloats(5, 2*testN*C)
	bad[7] = float32(math.NaN())
	require.NoError(t, npy.WriteFloat32(filepath.Join(in, "a", "bad.npy"), []int{2, testN, C}, bad))

	ref, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: t.TempDir()})
	require.ErrorIs(t, err, ErrShardsFailed)

	const N = 3
	// Before any partition ran there is nothing to merge.
	_, err = Status(StatusOptions{OutDir: out})
	require.Error(t, err)
	for i := 0; i < N; i++ {
		p := Partition{Index: i, Count: N}
		sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, Partition: p})
		if p.Owns("a/bad.npy") {
			require.ErrorIs(t, err, ErrShardsFailed)
		} else {
			require.NoError(t, err)
		}
		assert.Equal(t, len(testShards)+1, sum.AllShards)
		assert.Equal(t, p, sum.Partition)
		if i == 1 {
			// Status while partition 2 has not run yet.
			st, err := Status(StatusOptions{OutDir: out, In: []string{in}})
			require.NoError(t, err)
			assert.Equal(t, []int{2}, st.NotStarted)
			assert.False(t, st.Complete())
		}
	}
	st, err := Status(StatusOptions{OutDir: out, In: []string{in}})
	require.NoError(t, err)
	require.Len(t, st.Failed, 1)
	assert.Equal(t, "a/bad.npy", st.Failed[0].Shard)
	assert.Equal(t, Partition{Owner("a/bad.npy", N), N}.String(), st.Failed[0].Partition)
	assert.Contains(t, st.Failed[0].Error, "non-finite")
	assert.Empty(t, st.Missing)
	assert.Equal(t, len(testShards), st.Done)
	assert.False(t, st.Complete())
	assert.Equal(t, ref.Counts, st.Counts)
	assert.Equal(t, ref.Perplexity, st.Perplexity)
	var buf bytes.Buffer
	st.Print(&buf)
	for _, w := range []string{"3 partitions, 3 with a manifest", fmt.Sprintf("%d done, 1 failed, 0 missing (of %d listed)", len(testShards), len(testShards)+1),
		"failed: a/bad.npy", "perplexity:", "from 3 partition histograms"} {
		assert.Contains(t, buf.String(), w)
	}

	// A lost histogram: the outputs are recounted, same statistics.
	require.NoError(t, os.Remove(filepath.Join(out, histogramName(Partition{0, N}))))
	st, err = Status(StatusOptions{OutDir: out})
	require.NoError(t, err)
	assert.Equal(t, ref.Counts, st.Counts)
	assert.Contains(t, st.StatsNote, "recounted")
	assert.Equal(t, "missing (recounted)", st.Partitions[0].Histogram)
	assert.Equal(t, -1, st.Listed)

	// Another partition count afterwards: what the 3 partitions did is not
	// done again.
	for i := 0; i < 2; i++ {
		sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, Partition: Partition{i, 2}})
		if (Partition{i, 2}).Owns("a/bad.npy") {
			require.ErrorIs(t, err, ErrShardsFailed)
		} else {
			require.NoError(t, err)
		}
		assert.Zero(t, sum.Done)
		assert.Positive(t, sum.Skipped)
	}

	// The whole set afterwards: nothing is done twice.
	sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Equal(t, 0, sum.Done)
	assert.Equal(t, len(testShards), sum.Skipped)
	st, err = Status(StatusOptions{OutDir: out, In: []string{in}})
	require.NoError(t, err)
	assert.Empty(t, st.Duplicates)
	assert.Zero(t, st.Count, "mixed: partitions and a whole-set manifest")
	assert.Equal(t, ref.Counts, st.Counts)
}

// shardOutputs maps the shard outputs under dir (not manifests,
// histograms or locks) to their bytes.
func shardOutputs(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for rel, b := range dirFiles(t, dir, true) {
		base := filepath.Base(rel)
		if strings.HasPrefix(base, ".") || strings.HasPrefix(base, "manifest") || strings.HasPrefix(base, "histogram") {
			continue
		}
		out[rel] = b
	}
	return out
}
