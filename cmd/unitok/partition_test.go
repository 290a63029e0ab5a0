package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/npy"
	"github.com/unitok/unitok/internal/prep"
)

// The same command run as the partitions of a Slurm array (index from the
// environment) and with --partition, then `prep status`.
func TestPartitionedEncodeAndStatus(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	in := filepath.Join(dir, "shards")
	require.NoError(t, os.MkdirAll(in, 0o755))
	const S, N = 7, 3
	for i := 0; i < S; i++ {
		require.NoError(t, npy.WriteFloat32(filepath.Join(in, fmt.Sprintf("s%02d.npy", i)), []int{2, 5, 48}, randFloats(2*5*48, uint64(30+i))))
	}
	whole := filepath.Join(dir, "whole")
	r := cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", whole)
	require.Equal(t, 0, r.code, r.stderr)

	out := filepath.Join(dir, "out")
	// Status before anything ran: one line, exit 1.
	r = cli("prep", "status", "--out", out)
	require.Equal(t, 1, r.code)

	// Partition 0 from a Slurm array 1-3 (task 1), 1 from Kubernetes, 2 by flag.
	t.Setenv("SLURM_ARRAY_TASK_ID", "1")
	t.Setenv("SLURM_ARRAY_TASK_COUNT", "3")
	t.Setenv("SLURM_ARRAY_TASK_MIN", "1")
	t.Setenv("SLURM_ARRAY_TASK_MAX", "3")
	r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "partition 0/3 (from SLURM_ARRAY_TASK_ID=1 of SLURM_ARRAY_TASK_COUNT=3")
	require.FileExists(t, filepath.Join(out, "manifest-00000-of-00003.jsonl"))

	r = cli("prep", "status", "--out", out, "--in", in)
	require.Equal(t, 1, r.code)
	require.Regexp(t, `not complete: .*2 partitions not started`, r.stderr)

	// A single-array run is not partitioned by the environment.
	single := filepath.Join(dir, "single.npy")
	r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", filepath.Join(in, "s00.npy"), "--out", single)
	require.Equal(t, 0, r.code, r.stderr)
	require.NotContains(t, r.stderr, "partition")
	require.FileExists(t, single)

	t.Setenv("JOB_COMPLETION_INDEX", "1") // Kubernetes wins over Slurm
	r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "UNITOK_PARTITIONS")
	t.Setenv("UNITOK_PARTITIONS", "3")
	r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "partition 1/3 (from JOB_COMPLETION_INDEX=1, UNITOK_PARTITIONS=3")

	r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out, "--partition", "2/3")
	require.Equal(t, 0, r.code, r.stderr)
	require.NotContains(t, r.stderr, "(from ")
	r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out, "--partition", "3/3")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "--partition")

	for i := 0; i < S; i++ {
		name := fmt.Sprintf("s%02d.npy", i)
		a, err := os.ReadFile(filepath.Join(whole, name))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err)
		require.Equal(t, a, b, name)
	}

	r = cli("prep", "status", "--out", out, "--in", in)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "3 partitions, 3 with a manifest")
	require.Contains(t, r.stdout, fmt.Sprintf("%d done, 0 failed, 0 missing (of %d listed)", S, S))
	require.Contains(t, r.stdout, "perplexity:")
	r = cli("prep", "status", "--json", "--out", out)
	require.Equal(t, 0, r.code, r.stderr)
	var rep prep.StatusReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Equal(t, S, rep.Done)
	require.Equal(t, 3, rep.Count)
	require.Len(t, rep.Partitions, 3)
	require.Len(t, rep.Perplexity, 4)

	// --partition off runs the whole set (and finds it done).
	r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out, "--partition", "off")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, fmt.Sprintf("%d shards: 0 done, %d already done", S, S))
}
