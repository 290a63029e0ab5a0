// Package pth reads PyTorch zip checkpoints (what torch.save writes since
// PyTorch 1.6) without Python and without executing pickled code.
//
// A checkpoint is a zip archive holding <archive>/data.pkl (a pickle of the
// saved object, tensors replaced by persistent storage ids),
// <archive>/data/<key> (one entry per storage, raw little-endian elements),
// <archive>/version and sometimes <archive>/byteorder. data.pkl is decoded by
// a restricted unpickler (see Unpickle) whose allow-list covers containers,
// tensor rebuilding, storage classes, dtypes and argparse.Namespace; any
// other global is refused by name. Tensor data is never read at Open: the
// storages of the selected (core) tensors are read lazily, straight from the
// zip entries, so memory stays near the size of what is read.
//
// Open also maps the file read-only (on unix): ViewFloat32 then serves an
// fp32 tensor stored uncompressed, contiguous and 4-byte aligned (torch.save
// aligns every storage to 64 bytes) as a view of the mapping, without a
// copy; BF16 and F16 tensors are converted once, straight from the mapping.
// Views are valid until Close, which unmaps the file.
package pth

import (
	"archive/zip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/unitok/unitok/internal/ckpt"
	"github.com/unitok/unitok/internal/mmapfile"
)

// maxPickleBytes bounds data.pkl; a state dict's pickle is well under a MiB
// per thousand tensors, so this only stops hostile archives.
const maxPickleBytes = 256 << 20

// DefaultCorePrefixes select UniTok's tokenizer core when Options.Core is nil
// (the same prefixes as unitok.CoreTensorPrefixes).
var DefaultCorePrefixes = []string{"quant_proj.", "post_quant_proj.", "quantizer."}

// Options configure OpenWith.
type Options struct {
	// Core reports whether a state-dict name is a core tensor: core tensors
	// are listed by Tensors and checked at open; the rest are only counted
	// (Ignored). Nil means DefaultCorePrefixes.
	Core func(name string) bool
}

// File is an opened PyTorch zip checkpoint. It implements ckpt.Reader;
// its read methods are safe for concurrent use.
type File struct {
	ra     io.ReaderAt
	size   int64
	closer io.Closer
	// data is the whole file in memory when it can be viewed (a mapping
	// when mapped is set, unmapped by Close; else nil: no views).
	data      []byte
	mapped    bool
	archive   string // top folder inside the zip
	bigEndian bool
	entries   map[string]*zip.File // storage key -> entry

	stateKey string // where the state dict was found, e.g. "trainer.unitok"
	all      []ckpt.Info
	byName   map[string]*Tensor
	core     []ckpt.Info
	ignored  map[string]int
	args     *Dict
	meta     map[string]string

	mu     sync.RWMutex
	closed bool
}

var _ ckpt.Viewer = (*File)(nil)

// hostLittle: views reinterpret little-endian bytes as native float32s.
var hostLittle = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Open opens path with the default core selection.
func Open(path string) (*File, error) { return OpenWith(path, Options{}) }

// OpenWith opens a PyTorch zip checkpoint at path.
func OpenWith(path string, opts Options) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pth: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pth: %w", err)
	}
	pf, err := OpenReaderAt(f, st.Size(), opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	pf.closer = f
	// Map the file for views; where mapping is not supported or fails,
	// every read copies (through f).
	if size := st.Size(); mmapfile.Supported && size > 0 && int64(int(size)) == size {
		if m, err := mmapfile.Map(f, int(size)); err == nil {
			pf.data, pf.mapped = m, true
		}
	}
	return pf, nil
}

