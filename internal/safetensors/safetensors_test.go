package safetensors

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/ckpt"
)

// raw builds a file from a literal JSON header and data, as another writer
// (the Python library) might.
func raw(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func le(vals ...any) []byte {
	var b []byte
	for _, v := range vals {
		b, _ = binary.Append(b, binary.LittleEndian, v)
	}
	return b
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.safetensors")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

func TestReadPythonStyleFile(t *testing.T) {
	// What safetensors.torch.save_file writes for {"a": f32 (2,), "b": bf16
	// (2,2), "c": f16 (1,)}, metadata {"num_heads": "4"}.
	hdr := `{"__metadata__":{"num_heads":"4","causal":"true"},` +
		`"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},` +
		`"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]},` +
		`"c":{"dtype":"F16","shape":[1],"data_offsets":[16,18]}}  `
	data := le([]float32{1.5, -3}, []uint16{0x3f80, 0xc000, 0x4049, 0x0000}, []uint16{0x3555})
	for _, big := range []bool{false, true} {
		h, d := hdr, data
		if big { // pad "a" so the file is memory-mapped
			n := mmapThreshold
			h = strings.Replace(hdr, `"shape":[2],"data_offsets":[0,8]`, `"shape":[`+itoa(n)+`],"data_offsets":[0,`+itoa(4*n)+`]`, 1)
			h = strings.NewReplacer("[8,16]", "["+itoa(4*n)+","+itoa(4*n+8)+"]", "[16,18]", "["+itoa(4*n+8)+","+itoa(4*n+10)+"]").Replace(h)
			d = append(append(le([]float32{1.5, -3}), make([]byte, 4*n-8)...), data[8:]...)
		}
		f, err := Open(writeTemp(t, raw(h, d)))
		require.NoError(t, err)
		assert.Equal(t, big, f.mapped != nil)
		assert.Equal(t, map[string]string{"num_heads": "4", "causal": "true"}, f.Metadata())
		infos := f.Tensors()
		require.Len(t, infos, 3)
		assert.Equal(t, "a", infos[0].Name)
		assert.Equal(t, ckpt.Info{Name: "b", DType: "BF16", Shape: []int{2, 2}}, infos[1])
		assert.Equal(t, ckpt.Info{Name: "c", DType: "F16", Shape: []int{1}}, infos[2])
		a, err := f.ReadFloat32("a")
		require.NoError(t, err)
		assert.Equal(t, []float32{1.5, -3}, a[:2])
		b, err := f.ReadFloat32("b")
		require.NoError(t, err)
		assert.Equal(t, []float32{1, -2, 3.140625, 0}, b)
		c, err := f.ReadFloat32("c")
		require.NoError(t, err)
		assert.InDelta(t, 0.33325195, c[0], 1e-8)
		_, err = f.ReadFloat32("nope")
		assert.ErrorContains(t, err, "no tensor named nope")
		require.NoError(t, f.Close())
		require.NoError(t, f.Close())
		_, err = f.ReadFloat32("a")
		assert.ErrorIs(t, err, os.ErrClosed)
	}
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	if s == "" {
		return "0"
	}
	return s
}

func TestWriteRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.safetensors")
	w := []float32{0.25, -1, float32(math.Pi), 1e-30, 7, 8}
	ts := []Tensor{
		F32Tensor("quant_proj.proj.weight", []int{2, 3}, w),
		{Name: "step", DType: "I64", Shape: []int{}, Data: le(int64(1234))},
		{Name: "half", DType: "F16", Shape: []int{2}, Data: le([]uint16{0x3c00, 0xbc00})},
		{Name: "bf", DType: "BF16", Shape: []int{1}, Data: le(uint16(0x4000))},
		F32Tensor("empty", []int{0, 4}, nil),
	}
	require.NoError(t, Write(p, ts, map[string]string{"num_heads": "16", "causal": "false"}))
	b, _ := os.ReadFile(p)
	assert.Equal(t, uint64(0), binary.LittleEndian.Uint64(b)%8, "header padded to 8 bytes")
	f, err := Open(p)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, "16", f.Metadata()["num_heads"])
	got, err := f.ReadFloat32("quant_proj.proj.weight")
	require.NoError(t, err)
	assert.Equal(t, w, got)
	h, err := f.ReadFloat32("half")
	require.NoError(t, err)
	assert.Equal(t, []float32{1, -1}, h)
	bf, err := f.ReadFloat32("bf")
	require.NoError(t, err)
	assert.Equal(t, []float32{2}, bf)
	e, err := f.ReadFloat32("empty")
	require.NoError(t, err)
	assert.Empty(t, e)
	_, err = f.ReadFloat32("step")
	assert.ErrorContains(t, err, "tensor step has dtype I64")
	r, err := f.Raw("step")
	require.NoError(t, err)
	assert.Equal(t, int64(1234), int64(binary.LittleEndian.Uint64(r)))
	info, ok := f.Info("quant_proj.proj.weight")
	assert.True(t, ok)
	assert.Equal(t, []int{2, 3}, info.Shape)
	assert.Len(t, f.Tensors(), 5)

	// No metadata: Metadata is empty, not nil.
	q := filepath.Join(t.TempDir(), "nometa.safetensors")
	require.NoError(t, Write(q, ts[:1], nil))
	g, err := Open(q)
	require.NoError(t, err)
	assert.NotNil(t, g.Metadata())
	assert.Empty(t, g.Metadata())
	g.Close()
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.safetensors")
	for _, c := range []struct {
		ts  []Tensor
		msg string
	}{
		{[]Tensor{F32Tensor("a", []int{2}, []float32{1})}, "needs 8 bytes, have 4"},
		{[]Tensor{F32Tensor("a", []int{1}, []float32{1}), F32Tensor("a", []int{1}, []float32{1})}, "duplicate tensor a"},
		{[]Tensor{{Name: "x", DType: "F12", Shape: []int{1}, Data: []byte{0}}}, `unknown dtype "F12"`},
		{[]Tensor{F32Tensor("__metadata__", []int{1}, []float32{1})}, "invalid tensor name"},
		{[]Tensor{F32Tensor("", []int{1}, []float32{1})}, "invalid tensor name"},
		{[]Tensor{{Name: "n", DType: "F32", Shape: []int{-1}}}, "negative dimension"},
	} {
		assert.ErrorContains(t, Write(p, c.ts, nil), c.msg)
		assert.NoFileExists(t, p)
	}
	ents, _ := os.ReadDir(dir)
	assert.Empty(t, ents, "no temp files left")
}

