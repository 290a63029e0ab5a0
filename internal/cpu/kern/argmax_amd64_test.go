package kern

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/cpu"
)

// Every vector path the CPU has must be offered: a kernel that failed its
// start-up self-check would drop out silently otherwise.
func TestArgmaxPathsMatchCPUFeatures(t *testing.T) {
	paths := ArgmaxPaths()
	t.Logf("AVX-512F %v, AVX2 %v, FMA %v: paths %v", cpu.X86.HasAVX512F, cpu.X86.HasAVX2, cpu.X86.HasFMA, paths)
	if cpu.X86.HasAVX512F {
		require.Equal(t, PathAVX512, paths[0], "AVX-512 CPU: the avx512 path must pass its self-check and lead")
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		require.Contains(t, paths, PathAVX2, "AVX2+FMA CPU: the avx2 path must pass its self-check")
	}
}