// OpenReaderAt reads a checkpoint from r (size bytes). The File keeps r for
// lazy reads; Close does not close it.
func OpenReaderAt(r io.ReaderAt, size int64, opts Options) (*File, error) {
	if opts.Core == nil {
		opts.Core = defaultCore
	}
	zr, err := zip.NewReader(r, size)
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return nil, fmt.Errorf("pth: not a readable zip archive (truncated or corrupted?): %w", err)
	}
	f := &File{ra: r, size: size, entries: map[string]*zip.File{}, byName: map[string]*Tensor{}, ignored: map[string]int{}}
	byPath := make(map[string]*zip.File, len(zr.File))
	var pkl *zip.File
	for _, zf := range zr.File {
		byPath[zf.Name] = zf
		dir, base := path.Split(zf.Name)
		if base == "data.pkl" && strings.Count(dir, "/") == 1 {
			if pkl != nil {
				return nil, fmt.Errorf("pth: archive holds two pickles (%s and %s)", pkl.Name, zf.Name)
			}
			pkl = zf
			f.archive = strings.TrimSuffix(dir, "/")
		}
	}
	if pkl == nil {
		return nil, errors.New("pth: zip archive has no <archive>/data.pkl: not a PyTorch checkpoint")
	}
	if bo, ok := byPath[f.archive+"/byteorder"]; ok {
		b, err := readSmallEntry(bo, 16)
		if err != nil {
			return nil, fmt.Errorf("pth: %s: %w", bo.Name, err)
		}
		switch strings.TrimSpace(string(b)) {
		case "little":
		case "big":
			f.bigEndian = true
		default:
			return nil, fmt.Errorf("pth: %s says %q, want little or big", bo.Name, b)
		}
	}
	data, err := readSmallEntry(pkl, maxPickleBytes)
	if err != nil {
		return nil, fmt.Errorf("pth: %s: %w", pkl.Name, err)
	}

	storages := map[string]*Storage{}
	load := func(pid any) (any, error) {
		return f.loadStorage(pid, storages, byPath)
	}
	top, err := Unpickle(data, load)
	if err != nil {
		return nil, err
	}
	if err := f.index(top, opts.Core); err != nil {
		return nil, err
	}
	// Core storages must lie inside the file: a truncated archive whose
	// central directory survived still fails here, not at first use.
	for _, info := range f.core {
		t := f.byName[info.Name]
		if err := f.checkEntry(f.entries[t.Storage.Key]); err != nil {
			return nil, fmt.Errorf("pth: tensor %s: %w", info.Name, err)
		}
	}
	return f, nil
}

