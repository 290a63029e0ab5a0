//go:build unix

package prep

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
)

// TestMain doubles as the child process of the real-process tests: with
// UNITOK_PREP_CHILD_IN set, the test binary runs one prep job (slowed down
// per batch) under NotifyContext and exits 0 (done), 3 (interrupted) or 1.
func TestMain(m *testing.M) {
	if in := os.Getenv("UNITOK_PREP_CHILD_IN"); in != "" {
		os.Exit(childMain(in, os.Getenv("UNITOK_PREP_CHILD_OUT")))
	}
	os.Exit(m.Run())
}

func childMain(in, out string) int {
	m, err := unitok.SynthModel(testConfig, 7)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tok, err := unitok.New(m, unitok.WithDevice("cpu"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer tok.Close()
	ctx, stop := NotifyContext(context.Background())
	defer stop()
	// After `stall` shards are published, every batch blocks until the
	// signal (or the kill): the parent then acts mid-shard, deterministically.
	// UNITOK_PREP_CHILD_STALL unset: no stall.
	if v := os.Getenv("UNITOK_PREP_CHILD_STALL"); v != "" {
		stall, _ := strconv.Atoi(v)
		var commits atomic.Int32
		testHookCommitted = func(Record) { commits.Add(1) }
		testHookBatch = func() {
			if int(commits.Load()) >= stall {
				select {
				case <-ctx.Done():
				case <-time.After(time.Hour):
				}
			}
		}
	}
	var part Partition
	if v := os.Getenv("UNITOK_PREP_CHILD_PARTITION"); v != "" {
		if part, err = ParsePartition(v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	var sum *Summary
	if os.Getenv("UNITOK_PREP_CHILD_MODE") == "tar" {
		// webdataset shards through the fake image tokenizer; testHookBatch
		// runs before each tokenizer call.
		o := tarOpts(in, out)
		o.Partition, o.Batch = part, 2
		o.Tokenize = tarTokenize(func() {
			if testHookBatch != nil {
				testHookBatch()
			}
		})
		sum, err = RunTars(ctx, o)
	} else {
		sum, err = Run(ctx, tok, Encode, Options{In: []string{in}, OutDir: out, Batch: 1, InFlight: 2, Partition: part})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if sum != nil && sum.Interrupted {
			return 3
		}
		return 1
	}
	return 0
}

func manyShards() []shardSpec {
	var s []shardSpec
	for i := range 16 {
		s = append(s, shardSpec{fmt.Sprintf("d%d/s%02d.npy", i%3, i), 3})
	}
	return s
}

// startChild runs the job in a child process that stalls after `after`
// shards, and returns it once the manifest holds those records and the
// next shard's temporary output exists.
func startChild(t *testing.T, in, out string, after int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "UNITOK_PREP_CHILD_IN="+in, "UNITOK_PREP_CHILD_OUT="+out,
		"UNITOK_PREP_CHILD_STALL="+strconv.Itoa(after))
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(filepath.Join(out, "manifest.jsonl"))
		if strings.Count(string(b), "\n") >= after && len(temps(t, out)) > 0 {
			return cmd
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatalf("child did not reach %d manifest records and a temporary output in 60s", after)
	return nil
}

func temps(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestKillNineAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	specs := manyShards()
	writeFeatureShards(t, in, specs)
	ref := reference(t, tok, in)

	cmd := startChild(t, in, out, 3)
	require.NoError(t, cmd.Process.Kill()) // SIGKILL: no cleanup at all
	err := cmd.Wait()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "child should have been killed, got %v", err)
	done := len(manifestLines(t, out))
	require.GreaterOrEqual(t, done, 3)
	require.Less(t, done, len(specs))
	require.NotEmpty(t, temps(t, out), "the kill left a half-written temporary")

	sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, Batch: 2})
	require.NoError(t, err)
	assert.Equal(t, done, sum.Skipped)
	assert.Equal(t, len(specs)-done, sum.Done)
	assert.Len(t, manifestLines(t, out), len(specs))
	assertNoTemps(t, out)
	assert.Equal(t, ref, dirFiles(t, out, true))
}

func TestSIGTERMAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	specs := manyShards()
	writeFeatureShards(t, in, specs)
	ref := reference(t, tok, in)

	cmd := startChild(t, in, out, 2)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err := cmd.Wait()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "want exit status 3, got %v", err)
	assert.Equal(t, 3, ee.ExitCode(), "interrupted run exits with its own status")
	done := len(manifestLines(t, out))
	require.GreaterOrEqual(t, done, 2)
	require.Less(t, done, len(specs))
	assertNoTemps(t, out) // the in-flight shard was abandoned cleanly

	sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.NoError(t, err)
	assert.Equal(t, len(specs)-done, sum.Done)
	assert.Equal(t, ref, dirFiles(t, out, true))
}

func TestOutDirLocked(t *testing.T) {
	out := t.TempDir()
	unlock, err := lockDir(out, Partition{})
	require.NoError(t, err)
	_, err = lockDir(out, Partition{})
	require.ErrorContains(t, err, "in use by another run")
	unlock()
	unlock, err = lockDir(out, Partition{})
	require.NoError(t, err)
	unlock()
}
