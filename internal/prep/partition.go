package prep

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Partition splits a data set across independent runs (machines, pods,
// array tasks): run Index of Count does exactly the shards whose owner is
// Index. The owner of a shard depends only on its path relative to its
// input root (the manifest's "shard"), hashed, so every run computes the
// same assignment whatever order it lists the files in, wherever the data
// is mounted, and whatever other shards exist: adding shards never moves
// old ones to another partition. The zero Partition is the whole set.
//
// Each partition keeps its own manifest (manifest-IIIII-of-NNNNN.jsonl) and
// lock (.prep-IIIII-of-NNNNN.lock) in the shared output directory, and
// writes its code histogram to histogram-IIIII-of-NNNNN.npy at the end of
// each run. Since owners are disjoint, partitions never write the same
// output file; a rerun of one partition resumes from its own manifest (and
// skips shards any other manifest in the directory records as done).
type Partition struct {
	Index, Count int
}

// Enabled reports whether p selects a subset.
func (p Partition) Enabled() bool { return p.Count > 0 }

func (p Partition) String() string {
	if !p.Enabled() {
		return "all"
	}
	return fmt.Sprintf("%d/%d", p.Index, p.Count)
}

// suffix is "-00003-of-00064", the tag of the partition's own files.
func (p Partition) suffix() string {
	return fmt.Sprintf("-%05d-of-%05d", p.Index, p.Count)
}

// Validate checks 0 <= Index < Count.
func (p Partition) Validate() error {
	if p.Count < 0 || p.Enabled() && (p.Index < 0 || p.Index >= p.Count) {
		return fmt.Errorf("partition %d/%d: want I/N with 0 <= I < N", p.Index, p.Count)
	}
	return nil
}

// Owner is the partition (of count) that owns the shard at rel, its
// slash-separated path relative to its input root: the first 8 bytes of
// SHA-256(rel), big-endian, modulo count.
func Owner(rel string, count int) int {
	h := sha256.Sum256([]byte(rel))
	return int(binary.BigEndian.Uint64(h[:8]) % uint64(count))
}

// Owns reports whether p includes the shard at rel.
func (p Partition) Owns(rel string) bool {
	return !p.Enabled() || Owner(rel, p.Count) == p.Index
}

// ParsePartition reads "I/N" (0 <= I < N) or "off".
func ParsePartition(s string) (Partition, error) {
	s = strings.TrimSpace(s)
	if s == "off" || s == "none" {
		return Partition{}, nil
	}
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n <= 0 {
		return Partition{}, fmt.Errorf("partition %q: want I/N (e.g. 3/64) or off", s)
	}
	p := Partition{Index: i, Count: n}
	return p, p.Validate()
}

// Scheduler environment variables read by PartitionFromEnv.
const (
	// Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX in every pod; the
	// Job's spec.completions is not exposed, so the pod template must pass
	// it in EnvPartitions (deploy/k8s-indexed-job.yaml does).
	EnvK8sIndex   = "JOB_COMPLETION_INDEX"
	EnvPartitions = "UNITOK_PARTITIONS"
	// Slurm job arrays (sbatch --array=0-63, or 1-64, or with a :step).
	EnvSlurmID    = "SLURM_ARRAY_TASK_ID"
	EnvSlurmCount = "SLURM_ARRAY_TASK_COUNT"
	EnvSlurmMin   = "SLURM_ARRAY_TASK_MIN"
	EnvSlurmMax   = "SLURM_ARRAY_TASK_MAX"
	EnvSlurmStep  = "SLURM_ARRAY_TASK_STEP"
)

// PartitionFromEnv derives the partition from the scheduler's environment:
// a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with UNITOK_PARTITIONS =
// spec.completions) or a Slurm job array (SLURM_ARRAY_TASK_ID and
// SLURM_ARRAY_TASK_COUNT; the index is (ID - MIN) / STEP so that --array=1-64
// works too). It returns the zero Partition and "" when neither is set, and
// a description of where the value came from otherwise.
func PartitionFromEnv(getenv func(string) string) (Partition, string, error) {
	num := func(name string) (int, bool, error) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, true, fmt.Errorf("%s=%q is not a non-negative integer", name, v)
		}
		return n, true, nil
	}
	if idx, ok, err := num(EnvK8sIndex); err != nil {
		return Partition{}, "", err
	} else if ok {
		n, nok, err := num(EnvPartitions)
		if err != nil {
			return Partition{}, "", err
		}
		if !nok || n == 0 {
			return Partition{}, "", fmt.Errorf("%s=%d is set but the partition count is not: set %s to the Job's spec.completions, or pass --partition %d/N (or --partition off)",
				EnvK8sIndex, idx, EnvPartitions, idx)
		}
		p := Partition{Index: idx, Count: n}
		return p, fmt.Sprintf("%s=%d, %s=%d", EnvK8sIndex, idx, EnvPartitions, n), p.Validate()
	}
	id, ok, err := num(EnvSlurmID)
	if err != nil || !ok {
		return Partition{}, "", err
	}
	count, cok, err := num(EnvSlurmCount)
	if err != nil {
		return Partition{}, "", err
	}
	if !cok || count == 0 {
		return Partition{}, "", fmt.Errorf("%s=%d is set but %s is not; pass --partition I/N", EnvSlurmID, id, EnvSlurmCount)
	}
	lo, _, err := num(EnvSlurmMin)
	if err != nil {
		return Partition{}, "", err
	}
	step, sok, err := num(EnvSlurmStep)
	if err != nil {
		return Partition{}, "", err
	}
	if !sok || step == 0 {
		step = 1
	}
	if hi, hok, err := num(EnvSlurmMax); err != nil {
		return Partition{}, "", err
	} else if hok && (hi-lo)/step+1 != count {
		return Partition{}, "", fmt.Errorf("the Slurm array %d-%d:%d is not %d evenly spaced tasks (%s); pass --partition I/N", lo, hi, step, count, EnvSlurmCount)
	}
	if id < lo || (id-lo)%step != 0 {
		return Partition{}, "", fmt.Errorf("%s=%d is not in the array %d-...:%d; pass --partition I/N", EnvSlurmID, id, lo, step)
	}
	p := Partition{Index: (id - lo) / step, Count: count}
	return p, fmt.Sprintf("%s=%d of %s=%d", EnvSlurmID, id, EnvSlurmCount, count), p.Validate()
}