func defaultCore(name string) bool {
	for _, p := range DefaultCorePrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// readSmallEntry reads a whole entry of at most limit bytes, checking its
// CRC (zip.File.Open verifies it at EOF).
func readSmallEntry(zf *zip.File, limit int64) ([]byte, error) {
	if zf.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("entry of %d bytes exceeds the limit of %d", zf.UncompressedSize64, limit)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("corrupted or truncated entry: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("entry exceeds the limit of %d bytes", limit)
	}
	return b, nil
}

// elemSize is the byte width of a safetensors dtype.
func elemSize(dt string) int64 {
	switch dt {
	case "F64", "I64":
		return 8
	case "F32", "I32":
		return 4
	case "F16", "BF16", "I16":
		return 2
	case "I8", "U8", "BOOL":
		return 1
	}
	return 0
}

// loadStorage resolves ('storage', torch.XStorage, key, location, numel).
func (f *File) loadStorage(pid any, storages map[string]*Storage, byPath map[string]*zip.File) (any, error) {
	t, ok := pid.(Tuple)
	if !ok || len(t) != 5 {
		return nil, fmt.Errorf("persistent id is a %s, want a 5-tuple ('storage', type, key, location, numel)", typeName(pid))
	}
	if s, _ := t[0].(string); s != "storage" {
		return nil, fmt.Errorf("persistent id of kind %v, want 'storage'", t[0])
	}
	g, ok := t[1].(Global)
	dt := storageDTypes[g.Name]
	if !ok || g.Module != "torch" || dt == "" {
		return nil, fmt.Errorf("storage type %v is not supported", t[1])
	}
	key, ok := t[2].(string)
	if !ok || key == "" || strings.ContainsAny(key, "/\\") || key == "." || key == ".." {
		return nil, fmt.Errorf("bad storage key %v", t[2])
	}
	loc, _ := t[3].(string)
	numel, ok := t[4].(int64)
	if !ok || numel < 0 {
		return nil, fmt.Errorf("storage %s: bad element count %v", key, t[4])
	}
	if s, ok := storages[key]; ok {
		if s.DType != dt || s.Numel != numel {
			return nil, fmt.Errorf("storage %s is described twice, differently", key)
		}
		return s, nil
	}
	zf, ok := byPath[f.archive+"/data/"+key]
	if !ok {
		return nil, fmt.Errorf("storage %s: entry %s/data/%s is missing from the archive", key, f.archive, key)
	}
	es := elemSize(dt)
	if numel > math.MaxInt64/es || uint64(numel*es) > zf.UncompressedSize64 {
		return nil, fmt.Errorf("storage %s: %d %s elements need %d bytes but entry %s holds %d", key, numel, dt, numel*es, zf.Name, zf.UncompressedSize64)
	}
	s := &Storage{Type: g.Name, DType: dt, Key: key, Location: loc, Numel: numel}
	storages[key] = s
	f.entries[key] = zf
	return s, nil
}

// index finds the state dict and the args in the unpickled object.
func (f *File) index(top any, core func(string) bool) error {
	sd, where, err := findStateDict(top)
	if err != nil {
		return err
	}
	f.stateKey = where
	if d, ok := top.(*Dict); ok {
		if a, ok := d.Get("args"); ok {
			if ad, ok := a.(*Dict); ok {
				f.args = ad
			}
		}
	}
	for i, k := range sd.Keys {
		name, ok := k.(string)
		if !ok {
			return fmt.Errorf("pth: state dict %s has a non-string key %v", where, k)
		}
		t, ok := sd.Vals[i].(*Tensor)
		if !ok {
			continue // non-tensor entries (_extra_state, ...) carry no weights
		}
		name = stripPrefixes(name)
		if _, dup := f.byName[name]; dup {
			return fmt.Errorf("pth: state dict %s holds %s twice (after removing module. prefixes)", where, name)
		}
		f.byName[name] = t
		size := make([]int, len(t.Size))
		for j, s := range t.Size {
			size[j] = int(s)
		}
		info := ckpt.Info{Name: name, DType: ckpt.DType(t.Storage.DType), Shape: size}
		f.all = append(f.all, info)
		if core(name) {
			f.core = append(f.core, info)
		} else {
			g, _, _ := strings.Cut(name, ".")
			f.ignored[g]++
		}
	}
	if err := f.crossCheck(); err != nil {
		return err
	}
	f.meta = f.buildMetadata()
	return nil
}

func stripPrefixes(name string) string {
	for {
		switch {
		case strings.HasPrefix(name, "module."):
			name = name[len("module."):]
		case strings.HasPrefix(name, "_orig_mod."):
			name = name[len("_orig_mod."):]
		default:
			return name
		}
	}
}

// findStateDict looks for the tensors at ckpt['trainer']['unitok'] (UniTok's
// released checkpoint), then 'state_dict', 'model', 'module', then the top
// level itself.
func findStateDict(top any) (*Dict, string, error) {
	d, ok := top.(*Dict)
	if !ok {
		return nil, "", fmt.Errorf("pth: checkpoint holds a %s, not a dict", typeName(top))
	}
	if tr, ok := d.Get("trainer"); ok {
		if trd, ok := tr.(*Dict); ok {
			if u, ok := trd.Get("unitok"); ok {
				if ud, ok := u.(*Dict); ok {
					return ud, "trainer.unitok", nil
				}
				return nil, "", fmt.Errorf("pth: ckpt['trainer']['unitok'] is a %s, not a state dict", typeName(u))
			}
		}
	}
	for _, k := range []string{"state_dict", "model", "module"} {
		if v, ok := d.Get(k); ok {
			if vd, ok := v.(*Dict); ok && hasTensor(vd) {
				return vd, k, nil
			}
		}
	}
	if hasTensor(d) {
		return d, "", nil
	}
	var keys []string
	for _, k := range d.Keys {
		if len(keys) == 10 {
			keys = append(keys, "...")
			break
		}
		keys = append(keys, fmt.Sprint(render(k, 1)))
	}
	return nil, "", fmt.Errorf("pth: no state dict found (looked for trainer.unitok, state_dict, model, and tensors at the top level); top-level keys: [%s]", strings.Join(keys, ", "))
}

func hasTensor(d *Dict) bool {
	for _, v := range d.Vals {
		if _, ok := v.(*Tensor); ok {
			return true
		}
	}
	return false
}

// checkEntry verifies that a storage entry's data lies inside the file.
func (f *File) checkEntry(zf *zip.File) error {
	off, err := zf.DataOffset()
	if err != nil {
		return fmt.Errorf("entry %s: %w", zf.Name, err)
	}
	if off < 0 || zf.CompressedSize64 > uint64(f.size) || off+int64(zf.CompressedSize64) > f.size {
		return fmt.Errorf("entry %s needs bytes up to %d but the file has %d: truncated", zf.Name, uint64(off)+zf.CompressedSize64, f.size)
	}
	return nil
}

// Tensors lists the core tensors in state-dict order.
func (f *File) Tensors() []ckpt.Info { return cloneInfos(f.core) }

// AllTensors lists every tensor of the state dict, core or not.
func (f *File) AllTensors() []ckpt.Info { return cloneInfos(f.all) }

func cloneInfos(in []ckpt.Info) []ckpt.Info {
	out := make([]ckpt.Info, len(in))
	for i, t := range in {
		out[i] = ckpt.Info{Name: t.Name, DType: t.DType, Shape: append([]int(nil), t.Shape...)}
	}
	return out
}

// Ignored counts the non-core tensors per top-level group (the name up to
// its first dot), e.g. {"encoder": 402, "decoder": 220}.
func (f *File) Ignored() map[string]int {
	out := make(map[string]int, len(f.ignored))
	for k, v := range f.ignored {
		out[k] = v
	}
	return out
}

// StateDictKey says where the state dict was found: "trainer.unitok",
// "state_dict", "model", "module", or "" for a bare state dict.
func (f *File) StateDictKey() string { return f.stateKey }

// Metadata returns "format"="pytorch-zip", "state_dict", "causal" (from
// args.causal, else "false": the released April 2025 checkpoint uses full
// attention; the first release needs an explicit causal override),
// "num_heads" only when args records it, and every plain argument as
// "args.<key>".
func (f *File) Metadata() map[string]string {
	out := make(map[string]string, len(f.meta))
	for k, v := range f.meta {
		out[k] = v
	}
	return out
}

func (f *File) buildMetadata() map[string]string {
	m := map[string]string{"format": "pytorch-zip", "state_dict": f.stateKey, "causal": "false"}
	if f.args == nil {
		return m
	}
	for i, k := range f.args.Keys {
		ks, ok := k.(string)
		if !ok {
			continue
		}
		m["args."+ks] = render(f.args.Vals[i], 0)
	}
	if v, ok := argInt(f.args, "num_heads"); ok {
		m["num_heads"] = strconv.FormatInt(v, 10)
	}
	if v, ok := f.args.Get("causal"); ok {
		if b, ok := v.(bool); ok {
			m["causal"] = strconv.FormatBool(b)
		}
	}
	return m
}

func argInt(d *Dict, key string) (int64, bool) {
	v, ok := d.Get(key)
	if !ok {
		return 0, false
	}
	n, ok := v.(int64)
	return n, ok
}

// modelWidths are the encoder widths of the ViTamin models UniTok names in
// args.model.
var modelWidths = map[string]int64{
	"vitamin_small": 384, "vitamin_base": 768, "vitamin_large": 1024, "vitamin_large2": 1024,
	"vitamin_xlarge": 1152,
}

// ModelWidth maps args.model ("vitamin_large", "vitamin_large_256", ...) to
// its width, if known.
func ModelWidth(model string) (int64, bool) {
	m := model
	for {
		if w, ok := modelWidths[m]; ok {
			return w, true
		}
		i := strings.LastIndexByte(m, '_')
		if i < 0 {
			return 0, false
		}
		if _, err := strconv.Atoi(m[i+1:]); err != nil {
			return 0, false
		}
		m = m[:i]
	}
}

// crossCheck compares args' hyper-parameters with the core tensor shapes.
func (f *File) crossCheck() error {
	if f.args == nil {
		return nil
	}
	const projW = "quant_proj.proj.weight"
	const cbFmt = "quantizer.codebooks.%d.codebook.weight"
	if t, ok := f.byName[projW]; ok && len(t.Size) == 2 {
		D, C := t.Size[0], t.Size[1]
		if v, ok := argInt(f.args, "vocab_width"); ok && v != D {
			return fmt.Errorf("pth: args.vocab_width=%d but tensor %s %v gives latent width D=%d", v, projW, t.Size, D)
		}
		if mv, ok := f.args.Get("model"); ok {
			if ms, ok := mv.(string); ok {
				if w, ok := ModelWidth(ms); ok && w != C {
					return fmt.Errorf("pth: args.model=%s is %d wide but tensor %s %v gives width C=%d", ms, w, projW, t.Size, C)
				}
			}
		}
	}
	K := int64(0)
	for {
		if _, ok := f.byName[fmt.Sprintf(cbFmt, K)]; !ok {
			break
		}
		K++
	}
	if K == 0 {
		return nil
	}
	if v, ok := argInt(f.args, "num_codebooks"); ok && v != K {
		return fmt.Errorf("pth: args.num_codebooks=%d but the state dict holds %d codebooks (%s...)", v, K, fmt.Sprintf(cbFmt, 0))
	}
	cb := f.byName[fmt.Sprintf(cbFmt, 0)]
	if v, ok := argInt(f.args, "vocab_size"); ok && len(cb.Size) == 2 && v != K*cb.Size[0] {
		return fmt.Errorf("pth: args.vocab_size=%d but %d codebooks of shape %v (%s) give %d codewords", v, K, cb.Size, fmt.Sprintf(cbFmt, 0), K*cb.Size[0])
	}
	return nil
}

// render formats an argument value as a metadata string: strings as they
// are, bools as true/false, containers Python-like, depth and length bounded.
func render(v any, depth int) string {
	var b strings.Builder
	renderTo(&b, v, depth, true)
	s := b.String()
	if len(s) > 1024 {
		s = s[:1021] + "..."
	}
	return s
}

func renderTo(b *strings.Builder, v any, depth int, top bool) {
	if b.Len() > 1024 {
		return
	}
	if depth > 4 {
		b.WriteString("...")
		return
	}
	seq := func(open, close string, items []any) {
		b.WriteString(open)
		for i, it := range items {
			if i > 0 {
				b.WriteString(", ")
			}
			if b.Len() > 1024 {
				b.WriteString("...")
				break
			}
			renderTo(b, it, depth+1, false)
		}
		b.WriteString(close)
	}
	switch x := v.(type) {
	case nil, None:
		b.WriteString("None")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case string:
		if top {
			b.WriteString(x)
		} else {
			b.WriteString(strconv.Quote(x))
		}
	case []byte:
		fmt.Fprintf(b, "b%q", x)
	case Tuple:
		seq("(", ")", x)
	case *List:
		seq("[", "]", x.Items)
	case *Dict:
		b.WriteString("{")
		for i := range x.Keys {
			if i > 0 {
				b.WriteString(", ")
			}
			if b.Len() > 1024 {
				b.WriteString("...")
				break
			}
			renderTo(b, x.Keys[i], depth+1, false)
			b.WriteString(": ")
			renderTo(b, x.Vals[i], depth+1, false)
		}
		b.WriteString("}")
	case Global:
		b.WriteString(x.String())
	case *Tensor:
		fmt.Fprintf(b, "tensor(%s %v)", x.Storage.DType, x.Size)
	case *Storage:
		fmt.Fprintf(b, "storage(%s %d)", x.DType, x.Numel)
	default:
		fmt.Fprint(b, typeName(v))
	}
}

// Args returns the checkpoint's ckpt['args'] rendered as strings (nil when
// it has none).
func (f *File) Args() map[string]string {
	if f.args == nil {
		return nil
	}
	out := map[string]string{}
	for i, k := range f.args.Keys {
		if ks, ok := k.(string); ok {
			out[ks] = render(f.args.Vals[i], 0)
		}
	}
	return out
}

// ReadRaw returns the named tensor's elements row-major and contiguous, in
// little-endian byte order, as stored (no dtype conversion), with its Info.
// Any tensor of the state dict may be read, core or not.
func (f *File) ReadRaw(name string) ([]byte, ckpt.Info, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, ckpt.Info{}, fmt.Errorf("pth: tensor %s: file is closed", name)
	}
	t, ok := f.byName[name]
	if !ok {
		return nil, ckpt.Info{}, fmt.Errorf("pth: no tensor %s in the checkpoint", name)
	}
	info := ckpt.Info{Name: name, DType: ckpt.DType(t.Storage.DType)}
	for _, s := range t.Size {
		info.Shape = append(info.Shape, int(s))
	}
	b, err := f.readTensor(t)
	if err != nil {
		return nil, info, fmt.Errorf("pth: tensor %s: %w", name, err)
	}
	return b, info, nil
}

