package pth

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// smallCore is a consistent little core: C=8, D=4, K=2, V=3.
func smallCore() []tspec {
	return []tspec{
		{name: "quant_proj.proj.weight", data: f32bytes(seq(32, 0.5)), shape: []int64{4, 8}, param: true},
		{name: "quant_proj.proj.bias", data: f32bytes(seq(4, -1)), shape: []int64{4}, param: true},
		{name: "quantizer.codebooks.0.codebook.weight", data: f32bytes(seq(6, 0.25)), shape: []int64{3, 2}},
		{name: "quantizer.codebooks.1.codebook.weight", data: f32bytes(seq(6, -0.25)), shape: []int64{3, 2}},
		{name: "encoder.blocks.0.attn.qkv.weight", data: f32bytes(seq(12, 1)), shape: []int64{3, 4}},
		{name: "encoder.pos_embed", data: f32bytes(seq(4, 1)), shape: []int64{4}},
		{name: "decoder.head.weight", class: "HalfStorage", data: f16bytes([]uint16{0x3c00, 0x4000}), shape: []int64{2}},
		{name: "text.tokens", class: "LongStorage", data: []byte{7, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, shape: []int64{2}},
	}
}

func unitokArgs() kv {
	return kv{
		"model", "vitamin_tiny", "vocab_size", 6, "vocab_width", 4, "num_codebooks", 2,
		"quant_proj", "attn", "vq_beta", 0.25, "grad_ckpt", false, "local_dir", nil,
		"betas", []any{0.9, 0.95},
	}
}

func TestOpenTrainerLayout(t *testing.T) {
	spec := ckptSpec{args: unitokArgs(), tensors: smallCore()}
	f, err := openBytes(t, spec.zip(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.StateDictKey() != "trainer.unitok" {
		t.Errorf("state dict at %q", f.StateDictKey())
	}
	var names []string
	for _, ti := range f.Tensors() {
		names = append(names, ti.Name)
	}
	want := []string{"quant_proj.proj.weight", "quant_proj.proj.bias", "quantizer.codebooks.0.codebook.weight", "quantizer.codebooks.1.codebook.weight"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("core tensors %v, want %v", names, want)
	}
	if len(f.AllTensors()) != 8 {
		t.Errorf("AllTensors has %d, want 8", len(f.AllTensors()))
	}
	if ig := f.Ignored(); !reflect.DeepEqual(ig, map[string]int{"encoder": 2, "decoder": 1, "text": 1}) {
		t.Errorf("Ignored = %v", ig)
	}
	m := f.Metadata()
	for k, v := range map[string]string{
		"format": "pytorch-zip", "causal": "false", "args.model": "vitamin_tiny", "args.vocab_size": "6",
		"args.vq_beta": "0.25", "args.grad_ckpt": "false", "args.local_dir": "None", "args.betas": "[0.9, 0.95]",
		"state_dict": "trainer.unitok",
	} {
		if m[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, m[k], v)
		}
	}
	if _, ok := m["num_heads"]; ok {
		t.Error("num_heads reported though args has none")
	}
	for _, ts := range smallCore() {
		if ts.class != "" {
			continue
		}
		got, err := f.ReadFloat32(ts.name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f32bytes(got), ts.data) {
			t.Errorf("%s: read %v", ts.name, got)
		}
	}
	h, err := f.ReadFloat32("decoder.head.weight")
	if err != nil || !reflect.DeepEqual(h, []float32{1, 2}) {
		t.Errorf("F16 read: %v %v", h, err)
	}
	ids, err := f.ReadInt64("text.tokens")
	if err != nil || !reflect.DeepEqual(ids, []int64{7, -1}) {
		t.Errorf("I64 read: %v %v", ids, err)
	}
	if _, err := f.ReadFloat32("text.tokens"); err == nil || !strings.Contains(err.Error(), "I64") {
		t.Errorf("ReadFloat32 of an I64 tensor: %v", err)
	}
	if _, err := f.ReadFloat32("nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown tensor: %v", err)
	}
	f.Close()
	f.Close() // idempotent
	if _, err := f.ReadFloat32("quant_proj.proj.bias"); err == nil {
		t.Error("read after Close succeeded")
	}
	var nilFile *File
	if nilFile.Close() != nil {
		t.Error("nil Close")
	}
}

func TestLayouts(t *testing.T) {
	for _, tc := range []struct {
		spec  ckptSpec
		where string
	}{
		{ckptSpec{layout: "bare", tensors: smallCore()}, ""},
		{ckptSpec{layout: "state_dict", tensors: smallCore()}, "state_dict"},
		{ckptSpec{prefix: "module.", tensors: smallCore(), archive: "unitok_tokenizer"}, "trainer.unitok"},
		{ckptSpec{prefix: "module._orig_mod.", tensors: smallCore(), deflate: true}, "trainer.unitok"},
	} {
		f, err := openBytes(t, tc.spec.zip(t))
		if err != nil {
			t.Fatalf("%+v: %v", tc.spec.layout, err)
		}
		if f.StateDictKey() != tc.where || len(f.Tensors()) != 4 {
			t.Errorf("layout %q prefix %q: at %q with %d core tensors", tc.spec.layout, tc.spec.prefix, f.StateDictKey(), len(f.Tensors()))
		}
		w, err := f.ReadFloat32("quant_proj.proj.weight")
		if err != nil || w[31] != 16 {
			t.Errorf("read: %v %v", err, w)
		}
	}
}

func TestViewsAndDTypes(t *testing.T) {
	shared := f32bytes(seq(24, 1)) // one storage of 24 elements: 1..24
	bf := []float32{1.5, -2, 0.0078125, 3}
	spec := ckptSpec{tensors: []tspec{
		// A (4, 2) view at offset 8 of the shared storage: 9..16.
		{name: "quantizer.a", key: "s", data: shared, shape: []int64{4, 2}, offset: 8},
		// A transposed (3, 2) view: storage rows of 3 read as columns.
		{name: "quantizer.t", key: "s", data: shared, shape: []int64{3, 2}, stride: []int64{1, 3}, noWrite: true},
		// Every other element, with an offset.
		{name: "quantizer.step", key: "s", data: shared, shape: []int64{5}, stride: []int64{2}, offset: 1, noWrite: true},
		{name: "quantizer.bf", class: "BFloat16Storage", data: bf16bytes(bf), shape: []int64{2, 2}},
		{name: "quantizer.scalar", data: f32bytes([]float32{7}), shape: []int64{}},
		{name: "quantizer.empty", data: f32bytes(nil), shape: []int64{0, 3}},
		{name: "quantizer.f16", class: "HalfStorage", data: f16bytes([]uint16{0x0001, 0x8400, 0x7bff, 0xfc00}), shape: []int64{4}},
		{name: "quantizer.f64", class: "DoubleStorage", data: binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.5)), shape: []int64{1}},
	}}
	for _, big := range []bool{false, true} {
		spec.bigEndian = big
		f, err := openBytes(t, spec.zip(t))
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string][]float32{
			"quantizer.a":      {9, 10, 11, 12, 13, 14, 15, 16},
			"quantizer.t":      {1, 4, 2, 5, 3, 6},
			"quantizer.step":   {2, 4, 6, 8, 10},
			"quantizer.bf":     bf,
			"quantizer.scalar": {7},
			"quantizer.empty":  {},
			"quantizer.f16":    {5.9604645e-08, -6.1035156e-05, 65504, float32(math.Inf(-1))},
			"quantizer.f64":    {0.5},
		} {
			got, err := f.ReadFloat32(name)
			if err != nil {
				t.Fatalf("big=%v %s: %v", big, name, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("big=%v %s = %v, want %v", big, name, got, want)
			}
		}
		f.Close()
	}
}

