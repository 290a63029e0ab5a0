package npy

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawNpy builds a .npy file by hand the way np.save does (version 1.0,
// header padded to 64 bytes), so tests do not depend on our encoder.
func rawNpy(descr, fortran, shape string, data []byte) []byte {
	dict := "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }"
	total := (10 + len(dict) + 1 + 63) / 64 * 64
	b := []byte(Magic + "\x01\x00")
	b = binary.LittleEndian.AppendUint16(b, uint16(total-10))
	b = append(b, dict...)
	b = append(b, strings.Repeat(" ", total-10-len(dict)-1)...)
	b = append(b, '\n')
	return append(b, data...)
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
	p := filepath.Join(t.TempDir(), "a.npy")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

func TestNumpyHeaderBytes(t *testing.T) {
	// np.save(f, np.zeros((2, 3), np.float32)) writes exactly this header.
	want := "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" +
		strings.Repeat(" ", 58) + "\n"
	got, err := EncodeHeader(Float32, []int{2, 3})
	require.NoError(t, err)
	assert.Equal(t, want, string(got))
	assert.Len(t, got, 128)

	got, err = EncodeHeader(Uint16, []int{5})
	require.NoError(t, err)
	assert.Contains(t, string(got), "'shape': (5,), }")
	got, err = EncodeHeader(Int64, nil)
	require.NoError(t, err)
	assert.Contains(t, string(got), "'shape': (), }")
}

func TestReadEveryDType(t *testing.T) {
	f32 := []float32{1.5, -2.25, 3e38, -0}
	cases := []struct {
		descr string
		data  []byte
		f     []float32 // nil: Float32 must fail
		i     []int32   // nil: Int32 must fail
	}{
		{"<f4", le(f32), f32, nil},
		{"<f8", le([]float64{1.5, -2.25, 3e38, -0}), f32, nil},
		{"<f2", le([]uint16{0x3e00, 0xc080, 0x7c00, 0x8000}), []float32{1.5, -2.25, float32(math.Inf(1)), 0}, nil},
		{"|i1", le([]int8{-128, 127, 0, -1}), nil, []int32{-128, 127, 0, -1}},
		{"|u1", le([]uint8{0, 255, 7, 1}), nil, []int32{0, 255, 7, 1}},
		{"<i2", le([]int16{-32768, 32767, 5, -5}), nil, []int32{-32768, 32767, 5, -5}},
		{"<u2", le([]uint16{0, 65535, 4095, 4096}), nil, []int32{0, 65535, 4095, 4096}},
		{"<i4", le([]int32{math.MinInt32, math.MaxInt32, 0, 42}), nil, []int32{math.MinInt32, math.MaxInt32, 0, 42}},
		{"<u4", le([]uint32{0, math.MaxInt32, 1, 2}), nil, []int32{0, math.MaxInt32, 1, 2}},
		{"<i8", le([]int64{math.MinInt32, math.MaxInt32, -3, 3}), nil, []int32{math.MinInt32, math.MaxInt32, -3, 3}},
		{"<u8", le([]uint64{0, math.MaxInt32, 9, 10}), nil, []int32{0, math.MaxInt32, 9, 10}},
	}
	for _, c := range cases {
		t.Run(c.descr, func(t *testing.T) {
			for _, big := range []bool{false, true} {
				data := c.data
				shape := "(2, 2)"
				if big { // big enough to be memory-mapped
					rep := mmapThreshold/len(c.data) + 1
					data = []byte(strings.Repeat(string(c.data), rep))
					shape = "(" + strconv.Itoa(2*rep) + ", 2)"
				}
				a, err := Open(writeTemp(t, rawNpy(c.descr, "False", shape, data)))
				require.NoError(t, err)
				assert.Equal(t, DType(c.descr), a.DType)
				assert.Equal(t, big, a.mapped != nil)
				f, ferr := a.Float32()
				if c.f != nil {
					require.NoError(t, ferr)
					assert.Equal(t, c.f, f[:4])
					assert.Equal(t, c.f, f[len(f)-4:])
				} else {
					assert.ErrorContains(t, ferr, "not a float type")
				}
				i, ierr := a.Int32()
				if c.i != nil {
					require.NoError(t, ierr)
					assert.Equal(t, c.i, i[:4])
					assert.Equal(t, c.i, i[len(i)-4:])
				} else {
					assert.ErrorContains(t, ierr, "not an integer type")
				}
				require.NoError(t, a.Close())
				require.NoError(t, a.Close())
			}
		})
	}
}

func TestFloat32ZeroCopy(t *testing.T) {
	n := mmapThreshold // 256 KiB of data: mapped
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(i) * 0.5
	}
	p := filepath.Join(t.TempDir(), "x.npy")
	require.NoError(t, WriteFloat32(p, []int{n / 4, 4}, vals))
	a, err := Open(p)
	require.NoError(t, err)
	defer a.Close()
	require.NotNil(t, a.mapped)
	f, err := a.Float32()
	require.NoError(t, err)
	assert.Equal(t, vals, f)
	// The slice aliases the mapping rather than a copy.
	assert.Equal(t, &a.data[0], (*byte)(unsafePointer(&f[0])))
}

func TestIntRangeErrors(t *testing.T) {
	for _, c := range []struct {
		descr string
		data  []byte
		msg   string
	}{
		{"<i8", le([]int64{1, 2, 3, 1 << 31}), "value 2147483648 at index (1, 1) (int64) is outside the int32 range"},
		{"<i8", le([]int64{1, -1 << 31, -1<<31 - 1, 0}), "value -2147483649 at index (1, 0)"},
		{"<u4", le([]uint32{1 << 31, 0, 0, 0}), "value 2147483648 at index (0, 0) (uint32)"},
		{"<u8", le([]uint64{0, 0, math.MaxUint64, 0}), "value 18446744073709551615 at index (1, 0)"},
	} {
		a, err := FromBytes(rawNpy(c.descr, "False", "(2, 2)", c.data))
		require.NoError(t, err)
		_, err = a.Int32()
		assert.ErrorContains(t, err, c.msg)
	}
	a, err := FromBytes(rawNpy("<f8", "False", "(3,)", le([]float64{0, 1e39, 2})))
	require.NoError(t, err)
	_, err = a.Float32()
	assert.ErrorContains(t, err, "value 1e+39 at index (1) overflows float32")
}

func TestBadFiles(t *testing.T) {
	good := rawNpy("<f4", "False", "(2, 3)", le(make([]float32, 6)))
	require.Len(t, good, 128+24)
	cases := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"empty", nil, "not a .npy file"},
		{"text", []byte("hello, world, this is not numpy"), "missing the \\x93NUMPY magic"},
		{"truncated data", good[:len(good)-5], "truncated: have 19 bytes of data, want 24"},
		{"no data", good[:128], "truncated: have 0 bytes of data, want 24"},
		{"truncated header", good[:40], "truncated header"},
		{"trailing", append(append([]byte{}, good...), 1, 2), "2 unexpected bytes after the data"},
		{"fortran", rawNpy("<f4", "True", "(2, 3)", le(make([]float32, 6))), "fortran_order is True"},
		{"big endian", rawNpy(">f4", "False", "(2,)", make([]byte, 8)), "big-endian dtype \">f4\" is not supported"},
		{"big endian int", rawNpy(">i8", "False", "(2,)", make([]byte, 16)), "big-endian"},
		{"bool", rawNpy("|b1", "False", "(2,)", make([]byte, 2)), "bool dtype \"|b1\" is not supported"},
		{"complex", rawNpy("<c8", "False", "(2,)", make([]byte, 16)), "complex"},
		{"object", rawNpy("|O", "False", "(2,)", make([]byte, 16)), "object"},
		{"negative dim", rawNpy("<f4", "False", "(-2,)", nil), "non-negative integer"},
		{"float dim", rawNpy("<f4", "False", "(2.5,)", nil), "expected ','"},
		{"not tuple", rawNpy("<f4", "False", "[2]", nil), "expected a tuple"},
		{"paren int", rawNpy("<f4", "False", "(2)", make([]byte, 8)), "want (n,)"},
		{"huge", rawNpy("<f4", "False", "(4294967296, 4294967296, 4294967296)", nil), "too large"},
		{"version", append([]byte(Magic+"\x04\x00"), good[8:]...), "unsupported .npy format version 4.0"},
		{"no newline", []byte(strings.Replace(string(good), " \n", "  ", 1)), "newline"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(writeTemp(t, c.b))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.msg)
		})
	}
	// Header dict variations.
	for _, c := range []struct{ dict, msg string }{
		{"{'descr': '<f4', 'shape': (1,), }", `missing key "fortran_order"`},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", `unexpected key "x"`},
		{"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "duplicate key"},
		{"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", "structured"},
		{"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (1,)}", "not True or False"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "after the dict"},
		{"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "expected ',' or '}'"},
	} {
		b := []byte(Magic + "\x01\x00")
		b = binary.LittleEndian.AppendUint16(b, uint16(len(c.dict)+1))
		b = append(append(b, c.dict...), '\n')
		_, err := ParseHeader(b)
		assert.ErrorContains(t, err, c.msg, c.dict)
	}
	// Python-style variations NumPy itself accepts.
	for _, dict := range []string{
		`{"descr": "<f4", "fortran_order": False, "shape": (1,)}`,
		"{'shape': (1,), 'fortran_order': False, 'descr': '<f4'}",
		"{'descr':'<f4','fortran_order':False,'shape':(1L,),}",
	} {
		b := []byte(Magic + "\x01\x00")
		b = binary.LittleEndian.AppendUint16(b, uint16(len(dict)+1))
		b = append(append(b, dict...), '\n')
		h, err := ParseHeader(b)
		require.NoError(t, err, dict)
		assert.Equal(t, []int{1}, h.Shape)
	}
	_, err := Open(filepath.Join(t.TempDir(), "missing.npy"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = Open(t.TempDir())
	assert.ErrorContains(t, err, "not a regular file")
}

func TestVersions2And3(t *testing.T) {
	dict := "{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }"
	for _, v := range []byte{2, 3} {
		b := []byte(Magic)
		b = append(b, v, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(dict)+1))
		b = append(append(b, dict...), '\n')
		b = append(b, le([]uint16{7, 8, 65535})...)
		a, err := FromBytes(b)
		require.NoError(t, err)
		got, err := a.Int32()
		require.NoError(t, err)
		assert.Equal(t, []int32{7, 8, 65535}, got)
	}
}

func TestWriteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.npy")
	vals := []float32{1, -2.5, float32(math.Pi), 1e-40, 0, 7}
	require.NoError(t, WriteFloat32(p, []int{1, 2, 3}, vals))
	a, err := Open(p)
	require.NoError(t, err)
	assert.Equal(t, []int{1, 2, 3}, a.Shape)
	assert.Equal(t, Float32, a.DType)
	got, err := a.Float32()
	require.NoError(t, err)
	assert.Equal(t, vals, got)
	require.NoError(t, a.Close())
	_, err = a.Float32()
	assert.ErrorIs(t, err, os.ErrClosed)

	codes := []int32{0, 1, 4095, 65535, 12, 3}
	for _, dt := range []string{"uint16", "int32", "int64", "<u2", "int8"} {
		q := filepath.Join(dir, dt+".npy")
		err := WriteInts(q, []int{3, 2}, codes, dt)
		if dt == "int8" {
			assert.ErrorContains(t, err, "value 4095 at index 2 does not fit int8")
			assert.NoFileExists(t, q)
			continue
		}
		require.NoError(t, err)
		a, err := Open(q)
		require.NoError(t, err)
		want, _ := ParseDType(dt)
		assert.Equal(t, want, a.DType)
		got, err := a.Int32()
		require.NoError(t, err)
		assert.Equal(t, codes, got)
		a.Close()
	}
	// uint16 refuses values that do not fit and leaves no file.
	q := filepath.Join(dir, "bad.npy")
	err = WriteInts(q, []int{2}, []int32{5, 65536}, "uint16")
	assert.ErrorContains(t, err, "value 65536 at index 1 does not fit uint16")
	assert.NoFileExists(t, q)
	err = WriteInts(q, []int{2}, []int32{-1, 0}, "uint16")
	assert.ErrorContains(t, err, "value -1 at index 0")
	// Shape mismatch.
	err = WriteFloat32(q, []int{2, 2}, vals)
	assert.ErrorContains(t, err, "overflows")
	err = WriteFloat32(q, []int{2, 4}, vals)
	assert.ErrorContains(t, err, "wrote 24 of 32 data bytes")
	assert.NoFileExists(t, q)
	err = WriteInts(q, []int{2}, []int32{1, 2}, "float32")
	assert.ErrorContains(t, err, "not an integer type")
	err = WriteInts(q, []int{2}, []int32{1, 2}, "int128")
	assert.ErrorContains(t, err, "int128")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		assert.False(t, strings.Contains(e.Name(), ".tmp-"), "leftover temp file %s", e.Name())
	}
}

func TestFailedWriteKeepsOldFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keep.npy")
	require.NoError(t, WriteInts(p, []int{2}, []int32{1, 2}, "int32"))
	before, _ := os.ReadFile(p)
	err := WriteInts(p, []int{2}, []int32{1, 1 << 20}, "uint16")
	require.Error(t, err)
	after, _ := os.ReadFile(p)
	assert.Equal(t, before, after)
}

func TestStreamingWriter(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.npy")
	w, err := Create(p, "uint16", []int{-1, 3})
	require.NoError(t, err)
	var all []int32
	for r := 0; r < 1000; r++ {
		row := []int32{int32(r), int32(r * 2), int32(r * 3)}
		all = append(all, row...)
		require.NoError(t, w.WriteInt32(row))
	}
	assert.NoFileExists(t, p)
	require.NoError(t, w.Commit())
	a, err := Open(p)
	require.NoError(t, err)
	assert.Equal(t, []int{1000, 3}, a.Shape)
	got, err := a.Int32()
	require.NoError(t, err)
	assert.Equal(t, all, got)
	a.Close()
	raw, _ := os.ReadFile(p)
	assert.Equal(t, 0, (len(raw)-6000)%64, "header stays 64-byte aligned")

	// A partial row fails at Commit and leaves nothing.
	q := filepath.Join(dir, "partial.npy")
	w, err = Create(q, "float32", []int{-1, 4})
	require.NoError(t, err)
	require.NoError(t, w.WriteFloat32([]float32{1, 2, 3, 4, 5}))
	assert.ErrorContains(t, w.Commit(), "not a whole number of 16-byte rows")
	assert.NoFileExists(t, q)

	// Fixed shape, written in pieces, float64 and float16 targets.
	for _, dt := range []string{"float32", "float64", "float16"} {
		q := filepath.Join(dir, dt+".npy")
		w, err := Create(q, dt, []int{2, 2})
		require.NoError(t, err)
		require.NoError(t, w.WriteFloat32([]float32{0.5, -1}))
		require.NoError(t, w.WriteFloat32([]float32{2, 65504}))
		require.ErrorContains(t, w.WriteInt32([]int32{1}), "cannot write integer values")
		require.NoError(t, w.Commit())
		a, err := Open(q)
		require.NoError(t, err)
		got, err := a.Float32()
		require.NoError(t, err)
		assert.Equal(t, []float32{0.5, -1, 2, 65504}, got)
		a.Close()
	}

	// Abort leaves nothing and is idempotent.
	w, err = Create(q, "int32", []int{1})
	require.NoError(t, err)
	require.NoError(t, w.Abort())
	require.NoError(t, w.Abort())
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		assert.False(t, strings.Contains(e.Name(), ".tmp-"), "leftover temp file %s", e.Name())
	}
	_, err = Create(q, "<f4", []int{2, -1})
	assert.ErrorContains(t, err, "only the first may be open")
}