// ReadFloat32 returns the named tensor as float32 (from F32, F16, BF16 or
// F64), row-major and contiguous, in a fresh slice. Integer tensors are
// refused; read them with ReadInt64.
func (f *File) ReadFloat32(name string) ([]float32, error) {
	v, _, err := f.float32s(name, false)
	return v, err
}

// ViewFloat32 is ReadFloat32 without the copy where the file is mapped and
// the tensor is F32, stored uncompressed, contiguous, little-endian and
// 4-byte aligned: the result is then a view of the mapping (aliased true),
// read-only and valid until Close. Other tensors are converted (or copied)
// once into a fresh slice, from the mapping when there is one. Reading the
// mapping of a file truncated underneath faults (SIGBUS): callers that
// must survive that run under debug.SetPanicOnFault.
func (f *File) ViewFloat32(name string) (v []float32, aliased bool, err error) {
	return f.float32s(name, true)
}

// Release drops the resident pages of the named tensor's bytes in the
// mapping (see ckpt.Viewer); its views stay valid. A no-op when the file is
// not mapped.
func (f *File) Release(name string) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed || !f.mapped {
		return
	}
	if t, ok := f.byName[name]; ok {
		if lo, n, ok := f.mappedRange(t); ok {
			mmapfile.Release(f.data, int(lo), int(n))
		}
	}
}

