package pth

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The unpickler below is a data-only interpreter of the pickle opcodes that
// torch.save emits (protocol 2, plus the protocol 3-5 forms a newer Python
// may write). It never imports or calls anything: every GLOBAL is checked
// against a fixed allow-list when it is read, and the few callables on the
// list (OrderedDict, _rebuild_tensor_v2, ...) are emulated in Go.

// None is Python's None.
type None struct{}

// Global is a module attribute named by GLOBAL or STACK_GLOBAL, e.g.
// {torch, float32}. Only allow-listed globals are ever produced.
type Global struct{ Module, Name string }

func (g Global) String() string { return g.Module + "." + g.Name }

// Tuple is a Python tuple.
type Tuple []any

// List is a Python list (a pointer, since APPEND mutates it through the memo).
// Sets and frozensets also decode to a List.
type List struct{ Items []any }

// Dict is a Python dict, collections.OrderedDict or argparse.Namespace, with
// insertion order kept. Keys are hashable values: string, int64, float64,
// None, Global, or Tuples of these (bool keys are stored as 0/1 ints, as
// Python compares them).
type Dict struct {
	Class string // "dict", "collections.OrderedDict" or "argparse.Namespace"
	Keys  []any
	Vals  []any
	Attrs map[string]any // instance attributes set by BUILD (e.g. _metadata)
	index map[any]int
}

func newDict(class string) *Dict { return &Dict{Class: class, index: map[any]int{}} }

// Get returns the value stored under key k.
func (d *Dict) Get(k any) (any, bool) {
	hk, err := hashKey(k)
	if err != nil {
		return nil, false
	}
	i, ok := d.index[hk]
	if !ok {
		return nil, false
	}
	return d.Vals[i], true
}

// Len is the number of items.
func (d *Dict) Len() int { return len(d.Keys) }

func (d *Dict) set(k, v any) error {
	hk, err := hashKey(k)
	if err != nil {
		return err
	}
	if i, ok := d.index[hk]; ok {
		d.Vals[i] = v
		return nil
	}
	d.index[hk] = len(d.Keys)
	d.Keys = append(d.Keys, k)
	d.Vals = append(d.Vals, v)
	return nil
}

// hashKey maps a Python value to a comparable Go value with Python's
// equality for the types a checkpoint uses; unhashable values are an error.
func hashKey(k any) (any, error) {
	budget := 1024 // tuple elements visited: memo-shared nesting cannot blow up
	return hashKeyRec(k, 0, &budget)
}

func hashKeyRec(k any, depth int, budget *int) (any, error) {
	*budget--
	if depth > 32 || *budget < 0 {
		return nil, errors.New("dict key nested too deeply")
	}
	switch v := k.(type) {
	case string, int64, None, Global:
		return v, nil
	case bool:
		if v {
			return int64(1), nil
		}
		return int64(0), nil
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<62 {
			return int64(v), nil
		}
		if math.IsNaN(v) {
			return nil, errors.New("NaN dict key")
		}
		return v, nil
	case *big.Int:
		return "\x00bigint:" + v.String(), nil
	case []byte:
		return "\x00bytes:" + string(v), nil
	case Tuple:
		var b strings.Builder
		b.WriteString("\x00tuple:")
		for _, e := range v {
			h, err := hashKeyRec(e, depth+1, budget)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "%T:%v\x01", h, h)
		}
		return b.String(), nil
	}
	return nil, fmt.Errorf("unhashable dict key of type %s", typeName(k))
}

// Storage is one persistent storage record of a PyTorch zip checkpoint:
// ('storage', torch.FloatStorage, key, location, numel).
type Storage struct {
	Type     string // "FloatStorage", "BFloat16Storage", ...
	DType    string // safetensors spelling: "F32", "BF16", ...
	Key      string // entry <archive>/data/<Key>
	Location string // "cpu", "cuda:0", ...
	Numel    int64  // elements of DType
}

// Tensor is a view into a Storage, as _rebuild_tensor_v2 describes it.
// Offset and Stride are in elements.
type Tensor struct {
	Storage      *Storage
	Offset       int64
	Size         []int64
	Stride       []int64
	RequiresGrad bool
}

// Numel is the number of elements of the view.
func (t *Tensor) Numel() int64 {
	n := int64(1)
	for _, s := range t.Size {
		n *= s
	}
	return n
}

