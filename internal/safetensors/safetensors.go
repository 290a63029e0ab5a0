// Package safetensors reads and writes safetensors files
// (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length, a JSON header mapping tensor names to dtype, shape and
// byte offsets (plus optional string "__metadata__"), then the data.
//
// Open memory-maps the file and validates the header strictly, as the
// reference Rust implementation does: known dtypes, offsets inside the data
// buffer, sizes that match dtype and shape, and tensors that tile the buffer
// without overlaps or holes. File implements ckpt.Reader.
package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"unsafe"

	"github.com/unitok/unitok/internal/atomicfile"
	"github.com/unitok/unitok/internal/ckpt"
	"github.com/unitok/unitok/internal/npy"

	"github.com/unitok/unitok/internal/mmapfile"
)

// MaxHeaderLen bounds the JSON header (the Rust implementation uses 100 MB).
const MaxHeaderLen = 100_000_000

// mmapThreshold: smaller files are read whole rather than mapped.
const mmapThreshold = 64 << 10

// dtypeSizes lists every dtype of the format with its size in bytes.
var dtypeSizes = map[ckpt.DType]int{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// DTypeSize returns the element size of a safetensors dtype, 0 if unknown.
func DTypeSize(d ckpt.DType) int { return dtypeSizes[d] }

type entry struct {
	info       ckpt.Info
	begin, end int // byte range within the data buffer
}

// File is an opened safetensors file. Its methods are safe for concurrent
// use until Close.
type File struct {
	name    string
	entries []entry // sorted by offset, then name
	byName  map[string]int
	meta    map[string]string
	data    []byte // the data buffer (after the header)
	mapped  []byte // the whole mapping, nil when read into memory
	closed  bool
}

var _ ckpt.Viewer = (*File)(nil)

// hostLittle: views reinterpret little-endian bytes as native float32s.
var hostLittle = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Open memory-maps and validates a safetensors file.
func Open(path string) (*File, error) {
	b, mapped, err := mmapfile.Load(path, mmapThreshold)
	if err != nil {
		return nil, err
	}
	sf, err := Parse(b)
	if err != nil {
		if mapped {
			mmapfile.Unmap(b)
		}
		return nil, err
	}
	sf.name = path
	if mapped {
		sf.mapped = b
	}
	return sf, nil
}

// Parse validates a whole safetensors file held in memory. The File refers
// to b without copying.
func Parse(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("not a safetensors file: %d bytes, shorter than the 8-byte header length", len(b))
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n > MaxHeaderLen {
		return nil, fmt.Errorf("not a safetensors file: header length %d exceeds %d", n, MaxHeaderLen)
	}
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("truncated: header length %d but only %d bytes follow", n, len(b)-8)
	}
	if n < 2 {
		return nil, fmt.Errorf("not a safetensors file: header length %d", n)
	}
	hdr := b[8 : 8+n]
	if hdr[0] != '{' {
		return nil, errors.New("not a safetensors file: header is not a JSON object")
	}
	f := &File{byName: map[string]int{}, meta: map[string]string{}, data: b[8+n : len(b) : len(b)]}
	if err := f.parseHeader(hdr); err != nil {
		return nil, fmt.Errorf("bad header: %w", err)
	}
	return f, nil
}

type rawEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

func (f *File) parseHeader(hdr []byte) error {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("object key is not a string")
		}
		if seen[key] {
			return fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("%q: %w", key, err)
		}
		if key == "__metadata__" {
			if err := strictUnmarshal(raw, &f.meta); err != nil {
				return fmt.Errorf("__metadata__ must map strings to strings: %w", err)
			}
			if f.meta == nil {
				f.meta = map[string]string{}
			}
			continue
		}
		var re rawEntry
		if err := strictUnmarshal(raw, &re); err != nil {
			return fmt.Errorf("tensor %q: %w", key, err)
		}
		e, err := f.checkEntry(key, re)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", key, err)
		}
		f.entries = append(f.entries, e)
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return err
	}
	// Only whitespace padding may follow the object.
	if len(bytes.TrimLeft(hdr[dec.InputOffset():], " \t\r\n")) != 0 {
		return errors.New("unexpected text after the JSON object")
	}
	sort.Slice(f.entries, func(i, j int) bool {
		a, b := f.entries[i], f.entries[j]
		if a.begin != b.begin {
			return a.begin < b.begin
		}
		if a.end != b.end {
			return a.end < b.end
		}
		return a.info.Name < b.info.Name
	})
	// The tensors must tile the data buffer: no overlap, no hole.
	pos := 0
	for i, e := range f.entries {
		switch {
		case e.begin < pos:
			return fmt.Errorf("tensor %q [%d, %d) overlaps tensor %q", e.info.Name, e.begin, e.end, f.entries[i-1].info.Name)
		case e.begin > pos:
			return fmt.Errorf("hole of %d bytes in the data before tensor %q", e.begin-pos, e.info.Name)
		}
		pos = e.end
		f.byName[e.info.Name] = i
	}
	if pos != len(f.data) {
		if pos > len(f.data) {
			return fmt.Errorf("truncated: have %d bytes of data, want %d", len(f.data), pos)
		}
		return fmt.Errorf("%d bytes of data after the last tensor", len(f.data)-pos)
	}
	return nil
}

