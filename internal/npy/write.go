package npy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/unitok/unitok/internal/atomicfile"
)

// headerAlign: NumPy pads the preamble+header to a multiple of 64 bytes so
// that the data is aligned for any dtype.
const headerAlign = 64

// EncodeHeader returns the preamble and header for a C-order array of the
// given dtype and shape, padded with spaces to a multiple of 64 bytes
// (version 1.0 unless the header needs 2.0).
func EncodeHeader(dt DType, shape []int) ([]byte, error) {
	if dt.Size() == 0 {
		return nil, fmt.Errorf("unsupported dtype %q", dt)
	}
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension in shape %v", shape)
		}
	}
	return encodeHeader(dt, shape, 0), nil
}

// encodeHeader pads the header to at least minLen bytes in all (0: none).
func encodeHeader(dt DType, shape []int, minLen int) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "{'descr': '%s', 'fortran_order': False, 'shape': (", dt)
	for i, d := range shape {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprint(&sb, d)
	}
	if len(shape) == 1 {
		sb.WriteString(",")
	}
	sb.WriteString("), }")
	dict := sb.String()
	major, pre := 1, 10
	if len(dict)+1+pre > math.MaxUint16 {
		major, pre = 2, 12
	}
	total := pre + len(dict) + 1
	total = (total + headerAlign - 1) / headerAlign * headerAlign
	for total < minLen {
		total += headerAlign
	}
	b := make([]byte, total)
	copy(b, Magic)
	b[6], b[7] = byte(major), 0
	hlen := total - pre
	if major == 1 {
		binary.LittleEndian.PutUint16(b[8:], uint16(hlen))
	} else {
		binary.LittleEndian.PutUint32(b[8:], uint32(hlen))
	}
	copy(b[pre:], dict)
	for i := pre + len(dict); i < total-1; i++ {
		b[i] = ' '
	}
	b[total-1] = '\n'
	return b
}

