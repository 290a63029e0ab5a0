//go:build goexperiment.simd

package unitok

import (
	"simd/archsimd"
	"testing"

	"github.com/stretchr/testify/require"
)

// The archsimd codebook search must switch on exactly when the CPU has
// what it uses.
func TestSIMDEnabledWithAVX2AndFMA(t *testing.T) {
	require.Equal(t, archsimd.X86.AVX2() && archsimd.X86.FMA(), simd.enabled)
}
