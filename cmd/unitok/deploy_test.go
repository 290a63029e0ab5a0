package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// deploy/ holds a Kubernetes Indexed Job and a Slurm array script: they must
// run the same unitok command, with flags unitok accepts, and the Job's
// UNITOK_PARTITIONS must equal its completions.
func TestDeployFilesAgree(t *testing.T) {
	root := filepath.Join("..", "..", "deploy")
	k8s, err := os.ReadFile(filepath.Join(root, "k8s-indexed-job.yaml"))
	require.NoError(t, err)
	slurm, err := os.ReadFile(filepath.Join(root, "slurm-array.sh"))
	require.NoError(t, err)

	completions := regexp.MustCompile(`(?m)^\s+completions:\s*(\d+)`).FindSubmatch(k8s)
	parts := regexp.MustCompile(`(?m)name: UNITOK_PARTITIONS\s+value: "(\d+)"`).FindSubmatch(k8s)
	require.NotNil(t, completions)
	require.NotNil(t, parts)
	require.Equal(t, string(completions[1]), string(parts[1]))
	require.Contains(t, string(k8s), "completionMode: Indexed")
	require.Contains(t, string(k8s), "backoffLimitPerIndex:")
	require.Contains(t, string(k8s), "nvidia.com/gpu")

	// The Job's command: the list items after "command:".
	cmdBlock := regexp.MustCompile(`(?s)command:\n((?:\s+- \S+\n)+)`).FindSubmatch(k8s)
	require.NotNil(t, cmdBlock)
	var kargs []string
	for _, l := range strings.Split(strings.TrimSpace(string(cmdBlock[1])), "\n") {
		kargs = append(kargs, strings.TrimPrefix(strings.TrimSpace(l), "- "))
	}
	// The script's command, with its defaults substituted.
	defaults := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(\w+)=\$\{\w+:-(\S+)\}$`).FindAllSubmatch(slurm, -1) {
		defaults[string(m[1])] = string(m[2])
	}
	line := regexp.MustCompile(`(?m)^exec (unitok .*)$`).FindSubmatch(slurm)
	require.NotNil(t, line)
	var sargs []string
	for _, f := range strings.Fields(string(line[1])) {
		f = regexp.MustCompile(`"\$(\w+)"`).ReplaceAllStringFunc(f, func(v string) string {
			return defaults[strings.Trim(v, `"$`)]
		})
		sargs = append(sargs, f)
	}
	require.Equal(t, kargs, sargs, "the Job and the array script run the same command")
	require.Regexp(t, `(?m)^#SBATCH --array=\d+-\d+`, string(slurm))

	// unitok accepts those flags: with a missing checkpoint the run fails
	// on the checkpoint, not on a flag.
	r := cli(append(kargs[1:], "--partition", "0/64")...)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "/models/unitok_tokenizer.pth")
}