func TestHalfToFloat32Exhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		got := HalfToFloat32(uint16(h))
		// Reference: decode by formula in float64.
		sign := 1.0
		if h&0x8000 != 0 {
			sign = -1
		}
		e, m := (h>>10)&0x1f, h&0x3ff
		var want float64
		switch {
		case e == 0x1f && m == 0:
			want = math.Inf(int(sign))
		case e == 0x1f:
			if !math.IsNaN(float64(got)) {
				t.Fatalf("%#04x: want NaN, got %v", h, got)
			}
			continue
		case e == 0:
			want = sign * float64(m) * math.Pow(2, -24)
		default:
			want = sign * (1 + float64(m)/1024) * math.Pow(2, float64(e-15))
		}
		if float64(got) != want || math.Signbit(float64(got)) != (sign < 0) {
			t.Fatalf("%#04x: got %v, want %v", h, got, want)
		}
	}
}

func TestArgsCrossCheck(t *testing.T) {
	for _, tc := range []struct {
		key  string
		val  any
		want string
	}{
		{"vocab_width", 8, "args.vocab_width=8 but tensor quant_proj.proj.weight [4 8] gives latent width D=4"},
		{"num_codebooks", 3, "args.num_codebooks=3 but the state dict holds 2 codebooks"},
		{"vocab_size", 3, "args.vocab_size=3 but 2 codebooks of shape [3 2]"},
		{"model", "vitamin_large", "args.model=vitamin_large is 1024 wide but tensor quant_proj.proj.weight [4 8] gives width C=8"},
		{"model", "vitamin_base_256", "args.model=vitamin_base_256 is 768 wide"},
	} {
		args := unitokArgs()
		for i := 0; i < len(args); i += 2 {
			if args[i] == tc.key {
				args[i+1] = tc.val
			}
		}
		_, err := openBytes(t, ckptSpec{args: args, tensors: smallCore()}.zip(t))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%v: error %v, want %q", tc.key, tc.val, err, tc.want)
		}
	}
	// num_heads and causal are passed through when args has them.
	args := append(unitokArgs(), "num_heads", 16, "causal", true)
	f, err := openBytes(t, ckptSpec{args: args, tensors: smallCore()}.zip(t))
	if err != nil {
		t.Fatal(err)
	}
	if m := f.Metadata(); m["num_heads"] != "16" || m["causal"] != "true" {
		t.Errorf("metadata %v", m)
	}
}

