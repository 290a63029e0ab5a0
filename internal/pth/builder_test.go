package pth

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"testing"
)

// pk assembles protocol-2 pickles by hand, opcode by opcode, the way
// torch.save's pickler lays them out.
type pk struct {
	bytes.Buffer
	memo int
}

func newPK() *pk {
	p := &pk{}
	p.WriteByte(opProto)
	p.WriteByte(2)
	return p
}

func (p *pk) op(b ...byte) *pk { p.Write(b); return p }

func (p *pk) put() *pk {
	if p.memo < 256 {
		p.op(opBinPut, byte(p.memo))
	} else {
		p.op(opLongBinPut)
		binary.Write(p, binary.LittleEndian, uint32(p.memo))
	}
	p.memo++
	return p
}

func (p *pk) str(s string) *pk {
	p.op(opBinUnicode)
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p.put()
}

func (p *pk) int(n int64) *pk {
	switch {
	case n >= 0 && n < 256:
		p.op(opBinInt1, byte(n))
	case n >= 0 && n < 65536:
		p.op(opBinInt2, byte(n), byte(n>>8))
	case n >= math.MinInt32 && n <= math.MaxInt32:
		p.op(opBinInt)
		binary.Write(p, binary.LittleEndian, int32(n))
	default:
		p.op(opLong1, 8)
		binary.Write(p, binary.LittleEndian, n)
	}
	return p
}

func (p *pk) float(f float64) *pk {
	p.op(opBinFloat)
	binary.Write(p, binary.BigEndian, math.Float64bits(f))
	return p
}

func (p *pk) global(mod, name string) *pk {
	p.op(opGlobal)
	p.WriteString(mod + "\n" + name + "\n")
	return p.put()
}

func (p *pk) tuple(items ...func()) *pk {
	switch len(items) {
	case 0:
		return p.op(opEmptyTuple)
	case 1, 2, 3:
		for _, it := range items {
			it()
		}
		return p.op(opTuple1 + byte(len(items)-1)).put()
	}
	p.op(opMark)
	for _, it := range items {
		it()
	}
	return p.op(opTuple).put()
}

func (p *pk) ints(ns []int64) *pk {
	var items []func()
	for _, n := range ns {
		items = append(items, func() { p.int(n) })
	}
	return p.tuple(items...)
}

// value writes a Go value as Python would pickle it.
func (p *pk) value(v any) *pk {
	switch x := v.(type) {
	case nil:
		return p.op(opNone)
	case bool:
		if x {
			return p.op(opNewTrue)
		}
		return p.op(opNewFalse)
	case int:
		return p.int(int64(x))
	case int64:
		return p.int(x)
	case float64:
		return p.float(x)
	case string:
		return p.str(x)
	case []any:
		p.op(opEmptyList).put()
		if len(x) > 0 {
			p.op(opMark)
			for _, e := range x {
				p.value(e)
			}
			p.op(opAppends)
		}
		return p
	case kv:
		return p.dict(x)
	case func(*pk):
		x(p)
		return p
	}
	panic(fmt.Sprintf("pk.value: %T", v))
}

// kv is an ordered dict literal for tests.
type kv []any

func (p *pk) dict(items kv) *pk {
	p.op(opEmptyDict).put()
	if len(items) > 0 {
		p.op(opMark)
		for _, e := range items {
			p.value(e)
		}
		p.op(opSetItems)
	}
	return p
}

func (p *pk) orderedDict(items kv) *pk {
	p.global("collections", "OrderedDict").op(opEmptyTuple, opReduce).put()
	if len(items) > 0 {
		p.op(opMark)
		for _, e := range items {
			p.value(e)
		}
		p.op(opSetItems)
	}
	return p
}

// tspec describes one tensor for a test checkpoint.
type tspec struct {
	name    string
	class   string // storage class, "FloatStorage" by default
	key     string // storage key, default: own storage
	numel   int64  // storage elements (default: Numel of shape)
	data    []byte // storage bytes (little endian)
	shape   []int64
	stride  []int64 // default contiguous
	offset  int64
	param   bool // wrap in _rebuild_parameter
	noWrite bool // do not write the storage entry (shared storages)
}

func contiguousStride(shape []int64) []int64 {
	st := make([]int64, len(shape))
	acc := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		st[i] = acc
		acc *= shape[i]
	}
	return st
}

