//go:build unix

package prep

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// partitionChild starts the test binary as one partition's process (see
// childMain). stall < 0: no stall.
func partitionChild(t *testing.T, in, out string, p Partition, stall int, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "UNITOK_PREP_CHILD_IN="+in, "UNITOK_PREP_CHILD_OUT="+out,
		"UNITOK_PREP_CHILD_PARTITION="+p.String())
	cmd.Env = append(cmd.Env, env...)
	if stall >= 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("UNITOK_PREP_CHILD_STALL=%d", stall))
	}
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	return cmd
}

// publications counts, per output, the success records over every
// manifest in dir, and checks each record's partition owns its shard.
func publications(t *testing.T, dir string) map[string]int {
	t.Helper()
	mfs, err := listManifests(dir)
	require.NoError(t, err)
	n := map[string]int{}
	for _, mf := range mfs {
		b, err := os.ReadFile(mf.path)
		require.NoError(t, err)
		for line := range strings.Lines(string(b)) {
			var r Record
			require.NoError(t, jsonUnmarshalString(line, &r), line)
			require.Empty(t, r.Error, "no shard fails here: %s", line)
			n[r.Output]++
			require.Equal(t, mf.part.String(), r.Partition)
			require.True(t, mf.part.Owns(r.Shard), "%s published %s, which it does not own", mf.part, r.Shard)
		}
	}
	return n
}

// TestPartitionsAsProcesses runs a data set as N separate processes, one per
// partition, concurrently, with one of them SIGKILLed mid-shard and
// restarted, and for N larger than the number of shards: the union of the
// outputs is byte-identical to one single-process run, every shard is
// published exactly once, and `prep status` agrees with the single run's
// statistics.
func TestPartitionsAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	tok := newTok(t)
	in := t.TempDir()
	specs := manyShards() // 16 shards of 3 images
	writeFeatureShards(t, in, specs)
	refDir := t.TempDir()
	refSum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: refDir, Batch: 2})
	require.NoError(t, err)
	ref := shardOutputs(t, refDir)
	require.Len(t, ref, len(specs))

	for _, N := range []int{4, 23} {
		t.Run(fmt.Sprint("N=", N), func(t *testing.T) {
			out := t.TempDir()
			owned := make([]int, N)
			for _, s := range specs {
				owned[Owner(s.rel, N)]++
			}
			victim := 0 // the partition with the most shards is killed
			for i, c := range owned {
				if c > owned[victim] {
					victim = i
				}
			}
			require.GreaterOrEqual(t, owned[victim], 2)
			if N > len(specs) {
				empty := 0
				for _, c := range owned {
					if c == 0 {
						empty++
					}
				}
				require.Positive(t, empty, "N > shards leaves partitions without shards")
			}

			// The victim stalls after its first shard, mid-way through its
			// second; the others run to completion meanwhile.
			vp := Partition{Index: victim, Count: N}
			vcmd := partitionChild(t, in, out, vp, 1)
			var cmds []*exec.Cmd
			for i := 0; i < N; i++ {
				if i != victim {
					cmds = append(cmds, partitionChild(t, in, out, Partition{Index: i, Count: N}, -1))
				}
			}
			vman := filepath.Join(out, manifestName(vp))
			deadline := time.Now().Add(60 * time.Second)
			for {
				b, _ := os.ReadFile(vman)
				if strings.Count(string(b), "\n") >= 1 && len(temps(t, out)) > 0 {
					break
				}
				require.True(t, time.Now().Before(deadline), "victim did not publish a shard and start the next")
				time.Sleep(2 * time.Millisecond)
			}
			require.NoError(t, vcmd.Process.Kill()) // SIGKILL
			var ee *exec.ExitError
			require.True(t, errors.As(vcmd.Wait(), &ee))
			for _, c := range cmds {
				require.NoError(t, c.Wait(), "partition process")
			}
			// Mid-way, status sees the victim's shards as missing.
			st, err := Status(StatusOptions{OutDir: out, In: []string{in}})
			require.NoError(t, err)
			assert.False(t, st.Complete())
			assert.Equal(t, N, st.Count)
			assert.Empty(t, st.NotStarted)
			assert.Equal(t, owned[victim]-1, len(st.Missing), "missing: %v", st.Missing)
			assert.Equal(t, map[string]int{vp.String(): owned[victim] - 1}, st.MissingBy)

			// Restarted, the victim resumes: it does only what is missing.
			rcmd := partitionChild(t, in, out, vp, -1)
			require.NoError(t, rcmd.Wait())
			assertNoTemps(t, out)
			assert.Equal(t, ref, shardOutputs(t, out), "union of the partitions == single run")
			pubs := publications(t, out)
			require.Len(t, pubs, len(specs))
			for o, n := range pubs {
				assert.Equal(t, 1, n, "%s published %d times", o, n)
			}
			for i := 0; i < N; i++ {
				assert.FileExists(t, filepath.Join(out, manifestName(Partition{Index: i, Count: N})), "every partition leaves a manifest")
			}

			st, err = Status(StatusOptions{OutDir: out, In: []string{in}})
			require.NoError(t, err)
			assert.True(t, st.Complete(), "%+v", st)
			assert.Equal(t, len(specs), st.Done)
			assert.Equal(t, len(specs), st.Listed)
			assert.Len(t, st.Partitions, N)
			assert.Equal(t, refSum.Tokens, st.Tokens)
			assert.Equal(t, refSum.CodeTokens, st.CodeTokens)
			assert.Equal(t, refSum.Counts, st.Counts, "merged histograms == single run's")
			assert.Equal(t, refSum.Usage, st.Usage)
			assert.Equal(t, refSum.Perplexity, st.Perplexity)
			nonEmpty := 0
			for _, c := range owned {
				if c > 0 {
					nonEmpty++
				}
			}
			assert.Equal(t, fmt.Sprintf("from %d partition histograms", nonEmpty), st.StatsNote)
			var tokens int64
			for _, p := range st.Partitions {
				tokens += p.Tokens
				if p.Done > 0 {
					assert.Positive(t, p.TokensPerSecond, p.Partition)
				}
			}
			assert.Equal(t, refSum.Tokens, tokens)
		})
	}
}

