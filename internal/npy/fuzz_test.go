package npy

import (
	"testing"
)

func npySeeds() [][]byte {
	return [][]byte{
		rawNpy("<f4", "False", "(2, 3)", le(make([]float32, 6))),
		rawNpy("<f8", "False", "(1,)", le([]float64{1})),
		rawNpy("<f2", "False", "()", le([]uint16{0x3c00})),
		rawNpy("<u2", "False", "(2, 1, 2)", le([]uint16{1, 2, 3, 4})),
		rawNpy("<i8", "False", "(2,)", le([]int64{1 << 40, 2})),
		rawNpy("|u1", "False", "(0, 3)", nil),
		rawNpy("<f4", "True", "(1,)", le([]float32{1})),
		rawNpy(">f4", "False", "(1,)", le([]float32{1})),
		[]byte(Magic + "\x02\x00\x10\x00\x00\x00{'descr': '<i4'\n"),
	}
}

// FuzzNpyHeader: ParseHeader never panics, and a header it accepts
// re-encodes to one that parses to the same dtype and shape.
func FuzzNpyHeader(f *testing.F) {
	for _, s := range npySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		if h.DataOffset > len(b) || h.DType.Size() == 0 {
			t.Fatalf("accepted header with offset %d of %d, dtype %q", h.DataOffset, len(b), h.DType)
		}
		enc, err := EncodeHeader(h.DType, h.Shape)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := ParseHeader(enc)
		if err != nil {
			t.Fatalf("re-encoded header does not parse: %v", err)
		}
		if h2.DType != h.DType || len(h2.Shape) != len(h.Shape) {
			t.Fatalf("round trip changed %v %v -> %v %v", h.DType, h.Shape, h2.DType, h2.Shape)
		}
		for i := range h.Shape {
			if h.Shape[i] != h2.Shape[i] {
				t.Fatalf("round trip changed shape %v -> %v", h.Shape, h2.Shape)
			}
		}
	})
}

// FuzzNpyOpen: FromBytes and the conversions never panic, and an accepted
// array's conversions return exactly Len() values.
func FuzzNpyOpen(f *testing.F) {
	for _, s := range npySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := FromBytes(b)
		if err != nil {
			return
		}
		defer a.Close()
		if len(a.Bytes()) != a.Len()*a.DType.Size() {
			t.Fatalf("have %d data bytes for %d elements of %s", len(a.Bytes()), a.Len(), a.DType)
		}
		if v, err := a.Float32(); err == nil && len(v) != a.Len() {
			t.Fatalf("Float32 returned %d values, want %d", len(v), a.Len())
		}
		if v, err := a.Int32(); err == nil && len(v) != a.Len() {
			t.Fatalf("Int32 returned %d values, want %d", len(v), a.Len())
		}
	})
}