func TestNamespaceArgs(t *testing.T) {
	// args as argparse.Namespace: NEWOBJ then BUILD with the attribute dict.
	p := newPK()
	p.op(opEmptyDict).put().op(opMark)
	p.str("args").global("argparse", "Namespace").op(opEmptyTuple, opNewObj).put()
	p.dict(kv{"vocab_width", 4, "num_heads", 2, "model", "x"}).op(opBuild)
	p.str("trainer").dict(kv{"unitok", func(p *pk) {
		p.orderedDict(kv{"quantizer.codebooks.0.codebook.weight", func(p *pk) {
			p.tensor(tspec{name: "q", class: "FloatStorage", key: "0", numel: 6, shape: []int64{3, 2}, stride: []int64{2, 1}})
		}})
		// state_dict._metadata, as torch attaches it.
		p.dict(kv{"_metadata", func(p *pk) { p.orderedDict(kv{"", kv{"version", 1}}) }}).op(opBuild)
	}})
	p.op(opSetItems, opStop)
	b := zipOf(t, map[string][]byte{"a/data.pkl": p.Bytes(), "a/data/0": f32bytes(seq(6, 1))})
	f, err := openBytes(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if m := f.Metadata(); m["num_heads"] != "2" || m["args.model"] != "x" {
		t.Errorf("metadata %v", m)
	}
}

func zipOf(t testing.TB, entries map[string][]byte) []byte {
	var buf bytes.Buffer
	w := newZipWriter(&buf)
	for _, name := range sortedKeys(entries) {
		w.add(t, name, entries[name])
	}
	w.close(t)
	return buf.Bytes()
}

func TestRefusedGlobals(t *testing.T) {
	for _, g := range [][2]string{
		{"os", "system"}, {"posix", "system"}, {"builtins", "eval"}, {"__builtin__", "eval"},
		{"builtins", "exec"}, {"subprocess", "Popen"}, {"torch", "load"}, {"numpy", "load"},
		{"torch._utils", "_rebuild_device_tensor_from_numpy"}, {"collections", "defaultdict"},
	} {
		want := "refusing to load global " + strings.Replace(g[0], "__builtin__", "builtins", 1) + "." + g[1]
		// GLOBAL form.
		p := newPK().global(g[0], g[1]).str("id").op(opTuple1, opReduce, opStop)
		_, err := Unpickle(p.Bytes(), nil)
		var rg *RefusedGlobalError
		if err == nil || !strings.Contains(err.Error(), want) || !errors.As(err, &rg) {
			t.Errorf("GLOBAL %v: %v", g, err)
		}
		if !strings.HasPrefix(err.Error(), "pth: refusing to load global") {
			t.Errorf("error %q should start with the refusal", err)
		}
		// STACK_GLOBAL form (protocol 4).
		p = newPK().str(g[0]).str(g[1]).op(opStackGlobal, opMemoize).op(opStop)
		if _, err := Unpickle(p.Bytes(), nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("STACK_GLOBAL %v: %v", g, err)
		}
	}
	// Allowed globals that are not callables cannot be called.
	p := newPK().global("torch", "FloatStorage").op(opEmptyTuple, opReduce, opStop)
	if _, err := Unpickle(p.Bytes(), nil); err == nil || !strings.Contains(err.Error(), "cannot call torch.FloatStorage") {
		t.Errorf("calling a storage class: %v", err)
	}
	p = newPK().global("torch", "float32").op(opEmptyTuple, opNewObj, opStop)
	if _, err := Unpickle(p.Bytes(), nil); err == nil || !strings.Contains(err.Error(), "cannot instantiate torch.float32") {
		t.Errorf("NEWOBJ of a dtype: %v", err)
	}
	// A malicious state-dict value inside a checkpoint.
	mal := newPK().dict(kv{"trainer", kv{"unitok", func(p *pk) {
		p.global("os", "system").str("echo pwned").op(opTuple1, opReduce)
	}}}).op(opStop)
	_, err := openBytes(t, zipOf(t, map[string][]byte{"archive/data.pkl": mal.Bytes()}))
	if err == nil || !strings.Contains(err.Error(), "pth: refusing to load global os.system") {
		t.Errorf("malicious checkpoint: %v", err)
	}
}

func TestUnpickleValues(t *testing.T) {
	p := newPK()
	p.op(opFrame, 0, 0, 0, 0, 0, 0, 0, 0)
	p.op(opEmptyList).put().op(opMark)
	p.int(-5).int(300).int(1<<40).op(opLong1, 2, 0x00, 0x80) // -32768
	p.op(opLong1, 0)
	p.float(-1.25).op(opNone, opNewTrue)
	p.op(opShortBinUni, 2, 'h', 'i', opMemoize)
	p.op(opShortBinBytes, 3, 1, 2, 3)
	p.op(opShortBinString, 2, 'o', 'k')
	p.global("_codecs", "encode").str("\u00e9").str("latin1").op(opTuple2, opReduce)
	p.global("__builtin__", "set").op(opEmptyList, opMark).int(1).int(2).op(opAppends, opTuple1, opReduce)
	p.global("torch", "Size").int(2).int(3).op(opTuple2, opTuple1, opReduce)
	p.global("torch", "device").str("cuda").int(1).op(opTuple2, opReduce)
	p.global("torch", "bfloat16")
	p.op(opBinGet, 0, opPop) // push the list itself, then drop it
	p.op(opDup, opPop)
	p.op(opAppends, opStop)
	v, err := Unpickle(p.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := render(v, 0)
	want := `[-5, 300, 1099511627776, -32768, 0, -1.25, None, true, "hi", b"\x01\x02\x03", "ok", b"\xe9", [1, 2], (2, 3), "cuda:1", torch.bfloat16]`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestUnpickleErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "without STOP"},
		{"no stop", []byte{opProto, 2, opNone}, "without STOP"},
		{"underflow", []byte{opProto, 2, opStop}, "stack underflow"},
		{"long string", []byte{opBinUnicode, 0xff, 0xff, 0xff, 0x7f, 'a', opStop}, "exceeds"},
		{"bad memo", []byte{opBinGet, 7, opStop}, "memo key 7 not found"},
		{"setitem on list", []byte{opEmptyList, opNone, opNone, opSetItem, opStop}, "SETITEM on list"},
		{"append on dict", []byte{opEmptyDict, opNone, opAppend, opStop}, "APPEND on dict"},
		{"unhashable", []byte{opEmptyDict, opEmptyList, opNone, opSetItem, opStop}, "unhashable"},
		{"pop mark without mark", []byte{opPopMark, opStop}, "no MARK"},
		{"persid refused", []byte{opNone, opBinPersID, opStop}, "persistent ids are not allowed"},
		{"inst", []byte{opInst, 'o', 's', '\n', 's', 'y', 's', 't', 'e', 'm', '\n', opStop}, "not supported"},
		{"ext", []byte{opExt1, 1, opStop}, "not supported"},
		{"protocol", []byte{opProto, 9, opStop}, "protocol 9"},
		{"unknown", []byte{0xff}, "unknown opcode"},
		{"huge long", append([]byte{opLong4, 0, 0, 1, 0}, make([]byte, 65536)...), "too long"},
		{"bad utf8", []byte{opShortBinUni, 1, 0xff, opStop}, "UTF-8"},
		{"reduce non-tuple", []byte{opGlobal, 'c', 'o', 'l', 'l', 'e', 'c', 't', 'i', 'o', 'n', 's', '\n', 'O', 'r', 'd', 'e', 'r', 'e', 'd', 'D', 'i', 'c', 't', '\n', opNone, opReduce, opStop}, "not a tuple"},
	} {
		_, err := Unpickle(tc.data, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestUnpickleLimits(t *testing.T) {
	// More MARKs than the stack allows.
	b := bytes.Repeat([]byte{opMark}, maxStack+1)
	if _, err := Unpickle(append(b, opStop), nil); err == nil || !strings.Contains(err.Error(), "stack exceeds") {
		t.Errorf("deep marks: %v", err)
	}
	// A self-referencing list renders without recursing forever.
	p := newPK().op(opEmptyList).put().op(opBinGet, 0, opAppend, opStop)
	v, err := Unpickle(p.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := render(v, 0); !strings.Contains(s, "...") {
		t.Errorf("cyclic render %q", s)
	}
}

func TestCheckpointErrors(t *testing.T) {
	good := ckptSpec{args: unitokArgs(), tensors: smallCore()}.zip(t)
	tooBig := smallCore()
	tooBig[0].numel = 33 // storage claims more than its entry holds
	badView := smallCore()
	badView[0].offset = 1 // view runs past the storage end
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"not zip", []byte("PK\x03\x04 not really"), "not a readable zip"},
		{"no pickle", zipOf(t, map[string][]byte{"a/b.txt": []byte("x")}), "no <archive>/data.pkl"},
		{"missing storage", zipOf(t, map[string][]byte{"archive/data.pkl": ckptSpec{tensors: smallCore()}.pickle()}), "entry archive/data/0 is missing"},
		{"storage too small", ckptSpec{tensors: tooBig}.zip(t), "need 132 bytes but entry archive/data/0 holds 128"},
		{"view outside storage", ckptSpec{tensors: badView}.zip(t), "reaches element 33 of a storage of 32"},
		{"no state dict", zipOf(t, map[string][]byte{"archive/data.pkl": newPK().dict(kv{"x", 1}).op(opStop).Bytes()}), "no state dict found"},
		{"bad byteorder", zipOf(t, map[string][]byte{"archive/data.pkl": {opNone, opStop}, "archive/byteorder": []byte("middle")}), "want little or big"},
	} {
		_, err := openBytes(t, tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	// Every truncation is refused with an error, never a panic.
	for n := 0; n < len(good); n += 7 {
		if _, err := openBytes(t, good[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: opened", n, len(good))
		}
	}
}

func TestCorruptedData(t *testing.T) {
	spec := ckptSpec{args: unitokArgs(), tensors: smallCore()}
	good := spec.zip(t)
	// Flip a byte inside storage 0 (quant_proj.proj.weight): the read of the
	// whole storage fails its CRC.
	data0 := spec.tensors[0].data
	i := bytes.Index(good, data0)
	if i < 0 {
		t.Fatal("storage bytes not found in the zip")
	}
	bad := append([]byte(nil), good...)
	bad[i+5] ^= 0x40
	f, err := openBytes(t, bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFloat32("quant_proj.proj.weight"); err == nil || !strings.Contains(err.Error(), "CRC-32 mismatch") {
		t.Errorf("corrupted storage: %v", err)
	}
	// Flip a byte of data.pkl: its CRC check fails at open.
	j := bytes.Index(good, []byte("trainer"))
	bad = append([]byte(nil), good...)
	bad[j] ^= 0x01
	if _, err := openBytes(t, bad); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("corrupted pickle: %v", err)
	}
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.pth")
	if err := os.WriteFile(p, ckptSpec{args: unitokArgs(), tensors: smallCore()}.zip(t), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFloat32("quantizer.codebooks.1.codebook.weight"); err != nil {
		t.Error(err)
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if _, err := Open(filepath.Join(dir, "missing.pth")); err == nil {
		t.Error("opened a missing file")
	}
}

// Fixtures written by torch.save (testdata/pth, made by the PyTorch helper).
func fixture(t *testing.T, name string) string {
	p := filepath.Join("..", "..", "testdata", "pth", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("fixture %s is missing", p)
	}
	return p
}

func TestTorchFixtures(t *testing.T) {
	fp, err := Open(fixture(t, "small_fp32.pth"))
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	bf, err := Open(fixture(t, "small_bf16.pth"))
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	bare, err := Open(fixture(t, "bare_state_dict.pth"))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if fp.StateDictKey() != "trainer.unitok" || bare.StateDictKey() != "" {
		t.Errorf("state dicts at %q and %q", fp.StateDictKey(), bare.StateDictKey())
	}
	if len(fp.Tensors()) == 0 || !reflect.DeepEqual(fp.Tensors(), bare.Tensors()) {
		t.Fatalf("core tensors differ: %v vs %v", fp.Tensors(), bare.Tensors())
	}
	if len(fp.Ignored()) == 0 {
		t.Error("no ignored groups in a checkpoint with encoder/decoder weights")
	}
	if m := fp.Metadata(); m["args.vocab_width"] == "" || m["format"] != "pytorch-zip" {
		t.Errorf("metadata %v", m)
	}
	for _, ti := range fp.Tensors() {
		a, err := fp.ReadFloat32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bare.ReadFloat32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s differs between small_fp32.pth and bare_state_dict.pth", ti.Name)
		}
		c, err := bf.ReadFloat32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range a {
			if c[i] != roundBF16(a[i]) {
				t.Fatalf("%s[%d]: bf16 %v, want round(%v) = %v", ti.Name, i, c[i], a[i], roundBF16(a[i]))
			}
		}
	}
	_, err = Open(fixture(t, "malicious.pth"))
	if err == nil || !strings.Contains(err.Error(), "refusing to load global") {
		t.Errorf("malicious.pth: %v", err)
	}
}

// roundBF16 rounds to bfloat16, nearest-even, as torch's .to(bfloat16).
func roundBF16(x float32) float32 {
	b := math.Float32bits(x)
	b += 0x7fff + (b>>16)&1
	return math.Float32frombits(b &^ 0xffff)
}

func TestHashKeyBlowup(t *testing.T) {
	// t0 = (); t_{i+1} = (t_i, t_i) via the memo, 40 levels: a key whose
	// naive hash would visit 2^40 nodes.
	p := newPK().op(opEmptyDict).put()
	p.op(opEmptyTuple, opBinPut, 1, opPop)
	for i := 0; i < 40; i++ {
		p.op(opBinGet, byte(1+i), opBinGet, byte(1+i), opTuple2, opBinPut, byte(2+i), opPop)
	}
	p.op(opBinGet, 41, opNone, opSetItem, opStop)
	if _, err := Unpickle(p.Bytes(), nil); err == nil || !strings.Contains(err.Error(), "too deeply") {
		t.Errorf("error %v", err)
	}
}

func TestConcurrentReads(t *testing.T) {
	f, err := openBytes(t, ckptSpec{args: unitokArgs(), tensors: smallCore()}.zip(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan error)
	for g := 0; g < 8; g++ {
		go func() {
			var err error
			for i := 0; i < 50 && err == nil; i++ {
				for _, ti := range f.Tensors() {
					if _, err = f.ReadFloat32(ti.Name); err != nil {
						break
					}
				}
			}
			done <- err
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestExpandedView(t *testing.T) {
	// A non-core expanded buffer does not stop Open; reading it is refused.
	specs := append(smallCore(), tspec{name: "encoder.mask", data: f32bytes([]float32{1, 2}), shape: []int64{3, 2}, stride: []int64{0, 1}})
	f, err := openBytes(t, ckptSpec{tensors: specs}.zip(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFloat32("encoder.mask"); err == nil || !strings.Contains(err.Error(), "expanded views are not supported") {
		t.Errorf("expanded read: %v", err)
	}
}

type countingReaderAt struct {
	r     *bytes.Reader
	bytes int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.bytes += int64(len(p))
	return c.r.ReadAt(p, off)
}

func TestReadsOnlyCore(t *testing.T) {
	// A 4 MiB encoder tensor is never read: Open and reading the whole core
	// touch a small fraction of the file.
	big := make([]float32, 1<<20)
	specs := append(smallCore(), tspec{name: "encoder.big", data: f32bytes(big), shape: []int64{1 << 20}})
	z := ckptSpec{args: unitokArgs(), tensors: specs}.zip(t)
	cr := &countingReaderAt{r: bytes.NewReader(z)}
	f, err := OpenReaderAt(cr, int64(len(z)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range f.Tensors() {
		if _, err := f.ReadFloat32(ti.Name); err != nil {
			t.Fatal(err)
		}
	}
	if cr.bytes > 256<<10 {
		t.Errorf("read %d bytes of a %d-byte file", cr.bytes, len(z))
	}
}