func (f *File) float32s(name string, view bool) ([]float32, bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return nil, false, fmt.Errorf("pth: tensor %s: file is closed", name)
	}
	t, ok := f.byName[name]
	if !ok {
		return nil, false, fmt.Errorf("pth: no tensor %s in the checkpoint", name)
	}
	dt := t.Storage.DType
	// Copies (ReadFloat32) are read with pread, as before there was a
	// mapping: a file truncated underneath gives an error, not a fault
	// (views are read inside the image loader's fault guard).
	if lo, n, ok := f.mappedRange(t); ok && view {
		b := f.data[lo : lo+n : lo+n]
		zf := f.entries[t.Storage.Key]
		if uint64(n) == zf.UncompressedSize64 && crc32.ChecksumIEEE(b) != zf.CRC32 {
			return nil, false, fmt.Errorf("pth: tensor %s: entry %s: CRC-32 mismatch: the file is corrupted", name, zf.Name)
		}
		if dt == "F32" && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 == 0 {
			return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), n/4), true, nil
		}
		out, err := toFloat32(b, dt) // converted once, from the mapping
		if err != nil {
			return nil, false, fmt.Errorf("pth: tensor %s: %w", name, err)
		}
		if f.mapped {
			mmapfile.Release(f.data, int(lo), int(n)) // copied out
		}
		return out, false, nil
	}
	b, err := f.readTensor(t)
	if err != nil {
		return nil, false, fmt.Errorf("pth: tensor %s: %w", name, err)
	}
	out, err := toFloat32(b, dt)
	if err != nil {
		return nil, false, fmt.Errorf("pth: tensor %s: %w", name, err)
	}
	return out, false, nil
}

