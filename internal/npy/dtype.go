package npy

import (
	"fmt"
	"strings"
)

// DType is a NumPy type descriptor as written in a .npy header, normalized
// to NumPy's own spelling: "<f4", "<f8", "<f2", "|i1", "|u1", "<i2", "<u2",
// "<i4", "<u4", "<i8", "<u8".
type DType string

// Supported dtypes.
const (
	Float32 DType = "<f4"
	Float64 DType = "<f8"
	Float16 DType = "<f2"
	Int8    DType = "|i1"
	Uint8   DType = "|u1"
	Int16   DType = "<i2"
	Uint16  DType = "<u2"
	Int32   DType = "<i4"
	Uint32  DType = "<u4"
	Int64   DType = "<i8"
	Uint64  DType = "<u8"
)

var dtypeSize = map[DType]int{
	Float32: 4, Float64: 8, Float16: 2,
	Int8: 1, Uint8: 1, Int16: 2, Uint16: 2, Int32: 4, Uint32: 4, Int64: 8, Uint64: 8,
}

var dtypeNames = map[string]DType{
	"float32": Float32, "float64": Float64, "float16": Float16,
	"int8": Int8, "uint8": Uint8, "int16": Int16, "uint16": Uint16,
	"int32": Int32, "uint32": Uint32, "int64": Int64, "uint64": Uint64,
}

// Size returns the item size in bytes (0 for an unknown dtype).
func (d DType) Size() int { return dtypeSize[d] }

// IsFloat reports whether d is a floating-point dtype.
func (d DType) IsFloat() bool { return len(d) == 3 && d[1] == 'f' }

// IsInt reports whether d is a (signed or unsigned) integer dtype.
func (d DType) IsInt() bool { return len(d) == 3 && (d[1] == 'i' || d[1] == 'u') }

// Name returns NumPy's name for d ("float32", "uint16", ...).
func (d DType) Name() string {
	for n, v := range dtypeNames {
		if v == d {
			return n
		}
	}
	return string(d)
}

// ParseDType accepts a header descr ("<f4", "|u1"; "<i1" is taken as "|i1")
// or a NumPy name ("float32", "uint16"). Big-endian, bool, complex, string
// and object dtypes are refused with a message that says why.
func ParseDType(s string) (DType, error) {
	if d, ok := dtypeNames[s]; ok {
		return d, nil
	}
	if len(s) < 2 {
		return "", fmt.Errorf("unknown dtype %q", s)
	}
	order, kind := s[0], s[1:]
	switch order {
	case '>':
		if kind == "i1" || kind == "u1" || kind == "b1" {
			order = '|'
			break
		}
		return "", fmt.Errorf("big-endian dtype %q is not supported (convert with arr.astype('<%s'))", s, kind)
	case '<', '|':
	case '=':
		return "", fmt.Errorf("native-order dtype %q is ambiguous; want an explicit '<' byte order", s)
	default:
		return "", fmt.Errorf("dtype %q has no byte-order character", s)
	}
	switch {
	case kind == "b1" || kind == "?":
		return "", fmt.Errorf("bool dtype %q is not supported (convert with arr.astype(np.uint8))", s)
	case strings.HasPrefix(kind, "c"):
		return "", fmt.Errorf("complex dtype %q is not supported", s)
	case strings.HasPrefix(kind, "O"):
		return "", fmt.Errorf("object dtype %q is not supported", s)
	case strings.HasPrefix(kind, "S"), strings.HasPrefix(kind, "U"), strings.HasPrefix(kind, "V"):
		return "", fmt.Errorf("string or void dtype %q is not supported", s)
	}
	if kind == "i1" || kind == "u1" {
		return DType("|" + kind), nil
	}
	if order == '|' {
		return "", fmt.Errorf("dtype %q needs a byte order", s)
	}
	d := DType("<" + kind)
	if d.Size() == 0 {
		return "", fmt.Errorf("unsupported dtype %q", s)
	}
	return d, nil
}