func (p *pk) tensor(t tspec) *pk {
	if t.param {
		p.global("torch._utils", "_rebuild_parameter")
		p.op(opMark)
	}
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.op(opMark)
	p.op(opMark).str("storage").global("torch", t.class).str(t.key).str("cpu").int(t.numel).op(opTuple).put()
	p.op(opBinPersID)
	p.int(t.offset).ints(t.shape).ints(t.stride).op(opNewFalse)
	p.global("collections", "OrderedDict").op(opEmptyTuple, opReduce).put()
	p.op(opTuple).put().op(opReduce).put()
	if t.param {
		p.op(opNewTrue)
		p.global("collections", "OrderedDict").op(opEmptyTuple, opReduce).put()
		p.op(opTuple).put().op(opReduce).put()
	}
	return p
}

// ckptSpec describes a whole test checkpoint.
type ckptSpec struct {
	archive   string
	layout    string // "trainer" (default), "bare", "state_dict"
	prefix    string // prepended to every state-dict key ("module.")
	args      kv     // nil: no args
	tensors   []tspec
	bigEndian bool
	deflate   bool
}

func (c *ckptSpec) normalize() {
	if c.archive == "" {
		c.archive = "archive"
	}
	for i := range c.tensors {
		t := &c.tensors[i]
		if t.class == "" {
			t.class = "FloatStorage"
		}
		if t.key == "" {
			t.key = fmt.Sprint(i)
		}
		if t.stride == nil {
			t.stride = contiguousStride(t.shape)
		}
		if t.numel == 0 {
			t.numel = int64(len(t.data)) / elemSize(storageDTypes[t.class])
		}
	}
}

func (c ckptSpec) pickle() []byte {
	c.normalize()
	p := newPK()
	sd := func(p *pk) {
		items := kv{}
		for _, t := range c.tensors {
			t := t
			items = append(items, c.prefix+t.name, func(p *pk) { p.tensor(t) })
		}
		p.orderedDict(items)
	}
	switch c.layout {
	case "bare":
		sd(p)
	case "state_dict":
		p.dict(kv{"state_dict", sd, "epoch", 3})
	default:
		top := kv{}
		if c.args != nil {
			top = append(top, "args", c.args)
		}
		top = append(top, "trainer", kv{"unitok", sd, "step", 10})
		p.dict(top)
	}
	p.op(opStop)
	return p.Bytes()
}

func (c ckptSpec) zip(t testing.TB) []byte {
	c.normalize()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	method := zip.Store
	if c.deflate {
		method = zip.Deflate
	}
	add := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: c.archive + "/" + name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	add("data.pkl", c.pickle())
	if c.bigEndian {
		add("byteorder", []byte("big"))
	} else {
		add("byteorder", []byte("little"))
	}
	for _, ts := range c.tensors {
		if ts.noWrite {
			continue
		}
		data := ts.data
		if c.bigEndian {
			data = swapped(data, int(elemSize(storageDTypes[ts.class])))
		}
		add("data/"+ts.key, data)
	}
	add("version", []byte("3\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func swapped(b []byte, es int) []byte {
	out := append([]byte(nil), b...)
	for i := 0; i+es <= len(out); i += es {
		e := out[i : i+es]
		for a, z := 0, es-1; a < z; a, z = a+1, z-1 {
			e[a], e[z] = e[z], e[a]
		}
	}
	return out
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bf16bytes(v []float32) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(math.Float32bits(x)>>16)) // exact for test values
	}
	return b
}

func f16bytes(v []uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

func seq(n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i+1) * scale
	}
	return v
}

func openBytes(t testing.TB, b []byte) (*File, error) {
	t.Helper()
	return OpenReaderAt(bytes.NewReader(b), int64(len(b)), Options{})
}

type zipWriter struct{ zw *zip.Writer }

func newZipWriter(w *bytes.Buffer) *zipWriter { return &zipWriter{zip.NewWriter(w)} }

func (z *zipWriter) add(t testing.TB, name string, data []byte) {
	w, err := z.zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
}

func (z *zipWriter) close(t testing.TB) {
	if err := z.zw.Close(); err != nil {
		t.Fatal(err)
	}
}

func sortedKeys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