// mappedRange locates tensor t's bytes in f.data when they can be used in
// place: the file is in memory, the tensor a non-empty contiguous view of a
// stored (uncompressed) entry, the archive and the host little-endian.
// Anything else is read through readTensor, which also reports what is
// wrong with it.
func (f *File) mappedRange(t *Tensor) (lo, n int64, ok bool) {
	if f.data == nil || f.bigEndian || !hostLittle || !t.Contiguous() {
		return 0, 0, false
	}
	zf := f.entries[t.Storage.Key]
	span, err := t.span()
	if err != nil || span == 0 || zf.Method != zip.Store || zf.CompressedSize64 != zf.UncompressedSize64 || f.checkEntry(zf) != nil {
		return 0, 0, false
	}
	es := elemSize(t.Storage.DType)
	off, n := t.Offset*es, span*es
	if off < 0 || uint64(off+n) > zf.UncompressedSize64 {
		return 0, 0, false
	}
	start, err := zf.DataOffset()
	if err != nil || start+off+n > int64(len(f.data)) {
		return 0, 0, false
	}
	return start + off, n, true
}

// ReadInt64 returns an integer or bool tensor as int64, row-major.
func (f *File) ReadInt64(name string) ([]int64, error) {
	b, info, err := f.ReadRaw(name)
	if err != nil {
		return nil, err
	}
	es := int(elemSize(string(info.DType)))
	out := make([]int64, len(b)/es)
	for i := range out {
		p := b[i*es:]
		switch info.DType {
		case "I64":
			out[i] = int64(binary.LittleEndian.Uint64(p))
		case "I32":
			out[i] = int64(int32(binary.LittleEndian.Uint32(p)))
		case "I16":
			out[i] = int64(int16(binary.LittleEndian.Uint16(p)))
		case "I8":
			out[i] = int64(int8(p[0]))
		case "U8", "BOOL":
			out[i] = int64(p[0])
		default:
			return nil, fmt.Errorf("pth: tensor %s is %s, not an integer tensor", name, info.DType)
		}
	}
	return out, nil
}