func TestHalf(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := HalfToFloat32(uint16(h))
		if f != f {
			g := Float32ToHalf(f) // NaN stays NaN (payload may be quieted)
			assert.True(t, g&0x7c00 == 0x7c00 && g&0x3ff != 0, "half %#04x", h)
			continue
		}
		assert.Equal(t, uint16(h), Float32ToHalf(f), "half %#04x -> %v", h, f)
	}
	assert.Equal(t, uint16(0x3c00), Float32ToHalf(1+1.0/4096))           // rounds down to 1
	assert.Equal(t, uint16(0x3c01), Float32ToHalf(1+1.0/1024*0.75))      // rounds up
	assert.Equal(t, uint16(0x7c00), Float32ToHalf(70000))                // overflow -> Inf
	assert.Equal(t, uint16(0x0001), Float32ToHalf(float32(1.0/(1<<24)))) // smallest subnormal
	assert.Equal(t, uint16(0x0000), Float32ToHalf(float32(1.0/(1<<26))))
}

func TestParseDType(t *testing.T) {
	for in, want := range map[string]DType{"float32": Float32, "<f4": Float32, "<i1": Int8, "|u1": Uint8, ">u1": Uint8, "uint16": Uint16, "<u8": Uint64} {
		got, err := ParseDType(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "f4", "=f4", "|f4", "<f16", "<i3", ">f8", "|b1", "?"} {
		_, err := ParseDType(in)
		assert.Error(t, err, in)
	}
	assert.Equal(t, "uint16", Uint16.Name())
}