// WriteFloat32 atomically writes a '<f4' array.
func WriteFloat32(path string, shape []int, data []float32) error {
	w, err := Create(path, "float32", shape)
	if err != nil {
		return err
	}
	if err := w.WriteFloat32(data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// WriteInts atomically writes integer data as dtype "uint16", "int32" or
// "int64" (or any other integer dtype ParseDType accepts). A value that does
// not fit the dtype is an error naming its index, and nothing is written.
func WriteInts(path string, shape []int, data []int32, dtype string) error {
	w, err := Create(path, dtype, shape)
	if err != nil {
		return err
	}
	if !w.dt.IsInt() {
		w.Abort()
		return fmt.Errorf("dtype %q is not an integer type", dtype)
	}
	if err := w.WriteInt32(data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// Writer streams an array to a .npy file: the header first, then the data
// in any number of writes, published atomically by Commit. If shape[0] is
// negative the row count is left open and filled in at Commit from the
// number of whole rows written (for outputs whose length is not known up
// front).
type Writer struct {
	f        *atomicfile.File
	dt       DType
	shape    []int
	hdrLen   int
	rowBytes int64
	want     int64 // data bytes the shape implies; -1 if rows are open
	written  int64
	err      error
	scratch  []byte
}

// Create starts an atomic write of a .npy file. dtype is a NumPy name
// ("float32", "uint16", ...) or descr ("<f4").
func Create(path, dtype string, shape []int) (*Writer, error) {
	dt, err := ParseDType(dtype)
	if err != nil {
		return nil, err
	}
	w := &Writer{dt: dt, shape: append([]int(nil), shape...)}
	w.rowBytes = int64(dt.Size())
	for i, d := range shape {
		if d < 0 && i > 0 {
			return nil, fmt.Errorf("negative dimension in shape %v (only the first may be open)", shape)
		}
		if i > 0 {
			if d != 0 && w.rowBytes > math.MaxInt64/int64(d) {
				return nil, fmt.Errorf("shape %v is too large", shape)
			}
			w.rowBytes *= int64(d)
		}
	}
	var hdr []byte
	if len(shape) > 0 && shape[0] < 0 {
		if w.rowBytes == 0 {
			return nil, fmt.Errorf("shape %v: an open row count needs non-empty rows", shape)
		}
		w.want = -1
		// Reserve room for the widest row count.
		tmp := append([]int{math.MaxInt64}, shape[1:]...)
		hdr = encodeHeader(dt, tmp, 0)
	} else {
		w.want = w.rowBytes
		if len(shape) > 0 {
			if shape[0] != 0 && w.rowBytes > math.MaxInt64/int64(shape[0]) {
				return nil, fmt.Errorf("shape %v is too large", shape)
			}
			w.want = w.rowBytes * int64(shape[0])
		}
		hdr = encodeHeader(dt, shape, 0)
	}
	f, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return nil, err
	}
	w.f, w.hdrLen = f, len(hdr)
	if _, err := f.Write(hdr); err != nil {
		f.Abort()
		return nil, err
	}
	return w, nil
}

// DType returns the element type being written.
func (w *Writer) DType() DType { return w.dt }

// Write appends raw little-endian element bytes. Writing more than the
// shape holds is an error.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.want >= 0 && w.written+int64(len(p)) > w.want {
		w.err = fmt.Errorf("write of %d bytes overflows the %d data bytes of shape %v (already wrote %d)", len(p), w.want, w.shape, w.written)
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.written += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

func (w *Writer) buf(n int) []byte {
	if cap(w.scratch) < n {
		w.scratch = make([]byte, n)
	}
	return w.scratch[:n]
}

// chunk bounds the scratch buffer used for conversions.
const chunk = 1 << 16

// WriteFloat32 appends values to a float32, float64 or float16 array
// (float16 rounds to nearest even).
func (w *Writer) WriteFloat32(v []float32) error {
	if !w.dt.IsFloat() {
		return fmt.Errorf("cannot write float values to a %s array", w.dt.Name())
	}
	sz := w.dt.Size()
	for len(v) > 0 {
		n := min(len(v), chunk)
		b := w.buf(n * sz)
		for i, x := range v[:n] {
			switch w.dt {
			case Float32:
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
			case Float64:
				binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(float64(x)))
			case Float16:
				binary.LittleEndian.PutUint16(b[2*i:], Float32ToHalf(x))
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		v = v[n:]
	}
	return nil
}

// WriteInt32 appends values to an integer array; a value that does not fit
// the dtype is an error naming its element index in the whole array.
func (w *Writer) WriteInt32(v []int32) error {
	if !w.dt.IsInt() {
		return fmt.Errorf("cannot write integer values to a %s array", w.dt.Name())
	}
	sz := w.dt.Size()
	lo, hi := intRange(w.dt)
	base := w.written / int64(sz)
	for off := 0; off < len(v); off += chunk {
		vs := v[off:min(len(v), off+chunk)]
		b := w.buf(len(vs) * sz)
		for i, x := range vs {
			if int64(x) < lo || int64(x) > hi {
				err := fmt.Errorf("value %d at index %d does not fit %s", x, base+int64(off+i), w.dt.Name())
				if w.err == nil {
					w.err = err
				}
				return err
			}
			switch sz {
			case 1:
				b[i] = byte(x)
			case 2:
				binary.LittleEndian.PutUint16(b[2*i:], uint16(x))
			case 4:
				binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
			case 8:
				binary.LittleEndian.PutUint64(b[8*i:], uint64(int64(x)))
			}
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

func intRange(d DType) (lo, hi int64) {
	switch d {
	case Int8:
		return math.MinInt8, math.MaxInt8
	case Uint8:
		return 0, math.MaxUint8
	case Int16:
		return math.MinInt16, math.MaxInt16
	case Uint16:
		return 0, math.MaxUint16
	case Uint32, Uint64:
		return 0, math.MaxInt64
	}
	return math.MinInt64, math.MaxInt64
}

// Commit checks that the data matches the shape (or, with an open row count,
// is a whole number of rows, then fills in the count) and publishes the
// file. On error nothing is published.
func (w *Writer) Commit() error {
	if w.err != nil {
		w.f.Abort()
		return w.err
	}
	if w.want >= 0 {
		if w.written != w.want {
			w.f.Abort()
			return fmt.Errorf("wrote %d of %d data bytes for shape %v", w.written, w.want, w.shape)
		}
		return w.f.Commit()
	}
	if w.written%w.rowBytes != 0 {
		w.f.Abort()
		return fmt.Errorf("wrote %d data bytes, not a whole number of %d-byte rows", w.written, w.rowBytes)
	}
	shape := append([]int{int(w.written / w.rowBytes)}, w.shape[1:]...)
	hdr := encodeHeader(w.dt, shape, w.hdrLen)
	if len(hdr) != w.hdrLen {
		w.f.Abort()
		return errors.New("npy: internal error: header grew")
	}
	if _, err := w.f.WriteAt(hdr, 0); err != nil {
		w.f.Abort()
		return err
	}
	return w.f.Commit()
}

// Abort discards the pending file; idempotent, and a no-op after Commit.
func (w *Writer) Abort() error {
	if w == nil {
		return nil
	}
	return w.f.Abort()
}

// Float32ToHalf converts to IEEE 754 binary16, rounding to nearest even.
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	switch {
	case exp == 0xff:
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127 > 15:
		return sign | 0x7c00
	case exp-127 >= -14:
		e := uint32(exp-127+15) << 10
		m := man >> 13
		r := man & 0x1fff
		h := uint32(sign) | e | m
		if r > 0x1000 || (r == 0x1000 && m&1 == 1) {
			h++ // may carry into the exponent, which is correct
		}
		return uint16(h)
	case exp-127 >= -25:
		// Subnormal half: value = m * 2^-24.
		full := man | 0x800000
		shift := uint(-(exp - 127) - 14 + 13)
		m := full >> shift
		r := full & (1<<shift - 1)
		halfway := uint32(1) << (shift - 1)
		if r > halfway || (r == halfway && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
	return sign
}