func toFloat32(b []byte, dt string) ([]float32, error) {
	switch dt {
	case "F32":
		out := make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out, nil
	case "BF16":
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
		return out, nil
	case "F16":
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = HalfToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return out, nil
	case "F64":
		out := make([]float32, len(b)/8)
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
		return out, nil
	}
	return nil, fmt.Errorf("dtype %s cannot be read as float32", dt)
}

// HalfToFloat32 converts an IEEE 754 binary16 value exactly.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half: man * 2^-24, exact in float32.
	v := float32(man) / (1 << 24)
	if sign != 0 {
		v = -v
	}
	return v
}

// readTensor reads a view's elements, gathering by strides when the view is
// not contiguous, and byte-swaps big-endian archives.
func (f *File) readTensor(t *Tensor) ([]byte, error) {
	zf := f.entries[t.Storage.Key]
	es := elemSize(t.Storage.DType)
	span, err := t.span()
	if err != nil {
		return nil, err
	}
	if span == 0 {
		return []byte{}, nil
	}
	numel := t.Numel()
	if numel > t.Storage.Numel {
		// Reading an expanded (stride 0) view would allocate more than the
		// file holds; the core never has one.
		return nil, fmt.Errorf("view of %d elements is larger than its storage of %d (expanded views are not supported)", numel, t.Storage.Numel)
	}
	raw, err := f.readEntryRange(zf, t.Offset*es, span*es)
	if err != nil {
		return nil, err
	}
	out := raw
	if !t.Contiguous() {
		out = make([]byte, numel*es)
		idx := make([]int64, len(t.Size))
		src := int64(0)
		for i := int64(0); i < numel; i++ {
			copy(out[i*es:(i+1)*es], raw[src*es:(src+1)*es])
			for d := len(idx) - 1; d >= 0; d-- {
				idx[d]++
				src += t.Stride[d]
				if idx[d] < t.Size[d] {
					break
				}
				src -= idx[d] * t.Stride[d]
				idx[d] = 0
			}
		}
	}
	if f.bigEndian && es > 1 {
		for i := int64(0); i < int64(len(out)); i += es {
			e := out[i : i+es]
			for a, b := 0, len(e)-1; a < b; a, b = a+1, b-1 {
				e[a], e[b] = e[b], e[a]
			}
		}
	}
	return out, nil
}

