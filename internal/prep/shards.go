package prep

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unsafe"

	"github.com/unitok/unitok/internal/npy"
	"github.com/unitok/unitok/internal/safetensors"
)

// source is one input shard and where its output goes.
type source struct {
	path   string // input path as found
	rel    string // input path relative to its root, slash-separated (manifest "shard")
	outRel string // output path relative to OutDir, slash-separated, extension .npy
	out    string // output path on disk
}

// findShards expands files, directories (walked recursively for .npy, and
// .safetensors when a tensor name is given) and globs into a sorted,
// de-duplicated list. Each shard keeps its path relative to the directory
// or glob root it came from, so outputs mirror the input tree.
func findShards(in []string, tensor, outDir string) ([]source, error) {
	want := func(name string) bool {
		switch strings.ToLower(filepath.Ext(name)) {
		case ".npy":
			return true
		case ".safetensors":
			return tensor != ""
		}
		return false
	}
	return findFiles(in, want, ".npy", outDir)
}

// findTarShards lists webdataset shards (.tar) as findShards lists arrays;
// outputs are .tar files at the mirrored paths.
func findTarShards(in []string, outDir string) ([]source, error) {
	want := func(name string) bool { return strings.EqualFold(filepath.Ext(name), ".tar") }
	return findFiles(in, want, ".tar", outDir)
}

// findFiles expands in into the files want accepts (hidden names never),
// each with its output path: the relative path with extension outExt.
func findFiles(in []string, wantExt func(string) bool, outExt, outDir string) ([]source, error) {
	absOut, _ := filepath.Abs(outDir)
	var out []source
	seenIn := map[string]bool{}
	add := func(root, path string) error {
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		if seenIn[abs] {
			return nil
		}
		seenIn[abs] = true
		rel, err := filepath.Rel(root, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			rel = filepath.Base(path)
		}
		rel = filepath.ToSlash(rel)
		outRel := strings.TrimSuffix(rel, filepath.Ext(rel)) + outExt
		out = append(out, source{path: path, rel: rel, outRel: outRel, out: filepath.Join(outDir, filepath.FromSlash(outRel))})
		return nil
	}
	want := func(name string) bool {
		if strings.HasPrefix(name, ".") { // hidden, and atomicfile's temporaries
			return false
		}
		return wantExt(name)
	}
	walk := func(root string) error {
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if abs, _ := filepath.Abs(p); abs == absOut && p != root {
					return filepath.SkipDir // never read our own outputs back
				}
				return nil
			}
			if d.Type().IsRegular() && want(d.Name()) {
				return add(root, p)
			}
			return nil
		})
	}
	for _, pat := range in {
		if pat == "" {
			continue
		}
		if st, err := os.Stat(pat); err == nil {
			if st.IsDir() {
				if err := walk(pat); err != nil {
					return nil, err
				}
			} else if err := add(filepath.Dir(pat), pat); err != nil {
				return nil, err
			}
			continue
		}
		if !hasMeta(pat) {
			return nil, fmt.Errorf("%s: no such file or directory", pat)
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", pat, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("%s: no file matches", pat)
		}
		root := globRoot(pat)
		sort.Strings(matches)
		for _, m := range matches {
			st, err := os.Stat(m)
			if err != nil {
				return nil, err
			}
			if st.IsDir() {
				if err := walk(m); err != nil {
					return nil, err
				}
				continue
			}
			if err := add(root, m); err != nil {
				return nil, err
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].outRel < out[j].outRel })
	for i := 1; i < len(out); i++ {
		if out[i].outRel == out[i-1].outRel {
			return nil, fmt.Errorf("%s and %s would both write %s", out[i-1].path, out[i].path, out[i].outRel)
		}
	}
	for _, s := range out {
		if a, _ := filepath.Abs(s.path); a == mustAbs(s.out) {
			return nil, fmt.Errorf("%s: output would overwrite the input (choose another --out)", s.path)
		}
	}
	return out, nil
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func hasMeta(p string) bool { return strings.ContainsAny(p, "*?[") }

// globRoot is the directory part of a glob before its first wildcard.
func globRoot(pat string) string {
	dir := filepath.Dir(pat)
	for hasMeta(dir) {
		dir = filepath.Dir(dir)
	}
	return dir
}

// elem is an input element type: the npy descr, or "bf16" from safetensors.
type elem string

const bf16 elem = "bf16"

func (e elem) size() int {
	if e == bf16 {
		return 2
	}
	return npy.DType(e).Size()
}

func (e elem) isFloat() bool { return e == bf16 || npy.DType(e).IsFloat() }
func (e elem) isInt() bool   { return npy.DType(e).IsInt() }

func (e elem) name() string {
	if e == bf16 {
		return "bfloat16"
	}
	return npy.DType(e).Name()
}

var safetensorsElems = map[string]elem{
	"F32": elem(npy.Float32), "F16": elem(npy.Float16), "F64": elem(npy.Float64), "BF16": bf16,
	"I8": elem(npy.Int8), "U8": elem(npy.Uint8), "I16": elem(npy.Int16), "U16": elem(npy.Uint16),
	"I32": elem(npy.Int32), "U32": elem(npy.Uint32), "I64": elem(npy.Int64), "U64": elem(npy.Uint64),
}

