package safetensors

import (
	"testing"
)

func seedFiles() [][]byte {
	var out [][]byte
	for _, ts := range [][]Tensor{
		{F32Tensor("a", []int{2}, []float32{1, 2})},
		{F32Tensor("w", []int{2, 2}, []float32{1, 2, 3, 4}), {Name: "h", DType: "F16", Shape: []int{1}, Data: []byte{0, 0x3c}}},
		{{Name: "b", DType: "BF16", Shape: []int{}, Data: []byte{0x80, 0x3f}}, {Name: "i", DType: "I64", Shape: []int{1}, Data: make([]byte, 8)}},
	} {
		b, err := Encode(ts, map[string]string{"num_heads": "2"})
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	out = append(out, raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	return out
}

// FuzzOpenSafetensors: Parse never panics; an accepted file's tensors tile
// the data exactly, ReadFloat32 returns Elems() values for float dtypes, and
// re-encoding its tensors yields a file that parses to the same listing.
func FuzzOpenSafetensors(f *testing.F) {
	for _, s := range seedFiles() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := Parse(b)
		if err != nil {
			return
		}
		defer sf.Close()
		var ts []Tensor
		total := 0
		for _, info := range sf.Tensors() {
			r, err := sf.Raw(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			if len(r) != info.Elems()*DTypeSize(info.DType) {
				t.Fatalf("tensor %s: %d bytes for %v", info.Name, len(r), info)
			}
			total += len(r)
			v, err := sf.ReadFloat32(info.Name)
			switch info.DType {
			case "F32", "F16", "BF16":
				if err != nil || len(v) != info.Elems() {
					t.Fatalf("tensor %s: %d values, err %v", info.Name, len(v), err)
				}
			default:
				if err == nil {
					t.Fatalf("tensor %s of %s converted", info.Name, info.DType)
				}
			}
			ts = append(ts, Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: r})
		}
		if total != len(sf.data) {
			t.Fatalf("tensors cover %d of %d data bytes", total, len(sf.data))
		}
		enc, err := Encode(ts, sf.Metadata())
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		sf2, err := Parse(enc)
		if err != nil {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		if len(sf2.Tensors()) != len(ts) {
			t.Fatalf("re-encoded file lists %d tensors, want %d", len(sf2.Tensors()), len(ts))
		}
	})
}