func TestBadFiles(t *testing.T) {
	ok := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	d8 := make([]byte, 8)
	cases := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"empty", nil, "shorter than the 8-byte header length"},
		{"npy", []byte("\x93NUMPY\x01\x00v\x00{'descr'"), "exceeds"},
		{"huge header len", le(uint64(1) << 40), "exceeds"},
		{"header past end", raw(ok, d8)[:30], "truncated: header length 54 but only 22 bytes follow"},
		{"truncated data", raw(ok, d8[:5]), "truncated: data_offsets [0, 8] end past the 5 bytes of data"},
		{"not json", raw("[1, 2, 3]", nil), "not a JSON object"},
		{"bad json", raw(`{"a":{"dtype":"F32"`, nil), "bad header"},
		{"trailing", raw(ok+" x", d8), "unexpected text after the JSON object"},
		{"unknown dtype", raw(`{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}`, d8), `tensor "a": unknown dtype "F33"`},
		{"size mismatch", raw(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}}`, d8), "cover 8 bytes, but F16 [2] needs 4"},
		{"reversed", raw(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, d8), "reversed"},
		{"negative dim", raw(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, d8), "negative dimension"},
		{"float dim", raw(`{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}`, d8), `tensor "a"`},
		{"three offsets", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}`, d8), "data_offsets has 3 values"},
		{"missing shape", raw(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, d8), "missing shape"},
		{"extra field", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, d8), "unknown field"},
		{"duplicate", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), `duplicate key "a"`},
		{"overlap", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), "overlaps"},
		{"hole", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), "hole of 4 bytes"},
		{"extra data", raw(ok, make([]byte, 12)), "4 bytes of data after the last tensor"},
		{"bad metadata", raw(`{"__metadata__":{"num_heads":16}}`, nil), "__metadata__ must map strings to strings"},
		{"huge shape", raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}`, d8), "too large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(writeTemp(t, c.b))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.msg)
		})
	}
	_, err := Open(filepath.Join(t.TempDir(), "none"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = Open(t.TempDir())
	assert.ErrorContains(t, err, "not a regular file")
}

func TestZeroSizeTensorsShareOffsets(t *testing.T) {
	hdr := `{"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"I8","shape":[0,3],"data_offsets":[4,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`
	f, err := Parse(raw(hdr, le(float32(2), uint8(1), uint8(2))))
	require.NoError(t, err)
	var names []string
	for _, i := range f.Tensors() {
		names = append(names, i.Name)
	}
	assert.Equal(t, []string{"a", "y", "z", "b"}, names)
}

// TestWriteStream: the streaming writer gives the same bytes as Write,
// asks for each tensor once in order, and publishes nothing when a tensor
// fails or has the wrong length.
func TestWriteStream(t *testing.T) {
	dir := t.TempDir()
	ts := []Tensor{
		F32Tensor("w", []int{2, 3}, []float32{0.25, -1, float32(math.Pi), 1e-30, 7, 8}),
		{Name: "bf", DType: "BF16", Shape: []int{1}, Data: le(uint16(0x4000))},
		F32Tensor("empty", []int{0, 4}, nil),
	}
	meta := map[string]string{"num_heads": "16"}
	a, b := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors")
	require.NoError(t, Write(a, ts, meta))
	heads := make([]Tensor, len(ts))
	for i, x := range ts {
		heads[i] = Tensor{Name: x.Name, DType: x.DType, Shape: x.Shape}
	}
	var asked []int
	require.NoError(t, WriteStream(b, heads, meta, func(i int) ([]byte, error) {
		asked = append(asked, i)
		return ts[i].Data, nil
	}))
	assert.Equal(t, []int{0, 1, 2}, asked)
	wa, _ := os.ReadFile(a)
	wb, _ := os.ReadFile(b)
	assert.Equal(t, wa, wb)

	c := filepath.Join(dir, "c.safetensors")
	err := WriteStream(c, heads, meta, func(i int) ([]byte, error) {
		if i == 1 {
			return nil, errors.New("read failed")
		}
		return ts[i].Data, nil
	})
	assert.ErrorContains(t, err, "read failed")
	assert.NoFileExists(t, c)
	err = WriteStream(c, heads, meta, func(i int) ([]byte, error) { return []byte{1, 2, 3}, nil })
	assert.ErrorContains(t, err, "tensor w: F32 [2 3] needs 24 bytes, have 3")
	assert.NoFileExists(t, c)
	ents, _ := os.ReadDir(dir)
	assert.Len(t, ents, 2, "no temp files left")
}