func (f *File) checkEntry(name string, re rawEntry) (entry, error) {
	if name == "" {
		return entry{}, errors.New("empty tensor name")
	}
	dt := ckpt.DType(re.DType)
	size := DTypeSize(dt)
	if size == 0 {
		return entry{}, fmt.Errorf("unknown dtype %q", re.DType)
	}
	if re.Shape == nil {
		return entry{}, errors.New("missing shape")
	}
	if len(re.DataOffsets) != 2 {
		return entry{}, fmt.Errorf("data_offsets has %d values, want 2", len(re.DataOffsets))
	}
	nbytes := uint64(size)
	for _, d := range re.Shape {
		if d < 0 {
			return entry{}, fmt.Errorf("negative dimension in shape %v", re.Shape)
		}
		if d != 0 && nbytes > math.MaxInt64/uint64(d) {
			return entry{}, fmt.Errorf("shape %v is too large", re.Shape)
		}
		nbytes *= uint64(d)
	}
	b, e := re.DataOffsets[0], re.DataOffsets[1]
	if b > e {
		return entry{}, fmt.Errorf("data_offsets [%d, %d] are reversed", b, e)
	}
	if e > uint64(len(f.data)) {
		return entry{}, fmt.Errorf("truncated: data_offsets [%d, %d] end past the %d bytes of data", b, e, len(f.data))
	}
	if e-b != nbytes {
		return entry{}, fmt.Errorf("data_offsets [%d, %d] cover %d bytes, but %s %v needs %d", b, e, e-b, dt, re.Shape, nbytes)
	}
	shape := append([]int{}, re.Shape...)
	return entry{info: ckpt.Info{Name: name, DType: dt, Shape: shape}, begin: int(b), end: int(e)}, nil
}

func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Tensors lists every tensor in file (offset) order.
func (f *File) Tensors() []ckpt.Info {
	out := make([]ckpt.Info, len(f.entries))
	for i, e := range f.entries {
		out[i] = e.info
		out[i].Shape = append([]int{}, e.info.Shape...)
	}
	return out
}

// Info returns the named tensor's description.
func (f *File) Info(name string) (ckpt.Info, bool) {
	i, ok := f.byName[name]
	if !ok {
		return ckpt.Info{}, false
	}
	return f.entries[i].info, true
}

// Raw returns the named tensor's little-endian bytes without copying; valid
// until Close and must not be modified.
func (f *File) Raw(name string) ([]byte, error) {
	if f.closed {
		return nil, fmt.Errorf("tensor %s: %w", name, os.ErrClosed)
	}
	i, ok := f.byName[name]
	if !ok {
		return nil, fmt.Errorf("no tensor named %s", name)
	}
	e := f.entries[i]
	return f.data[e.begin:e.end:e.end], nil
}

// ViewFloat32 returns an F32 tensor whose data is 4-byte aligned as a view
// of the file's bytes (aliased true; read-only, valid until Close, which
// unmaps a mapped file); anything else as ReadFloat32 does, converted once.
func (f *File) ViewFloat32(name string) (v []float32, aliased bool, err error) {
	raw, err := f.Raw(name)
	if err != nil {
		return nil, false, err
	}
	info := f.entries[f.byName[name]].info
	if info.DType == "F32" && hostLittle && len(raw) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(raw)))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(raw))), len(raw)/4), true, nil
	}
	v, err = f.ReadFloat32(name)
	return v, false, err
}

// Release drops the resident pages of the named tensor's bytes when the
// file is mapped (see ckpt.Viewer); views stay valid until Close.
func (f *File) Release(name string) {
	if f.closed || f.mapped == nil {
		return
	}
	if i, ok := f.byName[name]; ok {
		e := f.entries[i]
		base := len(f.mapped) - len(f.data) // the data buffer ends the file
		mmapfile.Release(f.mapped, base+e.begin, e.end-e.begin)
	}
}

// ReadFloat32 returns the named tensor converted to float32 from F32, F16 or
// BF16, in a new slice. Other dtypes are an error naming tensor and dtype.
func (f *File) ReadFloat32(name string) ([]float32, error) {
	raw, err := f.Raw(name)
	if err != nil {
		return nil, err
	}
	info := f.entries[f.byName[name]].info
	n := info.Elems()
	out := make([]float32, n)
	le := binary.LittleEndian
	switch info.DType {
	case "F32":
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
	case "F16":
		for i := range out {
			out[i] = npy.HalfToFloat32(le.Uint16(raw[2*i:]))
		}
	case "BF16":
		for i := range out {
			out[i] = math.Float32frombits(uint32(le.Uint16(raw[2*i:])) << 16)
		}
	default:
		return nil, fmt.Errorf("tensor %s has dtype %s; only F32, F16 and BF16 convert to float32", name, info.DType)
	}
	f.Release(name) // copied out: the mapped pages need not stay resident
	return out, nil
}