// Limits against hostile input.
const (
	maxStack     = 1 << 20 // values on the stack, marks included
	maxMemo      = 1 << 20 // memo entries
	maxLongBytes = 1 << 10 // bytes of a LONG1/LONG4 integer
	maxDims      = 64      // tensor rank
)

// Pickle opcodes.
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opFloat          = 'F'
	opInt            = 'I'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opLong           = 'L'
	opBinInt2        = 'M'
	opNone           = 'N'
	opPersID         = 'P'
	opBinPersID      = 'Q'
	opReduce         = 'R'
	opString         = 'S'
	opBinString      = 'T'
	opShortBinString = 'U'
	opUnicode        = 'V'
	opBinUnicode     = 'X'
	opAppend         = 'a'
	opBuild          = 'b'
	opGlobal         = 'c'
	opDict           = 'd'
	opEmptyDict      = '}'
	opAppends        = 'e'
	opGet            = 'g'
	opBinGet         = 'h'
	opInst           = 'i'
	opLongBinGet     = 'j'
	opList           = 'l'
	opEmptyList      = ']'
	opObj            = 'o'
	opPut            = 'p'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opSetItem        = 's'
	opTuple          = 't'
	opEmptyTuple     = ')'
	opSetItems       = 'u'
	opBinFloat       = 'G'
	opBinBytes       = 'B'
	opShortBinBytes  = 'C'
	opProto          = 0x80
	opNewObj         = 0x81
	opExt1           = 0x82
	opExt2           = 0x83
	opExt4           = 0x84
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opLong1          = 0x8a
	opLong4          = 0x8b
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opBinBytes8      = 0x8e
	opEmptySet       = 0x8f
	opAddItems       = 0x90
	opFrozenSet      = 0x91
	opNewObjEx       = 0x92
	opStackGlobal    = 0x93
	opMemoize        = 0x94
	opFrame          = 0x95
	opByteArray8     = 0x96
	opNextBuffer     = 0x97
	opReadonlyBuffer = 0x98
)

// storageDTypes maps torch's legacy storage classes to safetensors dtypes.
var storageDTypes = map[string]string{
	"FloatStorage":    "F32",
	"HalfStorage":     "F16",
	"BFloat16Storage": "BF16",
	"DoubleStorage":   "F64",
	"LongStorage":     "I64",
	"IntStorage":      "I32",
	"ShortStorage":    "I16",
	"CharStorage":     "I8",
	"ByteStorage":     "U8",
	"BoolStorage":     "BOOL",
	"UntypedStorage":  "U8",
}

// torchDTypes are the torch.<dtype> globals that may appear as values.
var torchDTypes = map[string]bool{
	"float32": true, "float": true, "float16": true, "half": true, "bfloat16": true,
	"float64": true, "double": true, "int64": true, "long": true, "int32": true,
	"int": true, "int16": true, "short": true, "int8": true, "uint8": true, "bool": true,
	"complex64": true, "complex128": true, "cfloat": true, "cdouble": true,
	"float8_e4m3fn": true, "float8_e5m2": true,
}

// allowedGlobal reports whether module.name may appear in a checkpoint. The
// list is ours: containers, tensor rebuilding, storage classes, dtypes, and
// the plain objects UniTok's args may hold.
func allowedGlobal(module, name string) bool {
	switch module {
	case "collections":
		return name == "OrderedDict"
	case "builtins":
		switch name {
		case "set", "frozenset", "bytearray", "object":
			return true
		}
	case "_codecs":
		return name == "encode"
	case "copyreg":
		return name == "_reconstructor"
	case "argparse":
		return name == "Namespace"
	case "torch._utils":
		switch name {
		case "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state":
			return true
		}
	case "torch._tensor":
		return name == "_rebuild_from_type_v2"
	case "torch.nn.parameter":
		return name == "Parameter"
	case "torch":
		if _, ok := storageDTypes[name]; ok {
			return true
		}
		if torchDTypes[name] {
			return true
		}
		switch name {
		case "Size", "device", "Tensor":
			return true
		}
	}
	return false
}

// Python 2 module names that protocol 2 pickles use (fix_imports).
var py2Modules = map[string]string{"__builtin__": "builtins", "copy_reg": "copyreg"}