// manifestName is the manifest file of partition p in an output directory.
func manifestName(p Partition) string {
	if !p.Enabled() {
		return "manifest.jsonl"
	}
	return "manifest" + p.suffix() + ".jsonl"
}

// histogramName is the code-histogram sidecar of partition p.
func histogramName(p Partition) string { return "histogram" + p.suffix() + ".npy" }

// manifestRE matches the manifest names a directory may hold.
var manifestRE = regexp.MustCompile(`^manifest(?:-(\d+)-of-(\d+))?\.jsonl$`)

// manifestFile is a manifest found in an output directory.
type manifestFile struct {
	path string
	part Partition // zero for manifest.jsonl
}

// listManifests returns every manifest in dir, manifest.jsonl first, then by
// partition.
func listManifests(dir string) ([]manifestFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []manifestFile
	for _, e := range ents {
		m := manifestRE.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		mf := manifestFile{path: filepath.Join(dir, e.Name())}
		if m[1] != "" {
			i, _ := strconv.Atoi(m[1])
			n, _ := strconv.Atoi(m[2])
			mf.part = Partition{Index: i, Count: n}
			if mf.part.Validate() != nil || n == 0 {
				continue
			}
		}
		out = append(out, mf)
	}
	// ReadDir sorts by name: manifest-... sorts before manifest.jsonl.
	for i, mf := range out {
		if !mf.part.Enabled() && i > 0 {
			copy(out[1:i+1], out[:i])
			out[0] = mf
		}
	}
	return out, nil
}