func TestPartitionLocks(t *testing.T) {
	out := t.TempDir()
	u0, err := lockDir(out, Partition{0, 2})
	require.NoError(t, err)
	u1, err := lockDir(out, Partition{1, 2}) // partitions side by side
	require.NoError(t, err)
	_, err = lockDir(out, Partition{0, 2})
	require.ErrorContains(t, err, "partition 0/2")
	_, err = lockDir(out, Partition{})
	require.ErrorContains(t, err, "in use")
	u0()
	u1()
	uw, err := lockDir(out, Partition{})
	require.NoError(t, err)
	_, err = lockDir(out, Partition{1, 2})
	require.ErrorContains(t, err, "whole set")
	uw()
}

// TestTarPartitionsAsProcesses: the same for webdataset shards (RunTars with
// the fake image tokenizer): 3 partitions as processes, one SIGKILLed
// while tokenizing and restarted.
func TestTarPartitionsAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	in := t.TempDir()
	writeTarShards(t, in)
	require.NoError(t, os.Remove(filepath.Join(in, "bad.tar")))
	refDir := t.TempDir()
	ref, err := RunTars(context.Background(), tarOpts(in, refDir))
	require.NoError(t, err)
	want := shardOutputs(t, refDir)
	const N = 3
	owned := make([]int, N)
	shards, err := findTarShards([]string{in}, refDir)
	require.NoError(t, err)
	for _, s := range shards {
		owned[Owner(s.rel, N)]++
	}
	victim := 0
	for i, c := range owned {
		if c > owned[victim] {
			victim = i
		}
	}
	require.GreaterOrEqual(t, owned[victim], 2, "owners %v", owned)
	out := t.TempDir()
	vp := Partition{Index: victim, Count: N}
	vcmd := partitionChild(t, in, out, vp, 1, "UNITOK_PREP_CHILD_MODE=tar")
	var cmds []*exec.Cmd
	for i := 0; i < N; i++ {
		if i != victim {
			cmds = append(cmds, partitionChild(t, in, out, Partition{Index: i, Count: N}, -1, "UNITOK_PREP_CHILD_MODE=tar"))
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(out, manifestName(vp)))
		if strings.Count(string(b), "\n") >= 1 && len(temps(t, out)) > 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "victim did not publish a shard and start the next")
		time.Sleep(2 * time.Millisecond)
	}
	require.NoError(t, vcmd.Process.Kill())
	var ee *exec.ExitError
	require.True(t, errors.As(vcmd.Wait(), &ee))
	for _, c := range cmds {
		require.NoError(t, c.Wait())
	}
	require.NoError(t, partitionChild(t, in, out, vp, -1, "UNITOK_PREP_CHILD_MODE=tar").Wait())
	assertNoTemps(t, out)
	assert.Equal(t, want, shardOutputs(t, out))
	pubs := publications(t, out)
	require.Len(t, pubs, len(want))
	for o, n := range pubs {
		assert.Equal(t, 1, n, o)
	}
	st, err := Status(StatusOptions{OutDir: out, In: []string{in}})
	require.NoError(t, err)
	assert.True(t, st.Complete())
	assert.Equal(t, ref.Counts, st.Counts)
	assert.Equal(t, ref.Tokens, st.Tokens)
}