// Metadata returns the "__metadata__" strings (never nil). Callers must not
// modify the map.
func (f *File) Metadata() map[string]string { return f.meta }

// Close unmaps the file; idempotent and nil-safe.
func (f *File) Close() error {
	if f == nil || f.closed {
		return nil
	}
	f.closed = true
	f.data = nil
	if f.mapped != nil {
		m := f.mapped
		f.mapped = nil
		return mmapfile.Unmap(m)
	}
	return nil
}

// Tensor is one tensor to write: raw little-endian data of DType and Shape.
type Tensor struct {
	Name  string
	DType ckpt.DType
	Shape []int
	Data  []byte
}

// F32Tensor packs float32 values as an F32 tensor.
func F32Tensor(name string, shape []int, data []float32) Tensor {
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, DType: "F32", Shape: append([]int{}, shape...), Data: b}
}

// Encode returns a whole safetensors file: header (padded with spaces to a
// multiple of 8 bytes) and the tensors' data in the given order.
func Encode(tensors []Tensor, meta map[string]string) ([]byte, error) {
	hdr, size, err := header(tensors, meta, true)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(hdr)+int(size))
	out = append(out, hdr...)
	for _, t := range tensors {
		out = append(out, t.Data...)
	}
	return out, nil
}

// header returns the 8-byte length and the JSON header (padded with spaces
// to a multiple of 8 bytes) for tensors in the given order, and the size of
// the data that follows. With checkData, each Data must have the length
// its dtype and shape give; otherwise Data is ignored.
func header(tensors []Tensor, meta map[string]string, checkData bool) ([]byte, uint64, error) {
	var hb bytes.Buffer
	hb.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			hb.WriteByte(',')
		}
		first = false
	}
	if len(meta) > 0 {
		m, err := json.Marshal(meta)
		if err != nil {
			return nil, 0, err
		}
		sep()
		hb.WriteString(`"__metadata__":`)
		hb.Write(m)
	}
	seen := map[string]bool{}
	var off uint64
	for _, t := range tensors {
		if t.Name == "" || t.Name == "__metadata__" {
			return nil, 0, fmt.Errorf("invalid tensor name %q", t.Name)
		}
		if seen[t.Name] {
			return nil, 0, fmt.Errorf("duplicate tensor %s", t.Name)
		}
		seen[t.Name] = true
		n, err := byteSize(t)
		if err != nil {
			return nil, 0, err
		}
		if checkData && n != len(t.Data) {
			return nil, 0, fmt.Errorf("tensor %s: %s %v needs %d bytes, have %d", t.Name, t.DType, t.Shape, n, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		e, err := json.Marshal(rawEntry{DType: string(t.DType), Shape: shape, DataOffsets: []uint64{off, off + uint64(n)}})
		if err != nil {
			return nil, 0, err
		}
		name, _ := json.Marshal(t.Name)
		sep()
		hb.Write(name)
		hb.WriteByte(':')
		hb.Write(e)
		off += uint64(n)
	}
	hb.WriteByte('}')
	for hb.Len()%8 != 0 {
		hb.WriteByte(' ')
	}
	out := make([]byte, 8, 8+hb.Len())
	binary.LittleEndian.PutUint64(out, uint64(hb.Len()))
	return append(out, hb.Bytes()...), off, nil
}

// byteSize is the data size of t's dtype and shape.
func byteSize(t Tensor) (int, error) {
	size := DTypeSize(t.DType)
	if size == 0 {
		return 0, fmt.Errorf("tensor %s: unknown dtype %q", t.Name, t.DType)
	}
	n := size
	for _, d := range t.Shape {
		if d < 0 {
			return 0, fmt.Errorf("tensor %s: negative dimension in shape %v", t.Name, t.Shape)
		}
		n *= d
	}
	return n, nil
}

// WriteStream atomically writes a safetensors file whose tensors are
// described by tensors (Name, DType, Shape; Data is ignored) and whose
// bytes data(i) returns for tensors[i], called once each, in order, so that
// only one tensor need be in memory at a time. A data error, or data of the
// wrong length, publishes nothing.
func WriteStream(path string, tensors []Tensor, meta map[string]string, data func(i int) ([]byte, error)) error {
	hdr, _, err := header(tensors, meta, false)
	if err != nil {
		return err
	}
	return atomicfile.WriteFunc(path, 0o644, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		if _, err := bw.Write(hdr); err != nil {
			return err
		}
		for i, t := range tensors {
			b, err := data(i)
			if err != nil {
				return err
			}
			if n, _ := byteSize(t); n != len(b) {
				return fmt.Errorf("tensor %s: %s %v needs %d bytes, have %d", t.Name, t.DType, t.Shape, n, len(b))
			}
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
}

// Write atomically writes a safetensors file (see Encode).
func Write(path string, tensors []Tensor, meta map[string]string) error {
	b, err := Encode(tensors, meta)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o644)
}
