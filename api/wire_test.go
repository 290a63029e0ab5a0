package api

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestNPYRoundTrip: AppendNPY writes what ParseNPY reads back bit for bit,
// with a header padded to 64 bytes as NumPy writes it.
func TestNPYRoundTrip(t *testing.T) {
	f := []float32{1, -0.5, float32(math.Inf(1)), math.SmallestNonzeroFloat32, 3e38, 0}
	b := AppendNPY(nil, []int{2, 3}, f, nil)
	if (len(b)-len(f)*4)%64 != 0 {
		t.Errorf("header of %d bytes is not padded to 64", len(b)-len(f)*4)
	}
	a, err := ParseNPY(b)
	if err != nil || !slices.Equal(a.Shape, []int{2, 3}) || a.I32 != nil {
		t.Fatalf("parse: %v %+v", err, a)
	}
	for i := range f {
		if math.Float32bits(a.F32[i]) != math.Float32bits(f[i]) {
			t.Errorf("element %d: %v != %v", i, a.F32[i], f[i])
		}
	}
	c := []int32{0, -1, math.MaxInt32, 7}
	a, err = ParseNPY(AppendNPY(nil, []int{4}, nil, c))
	if err != nil || !slices.Equal(a.I32, c) || !slices.Equal(a.Shape, []int{4}) {
		t.Errorf("int32 1-D: %v %+v", err, a)
	}
	for name, bad := range map[string][]byte{
		"truncated": b[:len(b)-1],
		"not npy":   []byte("hello world"),
		"dtype":     []byte(strings.Replace(string(b), "<f4", "<f8", 1)),
	} {
		if _, err := ParseNPY(bad); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