// input is an opened shard: its shape, element type and raw little-endian
// data (memory-mapped where the file is large).
type input struct {
	shape []int
	elem  elem
	raw   []byte
	f32   []float32 // zero-copy view of raw when it is aligned little-endian float32
	close func() error
}

// openInput opens a .npy file, or the named tensor of a safetensors file.
func openInput(path, tensor string) (*input, error) {
	if strings.EqualFold(filepath.Ext(path), ".safetensors") {
		if tensor == "" {
			return nil, fmt.Errorf("a safetensors shard needs a tensor name (--tensor)")
		}
		f, err := safetensors.Open(path)
		if err != nil {
			return nil, err
		}
		info, ok := f.Info(tensor)
		if !ok {
			f.Close()
			return nil, fmt.Errorf("no tensor named %q", tensor)
		}
		e, ok := safetensorsElems[string(info.DType)]
		if !ok {
			f.Close()
			return nil, fmt.Errorf("tensor %s has unsupported dtype %s", tensor, info.DType)
		}
		raw, err := f.Raw(tensor)
		if err != nil {
			f.Close()
			return nil, err
		}
		in := &input{shape: info.Shape, elem: e, raw: raw, close: f.Close}
		in.f32 = float32View(raw, e)
		return in, nil
	}
	a, err := npy.Open(path)
	if err != nil {
		return nil, err
	}
	in := &input{shape: a.Shape, elem: elem(a.DType), raw: a.Bytes(), close: a.Close}
	in.f32 = float32View(in.raw, in.elem)
	return in, nil
}

var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// float32View aliases b as []float32 without copying when that is exact.
func float32View(b []byte, e elem) []float32 {
	if e != elem(npy.Float32) || !littleEndian || len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// bytesOfFloat32 views f as its little-endian bytes (on little-endian hosts;
// elsewhere it converts into scratch).
func bytesOfFloat32(f []float32, scratch []byte) []byte {
	if len(f) == 0 {
		return nil
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
	}
	b := grow(scratch, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// toFloat32 converts raw elements of a float type into dst (len(raw)/size
// values).
func toFloat32(dst []float32, raw []byte, e elem) {
	le := binary.LittleEndian
	switch e {
	case elem(npy.Float32):
		for i := range dst {
			dst[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
	case elem(npy.Float64):
		for i := range dst {
			dst[i] = float32(math.Float64frombits(le.Uint64(raw[8*i:])))
		}
	case elem(npy.Float16):
		for i := range dst {
			dst[i] = npy.HalfToFloat32(le.Uint16(raw[2*i:]))
		}
	case bf16:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(le.Uint16(raw[2*i:])) << 16)
		}
	}
}

// toInt32 converts raw integer elements into dst; a value outside int32 is
// an error naming its index within raw.
func toInt32(dst []int32, raw []byte, e elem) error {
	le := binary.LittleEndian
	bad := func(v any, i int) error {
		return fmt.Errorf("code %v at element %d is outside the int32 range", v, i)
	}
	switch npy.DType(e) {
	case npy.Int8:
		for i := range dst {
			dst[i] = int32(int8(raw[i]))
		}
	case npy.Uint8:
		for i := range dst {
			dst[i] = int32(raw[i])
		}
	case npy.Int16:
		for i := range dst {
			dst[i] = int32(int16(le.Uint16(raw[2*i:])))
		}
	case npy.Uint16:
		for i := range dst {
			dst[i] = int32(le.Uint16(raw[2*i:]))
		}
	case npy.Int32:
		for i := range dst {
			dst[i] = int32(le.Uint32(raw[4*i:]))
		}
	case npy.Uint32:
		for i := range dst {
			v := le.Uint32(raw[4*i:])
			if v > math.MaxInt32 {
				return bad(v, i)
			}
			dst[i] = int32(v)
		}
	case npy.Int64:
		for i := range dst {
			v := int64(le.Uint64(raw[8*i:]))
			if v < math.MinInt32 || v > math.MaxInt32 {
				return bad(v, i)
			}
			dst[i] = int32(v)
		}
	case npy.Uint64:
		for i := range dst {
			v := le.Uint64(raw[8*i:])
			if v > math.MaxInt32 {
				return bad(v, i)
			}
			dst[i] = int32(v)
		}
	default:
		return fmt.Errorf("dtype %s is not an integer type", e.name())
	}
	return nil
}

// putCodes writes codes as little-endian elements of dt into b.
func putCodes(b []byte, codes []int32, dt npy.DType) error {
	le := binary.LittleEndian
	switch dt {
	case npy.Uint16:
		for i, c := range codes {
			if c < 0 || c > math.MaxUint16 {
				return fmt.Errorf("code %d does not fit uint16", c)
			}
			le.PutUint16(b[2*i:], uint16(c))
		}
	case npy.Int32:
		for i, c := range codes {
			le.PutUint32(b[4*i:], uint32(c))
		}
	case npy.Int64:
		for i, c := range codes {
			le.PutUint64(b[8*i:], uint64(int64(c)))
		}
	default:
		return fmt.Errorf("unsupported codes dtype %s", dt.Name())
	}
	return nil
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
