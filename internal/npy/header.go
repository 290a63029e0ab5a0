package npy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Magic is the 6-byte prefix of every .npy file.
const Magic = "\x93NUMPY"

// maxHeaderLen bounds the header dict; NumPy itself refuses headers over
// 10000 bytes unless told otherwise.
const maxHeaderLen = 1 << 20

// Header is the parsed header of a .npy file.
type Header struct {
	Major, Minor int   // format version: 1.0, 2.0 or 3.0
	DType        DType // element type (descr)
	Shape        []int // row-major (C order)
	DataOffset   int   // bytes from the start of the file to the first element
}

// Elems returns the number of elements, the product of Shape (1 for 0-d).
func (h *Header) Elems() int {
	n := 1
	for _, s := range h.Shape {
		n *= s
	}
	return n
}

// DataBytes returns Elems()*itemsize.
func (h *Header) DataBytes() int { return h.Elems() * h.DType.Size() }

// ParseHeader parses the magic, version and header dict at the start of b,
// which must hold at least the whole header (the data may follow or not).
// It is strict: exactly the keys descr, fortran_order and shape;
// fortran_order must be False; the dtype must be one this package reads;
// each dimension must be a non-negative integer and the total byte size
// must fit in an int.
func ParseHeader(b []byte) (*Header, error) {
	if len(b) < 8 {
		return nil, errors.New("not a .npy file: shorter than the 8-byte preamble")
	}
	if string(b[:6]) != Magic {
		return nil, errors.New("not a .npy file: missing the \\x93NUMPY magic")
	}
	h := &Header{Major: int(b[6]), Minor: int(b[7])}
	var hlen, pre int
	switch {
	case h.Major == 1 && h.Minor == 0:
		if len(b) < 10 {
			return nil, errors.New("truncated .npy preamble")
		}
		hlen, pre = int(binary.LittleEndian.Uint16(b[8:10])), 10
	case (h.Major == 2 || h.Major == 3) && h.Minor == 0:
		if len(b) < 12 {
			return nil, errors.New("truncated .npy preamble")
		}
		n := binary.LittleEndian.Uint32(b[8:12])
		if n > maxHeaderLen {
			return nil, fmt.Errorf("header length %d exceeds %d bytes", n, maxHeaderLen)
		}
		hlen, pre = int(n), 12
	default:
		return nil, fmt.Errorf("unsupported .npy format version %d.%d (want 1.0, 2.0 or 3.0)", h.Major, h.Minor)
	}
	if len(b) < pre+hlen {
		return nil, fmt.Errorf("truncated header: have %d bytes, want %d", len(b)-pre, hlen)
	}
	text := b[pre : pre+hlen]
	if h.Major < 3 {
		for _, c := range text {
			if c >= 0x80 {
				return nil, fmt.Errorf("header of a version %d.0 file is not ASCII", h.Major)
			}
		}
	} else if !utf8.Valid(text) {
		return nil, errors.New("header is not valid UTF-8")
	}
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return nil, errors.New("header does not end in a newline")
	}
	if err := parseDict(string(text[:len(text)-1]), h); err != nil {
		return nil, fmt.Errorf("bad header: %w", err)
	}
	h.DataOffset = pre + hlen
	return h, nil
}