// unpickler holds the state of one decode.
type unpickler struct {
	data  []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint32]any
	// persistentLoad resolves a BINPERSID id; nil refuses them.
	persistentLoad func(pid any) (any, error)
}

// Unpickle decodes one pickle from data without executing anything.
// persistentLoad resolves persistent ids (torch storages); nil refuses them.
func Unpickle(data []byte, persistentLoad func(pid any) (any, error)) (any, error) {
	u := &unpickler{data: data, memo: map[uint32]any{}, persistentLoad: persistentLoad}
	v, err := u.run()
	if err != nil {
		return nil, fmt.Errorf("pth: %w", err)
	}
	return v, nil
}

var errShort = errors.New("unexpected end of pickle data")

func (u *unpickler) read(n int) ([]byte, error) {
	if n < 0 || n > len(u.data)-u.pos {
		return nil, errShort
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) readLine() (string, error) {
	i := bytes.IndexByte(u.data[u.pos:], '\n')
	if i < 0 {
		return "", errShort
	}
	s := string(u.data[u.pos : u.pos+i])
	u.pos += i + 1
	return strings.TrimSuffix(s, "\r"), nil
}

func (u *unpickler) readUint(n int) (uint64, error) {
	b, err := u.read(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// readCount reads an n-byte little-endian length that must fit in the
// remaining data.
func (u *unpickler) readCount(n int) (int, error) {
	v, err := u.readUint(n)
	if err != nil {
		return 0, err
	}
	if v > uint64(len(u.data)-u.pos) {
		return 0, fmt.Errorf("length %d exceeds the %d bytes left", v, len(u.data)-u.pos)
	}
	return int(v), nil
}

func (u *unpickler) push(v any) error {
	if len(u.stack)+len(u.marks) >= maxStack {
		return fmt.Errorf("stack exceeds %d entries", maxStack)
	}
	u.stack = append(u.stack, v)
	return nil
}

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, errors.New("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

// pop2 pops the top two values; below is the one pushed first.
func (u *unpickler) pop2() (below, top any, err error) {
	if top, err = u.pop(); err != nil {
		return nil, nil, err
	}
	below, err = u.pop()
	return below, top, err
}

// applyTop pops a callable and its argument tuple (REDUCE, NEWOBJ), makes
// a value of them with mk and pushes it.
func (u *unpickler) applyTop(op string, mk func(fn any, args Tuple) (any, error)) error {
	fn, args, err := u.pop2()
	if err != nil {
		return err
	}
	t, ok := args.(Tuple)
	if !ok {
		return fmt.Errorf("%s arguments are %s, not a tuple", op, typeName(args))
	}
	v, err := mk(fn, t)
	if err != nil {
		return err
	}
	return u.push(v)
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, errors.New("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark pops everything above the last MARK, and the mark.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) memoPut(idx uint32, v any) error {
	if _, ok := u.memo[idx]; !ok && len(u.memo) >= maxMemo {
		return fmt.Errorf("memo exceeds %d entries", maxMemo)
	}
	u.memo[idx] = v
	return nil
}

func (u *unpickler) memoGet(idx uint32) error {
	v, ok := u.memo[idx]
	if !ok {
		return fmt.Errorf("memo key %d not found", idx)
	}
	return u.push(v)
}

func (u *unpickler) run() (any, error) {
	for {
		if u.pos >= len(u.data) {
			return nil, errors.New("pickle ends without STOP")
		}
		at := u.pos
		op := u.data[u.pos]
		u.pos++
		if err := u.step(op); err != nil {
			if err == errStop {
				v, err := u.pop()
				if err != nil {
					return nil, fmt.Errorf("STOP at offset %d: %w", at, err)
				}
				return v, nil
			}
			var rg *RefusedGlobalError
			if errors.As(err, &rg) {
				return nil, fmt.Errorf("%w (pickle offset %d)", err, at)
			}
			return nil, fmt.Errorf("%s at offset %d: %w", opName(op), at, err)
		}
	}
}

var errStop = errors.New("stop")

func opName(op byte) string {
	if op >= 0x20 && op < 0x7f {
		return fmt.Sprintf("opcode %q", rune(op))
	}
	return fmt.Sprintf("opcode 0x%02x", op)
}

func (u *unpickler) step(op byte) error {
	switch op {
	case opStop:
		return errStop
	case opProto:
		b, err := u.read(1)
		if err != nil {
			return err
		}
		if b[0] > 5 {
			return fmt.Errorf("unsupported pickle protocol %d", b[0])
		}
		return nil
	case opFrame:
		_, err := u.readUint(8) // framing is advisory; the data is all in memory
		return err
	case opMark:
		if len(u.stack)+len(u.marks) >= maxStack {
			return fmt.Errorf("stack exceeds %d entries", maxStack)
		}
		u.marks = append(u.marks, len(u.stack))
		return nil
	case opPop:
		_, err := u.pop()
		if err != nil && len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1] {
			// POP of a bare MARK (pickle allows it).
			u.marks = u.marks[:len(u.marks)-1]
			return nil
		}
		return err
	case opPopMark:
		_, err := u.popMark()
		return err
	case opDup:
		v, err := u.top()
		if err != nil {
			return err
		}
		return u.push(v)

	// Memo.
	case opBinPut:
		i, err := u.readUint(1)
		if err != nil {
			return err
		}
		v, err := u.top()
		if err != nil {
			return err
		}
		return u.memoPut(uint32(i), v)
	case opLongBinPut:
		i, err := u.readUint(4)
		if err != nil {
			return err
		}
		v, err := u.top()
		if err != nil {
			return err
		}
		return u.memoPut(uint32(i), v)
	case opPut:
		line, err := u.readLine()
		if err != nil {
			return err
		}
		i, err := strconv.ParseUint(line, 10, 32)
		if err != nil {
			return fmt.Errorf("bad PUT index %q", line)
		}
		v, err := u.top()
		if err != nil {
			return err
		}
		return u.memoPut(uint32(i), v)
	case opMemoize:
		v, err := u.top()
		if err != nil {
			return err
		}
		return u.memoPut(uint32(len(u.memo)), v)
	case opBinGet:
		i, err := u.readUint(1)
		if err != nil {
			return err
		}
		return u.memoGet(uint32(i))
	case opLongBinGet:
		i, err := u.readUint(4)
		if err != nil {
			return err
		}
		return u.memoGet(uint32(i))
	case opGet:
		line, err := u.readLine()
		if err != nil {
			return err
		}
		i, err := strconv.ParseUint(line, 10, 32)
		if err != nil {
			return fmt.Errorf("bad GET index %q", line)
		}
		return u.memoGet(uint32(i))

	// Scalars.
	case opNone:
		return u.push(None{})
	case opNewTrue:
		return u.push(true)
	case opNewFalse:
		return u.push(false)
	case opBinInt:
		v, err := u.readUint(4)
		if err != nil {
			return err
		}
		return u.push(int64(int32(uint32(v))))
	case opBinInt1:
		v, err := u.readUint(1)
		if err != nil {
			return err
		}
		return u.push(int64(v))
	case opBinInt2:
		v, err := u.readUint(2)
		if err != nil {
			return err
		}
		return u.push(int64(v))
	case opLong1, opLong4:
		w := 1
		if op == opLong4 {
			w = 4
		}
		n, err := u.readCount(w)
		if err != nil {
			return err
		}
		if n > maxLongBytes {
			return fmt.Errorf("integer of %d bytes is too long", n)
		}
		b, _ := u.read(n)
		return u.push(decodeLong(b))
	case opInt, opLong:
		line, err := u.readLine()
		if err != nil {
			return err
		}
		line = strings.TrimSuffix(line, "L")
		switch line {
		case "00":
			return u.push(false)
		case "01":
			return u.push(true)
		}
		if len(line) > 2*maxLongBytes {
			return errors.New("integer literal too long")
		}
		bi, ok := new(big.Int).SetString(line, 10)
		if !ok {
			return fmt.Errorf("bad integer literal %q", line)
		}
		return u.push(normBig(bi))
	case opBinFloat:
		b, err := u.read(8)
		if err != nil {
			return err
		}
		return u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case opFloat:
		line, err := u.readLine()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(line, 64)
		if err != nil {
			return fmt.Errorf("bad float literal %q", line)
		}
		return u.push(f)

	// Strings and bytes.
	case opShortBinUni, opBinUnicode, opBinUnicode8:
		w := map[byte]int{opShortBinUni: 1, opBinUnicode: 4, opBinUnicode8: 8}[op]
		n, err := u.readCount(w)
		if err != nil {
			return err
		}
		b, _ := u.read(n)
		if !utf8.Valid(b) {
			return errors.New("string is not valid UTF-8")
		}
		return u.push(string(b))
	case opShortBinString, opBinString:
		// Python 2 str: decoded as text when it is UTF-8, else kept as bytes.
		w := 1
		if op == opBinString {
			w = 4
		}
		n, err := u.readCount(w)
		if err != nil {
			return err
		}
		b, _ := u.read(n)
		if utf8.Valid(b) {
			return u.push(string(b))
		}
		return u.push(append([]byte(nil), b...))
	case opShortBinBytes, opBinBytes, opBinBytes8, opByteArray8:
		w := map[byte]int{opShortBinBytes: 1, opBinBytes: 4, opBinBytes8: 8, opByteArray8: 8}[op]
		n, err := u.readCount(w)
		if err != nil {
			return err
		}
		b, _ := u.read(n)
		return u.push(append([]byte(nil), b...))

	// Containers.
	case opEmptyDict:
		return u.push(newDict("dict"))
	case opEmptyList:
		return u.push(&List{})
	case opEmptyTuple:
		return u.push(Tuple{})
	case opEmptySet:
		return u.push(&List{})
	case opDict:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		d := newDict("dict")
		if err := setItems(d, items); err != nil {
			return err
		}
		return u.push(d)
	case opList:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.push(&List{Items: items})
	case opTuple, opFrozenSet:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		if op == opFrozenSet {
			return u.push(&List{Items: items})
		}
		return u.push(Tuple(items))
	case opTuple1, opTuple2, opTuple3:
		n := int(op-opTuple1) + 1
		t := make(Tuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := u.pop()
			if err != nil {
				return err
			}
			t[i] = v
		}
		return u.push(t)
	case opAppend:
		v, err := u.pop()
		if err != nil {
			return err
		}
		return u.appendTo([]any{v})
	case opAppends, opAddItems:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.appendTo(items)
	case opSetItem:
		k, v, err := u.pop2()
		if err != nil {
			return err
		}
		top, err := u.top()
		if err != nil {
			return err
		}
		d, ok := top.(*Dict)
		if !ok {
			return fmt.Errorf("SETITEM on %s", typeName(top))
		}
		return d.set(k, v)
	case opSetItems:
		items, err := u.popMark()
		if err != nil {
			return err
		}
		top, err := u.top()
		if err != nil {
			return err
		}
		d, ok := top.(*Dict)
		if !ok {
			return fmt.Errorf("SETITEMS on %s", typeName(top))
		}
		return setItems(d, items)

	// Globals and objects.
	case opGlobal:
		mod, err := u.readLine()
		if err != nil {
			return err
		}
		name, err := u.readLine()
		if err != nil {
			return err
		}
		g, err := resolveGlobal(mod, name)
		if err != nil {
			return err
		}
		return u.push(g)
	case opStackGlobal:
		mv, nv, err := u.pop2()
		if err != nil {
			return err
		}
		mod, ok1 := mv.(string)
		name, ok2 := nv.(string)
		if !ok1 || !ok2 {
			return errors.New("STACK_GLOBAL needs two strings")
		}
		g, err := resolveGlobal(mod, name)
		if err != nil {
			return err
		}
		return u.push(g)
	case opReduce:
		return u.applyTop("REDUCE", call)
	case opNewObj:
		return u.applyTop("NEWOBJ", newObject)
	case opNewObjEx:
		kw, err := u.pop()
		if err != nil {
			return err
		}
		return u.applyTop("NEWOBJ_EX", func(cls any, args Tuple) (any, error) {
			if d, ok := kw.(*Dict); !ok || d.Len() != 0 {
				return nil, errors.New("NEWOBJ_EX with keyword arguments is not supported")
			}
			return newObject(cls, args)
		})
	case opBuild:
		state, err := u.pop()
		if err != nil {
			return err
		}
		obj, err := u.top()
		if err != nil {
			return err
		}
		return build(obj, state)
	case opBinPersID:
		pid, err := u.pop()
		if err != nil {
			return err
		}
		if u.persistentLoad == nil {
			return errors.New("persistent ids are not allowed here")
		}
		v, err := u.persistentLoad(pid)
		if err != nil {
			return err
		}
		return u.push(v)
	case opInst, opObj:
		return errors.New("INST/OBJ (protocol 0/1 object construction) is not supported")
	case opExt1, opExt2, opExt4:
		return errors.New("extension registry codes are not supported")
	case opPersID, opString, opUnicode:
		return errors.New("text-mode (protocol 0) strings and persistent ids are not supported")
	case opNextBuffer, opReadonlyBuffer:
		return errors.New("out-of-band buffers are not supported")
	}
	return errors.New("unknown opcode")
}

func setItems(d *Dict, items []any) error {
	if len(items)%2 != 0 {
		return errors.New("odd number of items for SETITEMS")
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return err
		}
	}
	return nil
}

func (u *unpickler) appendTo(items []any) error {
	top, err := u.top()
	if err != nil {
		return err
	}
	l, ok := top.(*List)
	if !ok {
		return fmt.Errorf("APPEND on %s", typeName(top))
	}
	l.Items = append(l.Items, items...)
	return nil
}

// decodeLong decodes a little-endian two's-complement integer.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return normBig(v)
}

func normBig(v *big.Int) any {
	if v.IsInt64() {
		return v.Int64()
	}
	return v
}

func resolveGlobal(mod, name string) (Global, error) {
	if m, ok := py2Modules[mod]; ok {
		mod = m
	}
	if !allowedGlobal(mod, name) {
		return Global{}, &RefusedGlobalError{Module: mod, Name: name}
	}
	return Global{Module: mod, Name: name}, nil
}

// RefusedGlobalError reports a pickle that references a global outside the
// allow-list (os.system, builtins.eval, ...). Nothing was called.
type RefusedGlobalError struct{ Module, Name string }

func (e *RefusedGlobalError) Error() string {
	return "refusing to load global " + e.Module + "." + e.Name
}

// call emulates REDUCE for the allow-listed callables.
func call(fn any, args Tuple) (any, error) {
	g, ok := fn.(Global)
	if !ok {
		return nil, fmt.Errorf("cannot call a %s", typeName(fn))
	}
	switch g.String() {
	case "collections.OrderedDict":
		d := newDict("collections.OrderedDict")
		if len(args) == 0 {
			return d, nil
		}
		if len(args) == 1 {
			if err := fillFromPairs(d, args[0]); err != nil {
				return nil, err
			}
			return d, nil
		}
	case "argparse.Namespace":
		if len(args) == 0 {
			return newDict("argparse.Namespace"), nil
		}
	case "builtins.set", "builtins.frozenset":
		if len(args) == 0 {
			return &List{}, nil
		}
		if len(args) == 1 {
			switch v := args[0].(type) {
			case *List:
				return &List{Items: append([]any(nil), v.Items...)}, nil
			case Tuple:
				return &List{Items: append([]any(nil), v...)}, nil
			}
		}
	case "builtins.bytearray", "_codecs.encode":
		// Protocol 2 pickles bytes as _codecs.encode(str, 'latin1').
		if len(args) == 0 {
			return []byte{}, nil
		}
		if len(args) <= 2 {
			s, ok := args[0].(string)
			if !ok {
				if b, ok := args[0].([]byte); ok && len(args) == 1 {
					return append([]byte(nil), b...), nil
				}
				break
			}
			enc := "utf-8"
			if len(args) == 2 {
				if enc, ok = args[1].(string); !ok {
					break
				}
			}
			return encodeString(s, enc)
		}
	case "copyreg._reconstructor":
		// copyreg._reconstructor(cls, object, None): an empty instance.
		if len(args) == 3 {
			if base, ok := args[1].(Global); ok && base.String() == "builtins.object" {
				if _, ok := args[2].(None); ok {
					return newObject(args[0], Tuple{})
				}
			}
		}
	case "torch._utils._rebuild_tensor":
		if len(args) == 4 {
			return rebuildTensor(args[0], args[1], args[2], args[3], false)
		}
	case "torch._utils._rebuild_tensor_v2":
		if len(args) == 6 || len(args) == 7 {
			rg, _ := args[4].(bool)
			if len(args) == 7 {
				if _, ok := args[6].(None); !ok {
					if d, ok := args[6].(*Dict); !ok || d.Len() != 0 {
						return nil, errors.New("_rebuild_tensor_v2 with tensor metadata is not supported")
					}
				}
			}
			return rebuildTensor(args[0], args[1], args[2], args[3], rg)
		}
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(args) >= 3 && len(args) <= 4 {
			t, ok := args[0].(*Tensor)
			if !ok {
				return nil, fmt.Errorf("_rebuild_parameter of a %s", typeName(args[0]))
			}
			rg, _ := args[1].(bool)
			c := *t
			c.RequiresGrad = rg
			return &c, nil
		}
	case "torch._tensor._rebuild_from_type_v2":
		// (func, new_type, args, state): func(*args), type and state dropped.
		if len(args) == 4 {
			nt, ok := args[1].(Global)
			if !ok || (nt.String() != "torch.Tensor" && nt.String() != "torch.nn.parameter.Parameter") {
				return nil, fmt.Errorf("_rebuild_from_type_v2 to type %v", args[1])
			}
			inner, ok := args[2].(Tuple)
			if !ok {
				break
			}
			return call(args[0], inner)
		}
	case "torch.Size":
		if len(args) == 1 {
			switch v := args[0].(type) {
			case Tuple:
				return v, nil
			case *List:
				return Tuple(v.Items), nil
			}
		}
	case "torch.device":
		if len(args) == 1 || len(args) == 2 {
			s, ok := args[0].(string)
			if !ok {
				break
			}
			if len(args) == 2 {
				if i, ok := args[1].(int64); ok {
					return fmt.Sprintf("%s:%d", s, i), nil
				}
				if _, ok := args[1].(None); !ok {
					break
				}
			}
			return s, nil
		}
	default:
		return nil, fmt.Errorf("cannot call %s", g)
	}
	return nil, fmt.Errorf("unsupported arguments to %s (%d args)", g, len(args))
}

func fillFromPairs(d *Dict, v any) error {
	var items []any
	switch s := v.(type) {
	case *List:
		items = s.Items
	case Tuple:
		items = s
	case *Dict:
		for i := range s.Keys {
			if err := d.set(s.Keys[i], s.Vals[i]); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("cannot build a dict from a %s", typeName(v))
	}
	for _, it := range items {
		p, ok := it.(Tuple)
		if !ok || len(p) != 2 {
			return errors.New("dict items must be pairs")
		}
		if err := d.set(p[0], p[1]); err != nil {
			return err
		}
	}
	return nil
}

func encodeString(s, enc string) ([]byte, error) {
	switch strings.ToLower(strings.ReplaceAll(enc, "-", "")) {
	case "latin1", "iso88591":
		out := make([]byte, 0, len(s))
		for _, r := range s {
			if r > 0xff {
				return nil, errors.New("latin-1 encoding of a non-latin-1 string")
			}
			out = append(out, byte(r))
		}
		return out, nil
	case "utf8", "ascii":
		return []byte(s), nil
	}
	return nil, fmt.Errorf("unsupported encoding %q", enc)
}

// newObject emulates NEWOBJ (cls.__new__(cls, *args)) for the allowed classes.
func newObject(cls any, args Tuple) (any, error) {
	g, ok := cls.(Global)
	if !ok {
		return nil, fmt.Errorf("cannot instantiate a %s", typeName(cls))
	}
	switch g.String() {
	case "argparse.Namespace", "collections.OrderedDict":
		if len(args) == 0 {
			return newDict(g.String()), nil
		}
	case "builtins.set", "builtins.frozenset":
		if len(args) == 0 {
			return &List{}, nil
		}
	default:
		return nil, fmt.Errorf("cannot instantiate %s", g)
	}
	return nil, fmt.Errorf("unsupported arguments to %s.__new__", g)
}

// build emulates BUILD (obj.__setstate__(state) or obj.__dict__.update).
func build(obj, state any) error {
	var slots any
	if t, ok := state.(Tuple); ok && len(t) == 2 {
		state, slots = t[0], t[1]
	}
	switch o := obj.(type) {
	case *Dict:
		for _, s := range []any{state, slots} {
			switch sd := s.(type) {
			case nil, None:
			case *Dict:
				for i, k := range sd.Keys {
					ks, ok := k.(string)
					if !ok {
						return errors.New("object state has a non-string attribute name")
					}
					if o.Class == "argparse.Namespace" {
						if err := o.set(ks, sd.Vals[i]); err != nil {
							return err
						}
						continue
					}
					if o.Attrs == nil {
						o.Attrs = map[string]any{}
					}
					o.Attrs[ks] = sd.Vals[i]
				}
			default:
				return fmt.Errorf("BUILD of a %s with a %s state", o.Class, typeName(s))
			}
		}
		return nil
	case *Tensor:
		// Tensor state (requires_grad, hooks, python attrs) carries no data.
		return nil
	}
	return fmt.Errorf("BUILD on a %s", typeName(obj))
}

// rebuildTensor checks and assembles a tensor view.
func rebuildTensor(storage, offset, size, stride any, requiresGrad bool) (*Tensor, error) {
	st, ok := storage.(*Storage)
	if !ok {
		return nil, fmt.Errorf("tensor storage is a %s", typeName(storage))
	}
	off, ok := offset.(int64)
	if !ok || off < 0 {
		return nil, fmt.Errorf("bad storage offset %v", offset)
	}
	sz, err := intTuple(size, "size")
	if err != nil {
		return nil, err
	}
	sd, err := intTuple(stride, "stride")
	if err != nil {
		return nil, err
	}
	if len(sz) != len(sd) {
		return nil, fmt.Errorf("size %v and stride %v differ in rank", sz, sd)
	}
	t := &Tensor{Storage: st, Offset: off, Size: sz, Stride: sd, RequiresGrad: requiresGrad}
	if _, err := t.span(); err != nil {
		return nil, err
	}
	return t, nil
}

// span returns the number of storage elements the view touches from Offset
// (0 for an empty tensor), checking that it lies inside the storage.
func (t *Tensor) span() (int64, error) {
	const lim = int64(1) << 50
	numel, last := int64(1), int64(0)
	for i, s := range t.Size {
		if s < 0 || s > lim || t.Stride[i] < 0 || t.Stride[i] > lim {
			return 0, fmt.Errorf("bad size %v / stride %v", t.Size, t.Stride)
		}
		if s == 0 {
			return 0, nil
		}
		if s > lim/numel {
			return 0, fmt.Errorf("tensor of size %v is too large", t.Size)
		}
		numel *= s
		if t.Stride[i] != 0 && s-1 > (lim-last)/t.Stride[i] {
			return 0, fmt.Errorf("tensor stride %v reaches too far", t.Stride)
		}
		last += (s - 1) * t.Stride[i]
	}
	end := t.Offset + last + 1
	if t.Offset > lim || end > t.Storage.Numel {
		return 0, fmt.Errorf("view (offset %d, size %v, stride %v) reaches element %d of a storage of %d", t.Offset, t.Size, t.Stride, end, t.Storage.Numel)
	}
	return last + 1, nil
}

// Contiguous reports whether the view is row-major without gaps.
func (t *Tensor) Contiguous() bool {
	want := int64(1)
	for i := len(t.Size) - 1; i >= 0; i-- {
		if t.Size[i] != 1 && t.Stride[i] != want {
			return false
		}
		want *= t.Size[i]
	}
	return true
}

func intTuple(v any, what string) ([]int64, error) {
	var items []any
	switch t := v.(type) {
	case Tuple:
		items = t
	case *List:
		items = t.Items
	default:
		return nil, fmt.Errorf("tensor %s is a %s", what, typeName(v))
	}
	if len(items) > maxDims {
		return nil, fmt.Errorf("tensor %s has %d dims", what, len(items))
	}
	out := make([]int64, len(items))
	for i, it := range items {
		n, ok := it.(int64)
		if !ok {
			return nil, fmt.Errorf("tensor %s %v is not all integers", what, v)
		}
		out[i] = n
	}
	return out, nil
}

func typeName(v any) string {
	switch v.(type) {
	case nil, None:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case Tuple:
		return "tuple"
	case *List:
		return "list"
	case *Dict:
		return "dict"
	case Global:
		return "global " + v.(Global).String()
	case *Storage:
		return "storage"
	case *Tensor:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}
