// Package npy reads and writes NumPy .npy files (format versions 1.0, 2.0
// and 3.0, C order, little-endian). Large files are memory-mapped, so a
// float32 array is handed out without copying; integer codes of any width
// are converted to int32 with range checks. Writers publish atomically: a
// failed or interrupted write never leaves a partial file under the final
// name.
package npy

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"unsafe"

	"github.com/unitok/unitok/internal/mmapfile"
)

// mmapThreshold: files smaller than this are read whole rather than mapped.
const mmapThreshold = 64 << 10

// Array is an opened .npy array. Its data may be memory-mapped; slices
// returned without copying (see Float32) are valid until Close.
type Array struct {
	Shape []int // row-major (C order); empty for a 0-d array
	DType DType // element type as stored

	name   string // file name for messages
	data   []byte // exactly Elems()*itemsize bytes
	mapped []byte // the whole mapping, nil if the file was read
	closed bool
}

// Open opens and validates a .npy file: the header is parsed strictly and
// the file must hold exactly the bytes the shape implies.
func Open(path string) (*Array, error) {
	b, mapped, err := mmapfile.Load(path, mmapThreshold)
	if err != nil {
		return nil, err
	}
	a, err := FromBytes(b)
	if err != nil {
		if mapped {
			mmapfile.Unmap(b)
		}
		return nil, err
	}
	a.name = path
	if mapped {
		a.mapped = b
	}
	return a, nil
}

// FromBytes parses a whole .npy file held in memory. The Array refers to b
// without copying.
func FromBytes(b []byte) (*Array, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	have, want := len(b)-h.DataOffset, h.DataBytes()
	if have < want {
		return nil, fmt.Errorf("truncated: have %d bytes of data, want %d for shape %v %s", have, want, h.Shape, h.DType)
	}
	if have > want {
		return nil, fmt.Errorf("%d unexpected bytes after the data (shape %v %s wants %d)", have-want, h.Shape, h.DType, want)
	}
	return &Array{Shape: h.Shape, DType: h.DType, data: b[h.DataOffset:len(b):len(b)]}, nil
}

// Len returns the number of elements.
func (a *Array) Len() int {
	n := 1
	for _, s := range a.Shape {
		n *= s
	}
	return n
}

// Bytes returns the raw little-endian data, valid until Close.
func (a *Array) Bytes() []byte { return a.data }

// Close unmaps the file. It is idempotent and nil-safe.
func (a *Array) Close() error {
	if a == nil || a.closed {
		return nil
	}
	a.closed = true
	a.data = nil
	if a.mapped != nil {
		m := a.mapped
		a.mapped = nil
		return mmapfile.Unmap(m)
	}
	return nil
}

var littleEndianHost = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// Float32 returns the data as float32. A '<f4' array on a little-endian host
// whose data is 4-byte aligned is returned without copying: the slice aliases
// the file mapping, must not be written (it is read-only memory) and is valid
// until Close. '<f8' and '<f2' are converted into a new slice ('<f8' values
// beyond float32's range are an error naming the index). Integer dtypes are
// refused.
func (a *Array) Float32() ([]float32, error) {
	if a.closed {
		return nil, os.ErrClosed
	}
	n := a.Len()
	switch a.DType {
	case Float32:
		if n == 0 {
			return []float32{}, nil
		}
		if littleEndianHost && uintptr(unsafe.Pointer(&a.data[0]))%4 == 0 {
			return unsafe.Slice((*float32)(unsafe.Pointer(&a.data[0])), n), nil
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(a.data[4*i:]))
		}
		return out, nil
	case Float64:
		out := make([]float32, n)
		for i := range out {
			v := math.Float64frombits(binary.LittleEndian.Uint64(a.data[8*i:]))
			if !math.IsInf(v, 0) && !math.IsNaN(v) && math.Abs(v) > math.MaxFloat32 {
				return nil, fmt.Errorf("value %g at index %s overflows float32", v, a.index(i))
			}
			out[i] = float32(v)
		}
		return out, nil
	case Float16:
		out := make([]float32, n)
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(a.data[2*i:]))
		}
		return out, nil
	}
	return nil, fmt.Errorf("dtype %s (%s) is not a float type; want float32, float64 or float16", a.DType, a.DType.Name())
}

// Int32 converts integer data to a new []int32. A value outside the int32
// range is an error naming its index. Float dtypes are refused.
func (a *Array) Int32() ([]int32, error) {
	if a.closed {
		return nil, os.ErrClosed
	}
	n, d := a.Len(), a.data
	out := make([]int32, n)
	le := binary.LittleEndian
	switch a.DType {
	case Int8:
		for i := range out {
			out[i] = int32(int8(d[i]))
		}
	case Uint8:
		for i := range out {
			out[i] = int32(d[i])
		}
	case Int16:
		for i := range out {
			out[i] = int32(int16(le.Uint16(d[2*i:])))
		}
	case Uint16:
		for i := range out {
			out[i] = int32(le.Uint16(d[2*i:]))
		}
	case Int32:
		for i := range out {
			out[i] = int32(le.Uint32(d[4*i:]))
		}
	case Uint32:
		for i := range out {
			v := le.Uint32(d[4*i:])
			if v > math.MaxInt32 {
				return nil, a.rangeErr(fmt.Sprint(v), i)
			}
			out[i] = int32(v)
		}
	case Int64:
		for i := range out {
			v := int64(le.Uint64(d[8*i:]))
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, a.rangeErr(fmt.Sprint(v), i)
			}
			out[i] = int32(v)
		}
	case Uint64:
		for i := range out {
			v := le.Uint64(d[8*i:])
			if v > math.MaxInt32 {
				return nil, a.rangeErr(fmt.Sprint(v), i)
			}
			out[i] = int32(v)
		}
	default:
		return nil, fmt.Errorf("dtype %s (%s) is not an integer type", a.DType, a.DType.Name())
	}
	return out, nil
}

func (a *Array) rangeErr(v string, i int) error {
	return fmt.Errorf("value %s at index %s (%s) is outside the int32 range", v, a.index(i), a.DType.Name())
}

// index renders flat index i as a multi-index, e.g. "(1, 0, 3)".
func (a *Array) index(i int) string {
	if len(a.Shape) == 0 {
		return "()"
	}
	idx := make([]int, len(a.Shape))
	for k := len(a.Shape) - 1; k >= 0; k-- {
		if a.Shape[k] > 0 {
			idx[k] = i % a.Shape[k]
			i /= a.Shape[k]
		}
	}
	s := "("
	for k, v := range idx {
		if k > 0 {
			s += ", "
		}
		s += fmt.Sprint(v)
	}
	return s + ")"
}

// HalfToFloat32 converts an IEEE 754 binary16 value to float32 exactly.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf, NaN
		return math.Float32frombits(sign | 0xff<<23 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: value = man * 2^-24.
		f := float32(man) / (1 << 24)
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}