// parseDict reads the Python dict literal NumPy writes, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
func parseDict(s string, h *Header) error {
	p := &parser{s: s}
	p.space()
	if !p.eat('{') {
		return errors.New("not a dict")
	}
	seen := map[string]bool{}
	var descr string
	for {
		p.space()
		if p.eat('}') {
			break
		}
		key, err := p.str()
		if err != nil {
			return fmt.Errorf("key: %w", err)
		}
		if seen[key] {
			return fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		p.space()
		if !p.eat(':') {
			return fmt.Errorf("missing ':' after key %q", key)
		}
		p.space()
		switch key {
		case "descr":
			if p.peek() == '[' {
				return errors.New("structured dtypes are not supported")
			}
			if descr, err = p.str(); err != nil {
				return fmt.Errorf("descr: %w", err)
			}
		case "fortran_order":
			switch {
			case p.word("False"):
			case p.word("True"):
				return errors.New("fortran_order is True: Fortran-ordered arrays are not supported (save with np.ascontiguousarray)")
			default:
				return errors.New("fortran_order is not True or False")
			}
		case "shape":
			if h.Shape, err = p.tuple(); err != nil {
				return fmt.Errorf("shape: %w", err)
			}
		default:
			return fmt.Errorf("unexpected key %q", key)
		}
		p.space()
		if p.eat(',') {
			continue
		}
		p.space()
		if !p.eat('}') {
			return errors.New("expected ',' or '}'")
		}
		break
	}
	p.space()
	if p.i != len(p.s) {
		return errors.New("unexpected text after the dict")
	}
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return fmt.Errorf("missing key %q", k)
		}
	}
	dt, err := ParseDType(descr)
	if err != nil {
		return err
	}
	h.DType = dt
	// The byte size must be representable (and is later checked against
	// the file size).
	n := uint64(dt.Size())
	for _, d := range h.Shape {
		if d != 0 && n > math.MaxInt64/uint64(d) {
			return fmt.Errorf("shape %v is too large", h.Shape)
		}
		n *= uint64(d)
	}
	if n > math.MaxInt {
		return fmt.Errorf("shape %v is too large", h.Shape)
	}
	return nil
}

type parser struct {
	s string
	i int
}

func (p *parser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *parser) eat(c byte) bool {
	if p.peek() == c {
		p.i++
		return true
	}
	return false
}

func (p *parser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *parser) word(w string) bool {
	if strings.HasPrefix(p.s[p.i:], w) {
		rest := p.s[p.i+len(w):]
		if rest == "" || !isIdent(rest[0]) {
			p.i += len(w)
			return true
		}
	}
	return false
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// str reads a quoted string without escapes ('...' or "...").
func (p *parser) str() (string, error) {
	q := p.peek()
	if q != '\'' && q != '"' {
		return "", errors.New("expected a quoted string")
	}
	end := strings.IndexByte(p.s[p.i+1:], q)
	if end < 0 {
		return "", errors.New("unterminated string")
	}
	v := p.s[p.i+1 : p.i+1+end]
	if strings.IndexByte(v, '\\') >= 0 {
		return "", errors.New("escapes in strings are not supported")
	}
	p.i += end + 2
	return v, nil
}

// tuple reads (), (n,) or (a, b, ...), with an optional trailing comma.
func (p *parser) tuple() ([]int, error) {
	if !p.eat('(') {
		return nil, errors.New("expected a tuple")
	}
	shape := []int{}
	for {
		p.space()
		if p.eat(')') {
			if len(shape) == 1 && !p.lastComma() {
				return nil, errors.New("(n) is not a tuple; want (n,)")
			}
			return shape, nil
		}
		start := p.i
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		if p.i == start {
			return nil, fmt.Errorf("expected a non-negative integer at %q", clip(p.s[start:]))
		}
		digits := p.s[start:p.i]
		if p.i < len(p.s) && p.s[p.i] == 'L' { // Python 2 long suffix
			p.i++
		}
		v, err := strconv.ParseInt(digits, 10, 64)
		if err != nil || v > math.MaxInt32*int64(1<<16) {
			return nil, fmt.Errorf("dimension %s is too large", digits)
		}
		shape = append(shape, int(v))
		p.space()
		if p.eat(',') {
			continue
		}
		p.space()
		if p.peek() != ')' {
			return nil, errors.New("expected ',' or ')'")
		}
	}
}

// lastComma reports whether the character before the closing ')' (ignoring
// spaces) was a comma.
func (p *parser) lastComma() bool {
	j := p.i - 2
	for j >= 0 && (p.s[j] == ' ' || p.s[j] == '\t' || p.s[j] == '\n') {
		j--
	}
	return j >= 0 && p.s[j] == ','
}

func clip(s string) string {
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}
