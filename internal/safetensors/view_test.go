package safetensors

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/mmapfile"
)

func bitsOf(v []float32) []uint32 {
	out := make([]uint32, len(v))
	for i, x := range v {
		out[i] = math.Float32bits(x)
	}
	return out
}

func within(v []float32, b []byte) bool {
	if len(v) == 0 || len(b) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(&v[0])), uintptr(unsafe.Pointer(&b[0]))
	return p >= lo && p+4*uintptr(len(v)) <= lo+uintptr(len(b))
}

// TestViewsEqualCopies: ViewFloat32 gives ReadFloat32's values bit for bit
// for F32, F16 and BF16; an aligned F32 tensor of a mapped file is a view
// of the mapping, a misaligned one (after an odd-length BF16 tensor) a copy.
func TestViewsEqualCopies(t *testing.T) {
	big := make([]float32, 40000) // over the mapping threshold
	for i := range big {
		big[i] = float32(math.Sin(float64(i))) * 1e3
	}
	ts := []Tensor{
		F32Tensor("a", []int{200, 200}, big),
		{Name: "bf", DType: "BF16", Shape: []int{3}, Data: le(uint16(0x3fc0), uint16(0xc000), uint16(0x7f80))},
		F32Tensor("mis", []int{2, 2}, []float32{1.5, -2, 1e-40, float32(math.Inf(1))}),
		{Name: "h", DType: "F16", Shape: []int{4}, Data: le(uint16(0x0001), uint16(0x8400), uint16(0x7bff), uint16(0x3c00))},
		F32Tensor("b", []int{4}, []float32{1, 2, 3, 4}),
		F32Tensor("empty", []int{0}, nil),
	}
	p := filepath.Join(t.TempDir(), "v.safetensors")
	require.NoError(t, Write(p, ts, nil))
	f, err := Open(p)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, mmapfile.Supported, f.mapped != nil)
	for _, tc := range []struct {
		name  string
		alias bool
	}{{"a", true}, {"bf", false}, {"mis", false}, {"h", false}, {"b", false}, {"empty", false}} {
		want, err := f.ReadFloat32(tc.name)
		require.NoError(t, err)
		got, aliased, err := f.ViewFloat32(tc.name)
		require.NoError(t, err)
		assert.Equal(t, bitsOf(want), bitsOf(got), tc.name)
		// "mis" starts 6 bytes after "bf" (4-byte aligned "a" before it),
		// "b" 8 bytes after "h": both misaligned.
		assert.Equal(t, tc.alias, aliased, tc.name)
		if aliased {
			assert.True(t, within(got, f.data), "%s: view outside the data", tc.name)
		}
		f.Release(tc.name)
		assert.Equal(t, bitsOf(want), bitsOf(got), "%s after Release", tc.name)
	}
	_, _, err = f.ViewFloat32("nope")
	assert.ErrorContains(t, err, "no tensor named nope")
}

// TestCloseUnmaps: Close unmaps the file; reads after it fail.
func TestCloseUnmaps(t *testing.T) {
	if !mmapfile.Supported {
		t.Skip("no mapping on this platform")
	}
	p := filepath.Join(t.TempDir(), "c.safetensors")
	require.NoError(t, Write(p, []Tensor{F32Tensor("a", []int{40000}, make([]float32, 40000))}, nil))
	f, err := Open(p)
	require.NoError(t, err)
	_, aliased, err := f.ViewFloat32("a")
	require.NoError(t, err)
	require.True(t, aliased)
	maps := func() bool {
		b, err := os.ReadFile("/proc/self/maps")
		return err == nil && bytes.Contains(b, []byte(p))
	}
	if runtime.GOOS == "linux" {
		require.True(t, maps(), "not mapped while open")
	}
	require.NoError(t, f.Close())
	assert.False(t, maps(), "still mapped after Close")
	_, _, err = f.ViewFloat32("a")
	assert.ErrorIs(t, err, os.ErrClosed)
	f.Release("a")
	assert.NoError(t, f.Close())
}