// readEntryRange reads n bytes at offset off of a storage entry. Stored
// (uncompressed) entries, which torch.save writes, are read in place;
// compressed ones are streamed. A read of the whole entry is checked
// against its CRC-32.
func (f *File) readEntryRange(zf *zip.File, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || uint64(off+n) > zf.UncompressedSize64 {
		return nil, fmt.Errorf("bytes [%d, %d) lie outside entry %s of %d bytes", off, off+n, zf.Name, zf.UncompressedSize64)
	}
	if err := f.checkEntry(zf); err != nil {
		return nil, err
	}
	whole := off == 0 && uint64(n) == zf.UncompressedSize64
	if zf.Method == zip.Store {
		if zf.CompressedSize64 != zf.UncompressedSize64 {
			return nil, fmt.Errorf("stored entry %s has inconsistent sizes", zf.Name)
		}
		start, _ := zf.DataOffset()
		buf := make([]byte, n)
		if _, err := f.ra.ReadAt(buf, start+off); err != nil {
			return nil, fmt.Errorf("entry %s: %w (truncated file?)", zf.Name, err)
		}
		if whole && crc32.ChecksumIEEE(buf) != zf.CRC32 {
			return nil, fmt.Errorf("entry %s: CRC-32 mismatch: the file is corrupted", zf.Name)
		}
		return buf, nil
	}
	// Deflate expands at most ~1032:1; a larger claim is a zip bomb.
	if zf.UncompressedSize64/1032 > zf.CompressedSize64+1 {
		return nil, fmt.Errorf("entry %s claims %d bytes from %d compressed: implausible", zf.Name, zf.UncompressedSize64, zf.CompressedSize64)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("entry %s: %w", zf.Name, err)
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		return nil, fmt.Errorf("entry %s: %w", zf.Name, err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("entry %s: %w", zf.Name, err)
	}
	if whole {
		// Reading to EOF makes archive/zip verify the CRC.
		if _, err := io.Copy(io.Discard, rc); err != nil {
			return nil, fmt.Errorf("entry %s: %w", zf.Name, err)
		}
	}
	return buf, nil
}

// Close releases the file. It is idempotent and nil-safe.
func (f *File) Close() error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var err error
	if f.mapped {
		err = mmapfile.Unmap(f.data)
	}
	f.data, f.mapped = nil, false
	if f.closer != nil {
		if cerr := f.closer.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
