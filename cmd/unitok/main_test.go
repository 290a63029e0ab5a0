package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/npy"
	"github.com/unitok/unitok/internal/safetensors"
)

// A small config with every size distinct, so a mixed-up axis shows.
var testCfg = unitok.Config{InDim: 48, LatentDim: 16, NumCodebooks: 4, CodebookSize: 100, NumHeads: 4}

// writeCheckpoint saves the synthetic model of testCfg as safetensors,
// leaving out the tensors named in skip and adding extra non-core tensors.
func writeCheckpoint(t *testing.T, dir string, skip map[string]bool, extra ...safetensors.Tensor) string {
	t.Helper()
	var ts []safetensors.Tensor
	for _, info := range unitok.SynthTensorInfos(testCfg) {
		if skip[info.Name] {
			continue
		}
		ts = append(ts, safetensors.F32Tensor(info.Name, info.Shape, unitok.SynthTensor(info.Name, info.Shape, 7)))
	}
	ts = append(ts, extra...)
	p := filepath.Join(dir, "tok.safetensors")
	require.NoError(t, safetensors.Write(p, ts, map[string]string{"num_heads": "4", "causal": "false"}))
	return p
}

func randFloats(n int, seed uint64) []float32 {
	r := splitmix(seed)
	out := make([]float32, n)
	for i := range out {
		out[i] = 2 * r.uniform()
	}
	return out
}

type result struct {
	code           int
	stdout, stderr string
}

func cli(args ...string) result {
	var o, e bytes.Buffer
	code := run(args, &o, &e)
	return result{code, o.String(), e.String()}
}

func readInts(t *testing.T, p string) ([]int, npy.DType, []int32) {
	t.Helper()
	a, err := npy.Open(p)
	require.NoError(t, err)
	defer a.Close()
	v, err := a.Int32()
	require.NoError(t, err)
	return a.Shape, a.DType, v
}

func readFloats(t *testing.T, p string) ([]int, []float32) {
	t.Helper()
	a, err := npy.Open(p)
	require.NoError(t, err)
	defer a.Close()
	require.Equal(t, npy.Float32, a.DType)
	v, err := a.Float32()
	require.NoError(t, err)
	return a.Shape, append([]float32(nil), v...)
}

func openLib(t *testing.T, ckpt string, opts ...unitok.Option) *unitok.Tokenizer {
	t.Helper()
	tok, err := unitok.Open(ckpt, append([]unitok.Option{unitok.WithDevice("cpu")}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return tok
}

var encodeLine = regexp.MustCompile(`^encoded 2x10 tokens \(C=48\) -> codes \(2,10,4\) uint16 in [0-9.]+s, [0-9]+ tokens/s, codebook usage [0-9]+\.[0-9]% avg\n$`)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	B, N := 2, 10
	feats := randFloats(B*N*testCfg.InDim, 1)
	in := filepath.Join(dir, "feats.npy")
	require.NoError(t, npy.WriteFloat32(in, []int{B, N, testCfg.InDim}, feats))

	codesPath := filepath.Join(dir, "codes.npy")
	r := cli("encode", "--checkpoint", ckpt, "--in", in, "--out", codesPath, "--device", "cpu")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stdout)
	assert.Regexp(t, encodeLine, r.stderr)

	tok := openLib(t, ckpt)
	want, err := tok.Encode(feats, B, N)
	require.NoError(t, err)
	shape, dt, got := readInts(t, codesPath)
	assert.Equal(t, []int{B, N, testCfg.NumCodebooks}, shape)
	assert.Equal(t, npy.Uint16, dt)
	assert.Equal(t, want, got)
	// The summary's usage is the real one.
	u := codebookUsage(want, N, testCfg.NumCodebooks, testCfg.CodebookSize, unitok.TokenMajor)
	assert.Contains(t, r.stderr, fmt.Sprintf("codebook usage %.1f%% avg", u))

	outPath := filepath.Join(dir, "recon.npy")
	r = cli("decode", "--checkpoint", ckpt, "--in", codesPath, "--out", outPath)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `^decoded 2x10 tokens \(K=4\) -> features \(2,10,48\) float32 in [0-9.]+s, [0-9]+ tokens/s\n$`, r.stderr)
	wantF, err := tok.Decode(want, B, N)
	require.NoError(t, err)
	fshape, gotF := readFloats(t, outPath)
	assert.Equal(t, []int{B, N, testCfg.InDim}, fshape)
	assert.InDeltaSlice(t, wantF, gotF, 1e-5)

	// Every integer dtype is accepted as decode input.
	for _, dt := range []string{"uint8", "int16", "int32", "int64", "uint32", "uint64"} {
		p := filepath.Join(dir, "codes_"+dt+".npy")
		require.NoError(t, npy.WriteInts(p, []int{B, N, testCfg.NumCodebooks}, want, dt))
		o := filepath.Join(dir, "recon_"+dt+".npy")
		r := cli("decode", "--checkpoint", ckpt, "--in", p, "--out", o)
		require.Equal(t, 0, r.code, r.stderr)
		_, g := readFloats(t, o)
		assert.InDeltaSlice(t, wantF, g, 1e-5, dt)
	}
}

func TestEncodeVariants(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	N := 12
	feats := randFloats(N*testCfg.InDim, 2)
	in := filepath.Join(dir, "f2d.npy")
	require.NoError(t, npy.WriteFloat32(in, []int{N, testCfg.InDim}, feats))
	K := testCfg.NumCodebooks

	base := openLib(t, ckpt)
	want, err := base.Encode(feats, 1, N)
	require.NoError(t, err)

	// 2-D input is one image; the output keeps the rank.
	out := filepath.Join(dir, "c2d.npy")
	r := cli("encode", "--checkpoint", ckpt, "--in", in, "--out", out, "--codes-dtype", "int64")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "encoded 1x12 tokens (C=48) -> codes (12,4) int64")
	shape, dt, got := readInts(t, out)
	assert.Equal(t, []int{N, K}, shape)
	assert.Equal(t, npy.Int64, dt)
	assert.Equal(t, want, got)

	// UniTok's (B, K, N) layout: the transpose, and decode reads it back.
	out = filepath.Join(dir, "bkn.npy")
	r = cli("encode", "--checkpoint", ckpt, "--in", in, "--out", out, "--layout", "bkn", "--codes-dtype", "int32")
	require.Equal(t, 0, r.code, r.stderr)
	shape, dt, got = readInts(t, out)
	assert.Equal(t, []int{K, N}, shape)
	assert.Equal(t, npy.Int32, dt)
	for n := 0; n < N; n++ {
		for k := 0; k < K; k++ {
			assert.Equal(t, want[n*K+k], got[k*N+n])
		}
	}
	dec := filepath.Join(dir, "dec_bkn.npy")
	r = cli("decode", "--checkpoint", ckpt, "--in", out, "--out", dec, "--layout", "bkn")
	require.Equal(t, 0, r.code, r.stderr)
	wantF, err := base.Decode(want, 1, N)
	require.NoError(t, err)
	dshape, gotF := readFloats(t, dec)
	assert.Equal(t, []int{N, testCfg.InDim}, dshape)
	assert.InDeltaSlice(t, wantF, gotF, 1e-5)

	// --causal, --heads and --metric reach the model.
	for _, c := range []struct {
		flags []string
		opts  []unitok.Option
	}{
		{[]string{"--causal"}, []unitok.Option{unitok.WithCausal(true)}},
		{[]string{"--causal=false"}, []unitok.Option{unitok.WithCausal(false)}},
		{[]string{"--heads", "2"}, []unitok.Option{unitok.WithHeads(2)}},
		{[]string{"--metric", "l2", "--threads", "1"}, []unitok.Option{unitok.WithMetric(unitok.L2)}},
	} {
		out := filepath.Join(dir, "v.npy")
		args := append([]string{"encode", "--checkpoint", ckpt, "--in", in, "--out", out}, c.flags...)
		r := cli(args...)
		require.Equal(t, 0, r.code, r.stderr)
		w, err := openLib(t, ckpt, c.opts...).Encode(feats, 1, N)
		require.NoError(t, err)
		_, _, g := readInts(t, out)
		assert.Equal(t, w, g, "%v", c.flags)
	}
	// Sanity: the variants are not all the same function.
	causal, _ := openLib(t, ckpt, unitok.WithCausal(true)).QuantProj(feats, 1, N)
	full, _ := base.QuantProj(feats, 1, N)
	assert.NotEqual(t, causal, full)
}

func TestQuantizeLookup(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	M, D, K := 30, testCfg.LatentDim, testCfg.NumCodebooks
	lat := randFloats(M*D, 3)
	in := filepath.Join(dir, "lat.npy")
	require.NoError(t, npy.WriteFloat32(in, []int{M, D}, lat))
	codes := filepath.Join(dir, "q.npy")
	r := cli("quantize", "--checkpoint", ckpt, "--in", in, "--out", codes)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `^quantized 1x30 tokens \(D=16\) -> codes \(30,4\) uint16 in .*codebook usage [0-9.]+% avg\n$`, r.stderr)
	tok := openLib(t, ckpt)
	want, err := tok.Quantize(lat, M)
	require.NoError(t, err)
	shape, _, got := readInts(t, codes)
	assert.Equal(t, []int{M, K}, shape)
	assert.Equal(t, want, got)

	out := filepath.Join(dir, "l.npy")
	r = cli("lookup", "--checkpoint", ckpt, "--in", codes, "--out", out)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "looked up 1x30 tokens (K=4) -> latents (30,16) float32")
	wantL, err := tok.Lookup(want, M)
	require.NoError(t, err)
	lshape, gotL := readFloats(t, out)
	assert.Equal(t, []int{M, D}, lshape)
	assert.Equal(t, wantL, gotL)
	// Each chunk of a looked-up latent is a unit codeword, and the latent's
	// own chunk picks it again (quantize o lookup o quantize = quantize).
	d := D / K
	for i := 0; i < M*K; i++ {
		var s float64
		for _, v := range gotL[i*d : (i+1)*d] {
			s += float64(v) * float64(v)
		}
		assert.InDelta(t, 1, s, 1e-5)
	}
	again, err := tok.Quantize(gotL, M)
	require.NoError(t, err)
	assert.Equal(t, want, again)

	// --layout bkn: quantize writes (K, M), lookup reads it.
	bkn := filepath.Join(dir, "qbkn.npy")
	r = cli("quantize", "--checkpoint", ckpt, "--in", in, "--out", bkn, "--layout", "bkn")
	require.Equal(t, 0, r.code, r.stderr)
	shape, _, _ = readInts(t, bkn)
	assert.Equal(t, []int{K, M}, shape)
	out2 := filepath.Join(dir, "l2.npy")
	r = cli("lookup", "--checkpoint", ckpt, "--in", bkn, "--out", out2, "--layout", "bkn")
	require.Equal(t, 0, r.code, r.stderr)
	_, gotL2 := readFloats(t, out2)
	assert.Equal(t, wantL, gotL2)
}

// rawNpy writes a .npy with a hand-made header (for dtypes and orders our
// writer refuses to produce).
func rawNpy(t *testing.T, p, descr, fortran, shape string, data []byte) {
	t.Helper()
	dict := "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }"
	total := (10 + len(dict) + 1 + 63) / 64 * 64
	b := []byte(npy.Magic + "\x01\x00")
	b = binary.LittleEndian.AppendUint16(b, uint16(total-10))
	b = append(b, dict...)
	b = append(b, strings.Repeat(" ", total-10-len(dict)-1)...)
	b = append(append(b, '\n'), data...)
	require.NoError(t, os.WriteFile(p, b, 0o644))
}

func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	C, K, V := testCfg.InDim, testCfg.NumCodebooks, testCfg.CodebookSize
	mk := func(name string, shape []int, v []float32) string {
		p := filepath.Join(dir, name)
		require.NoError(t, npy.WriteFloat32(p, shape, v))
		return p
	}
	good := mk("good.npy", []int{1, 4, C}, randFloats(4*C, 5))
	nan := randFloats(4*C, 6)
	nan[2*C+7] = float32(math.NaN())
	nanPath := mk("nan.npy", []int{1, 4, C}, nan)
	inf := randFloats(4*C, 6)
	inf[5] = float32(math.Inf(-1))
	infPath := mk("inf.npy", []int{1, 4, C}, inf)
	rank4 := mk("rank4.npy", []int{1, 1, 4, C}, randFloats(4*C, 7))
	rank1 := mk("rank1.npy", []int{C}, randFloats(C, 7))
	narrow := mk("narrow.npy", []int{2, 3, 32}, randFloats(6*32, 8))
	codesOK := filepath.Join(dir, "codes_ok.npy")
	require.NoError(t, npy.WriteInts(codesOK, []int{1, 2, K}, []int32{0, 1, 2, 3, 4, 5, 6, 7}, "int32"))
	bigCode := filepath.Join(dir, "bigcode.npy")
	require.NoError(t, npy.WriteInts(bigCode, []int{1, 2, K}, []int32{0, 1, 2, 3, 4, int32(V), 6, 7}, "uint16"))
	negCode := filepath.Join(dir, "negcode.npy")
	require.NoError(t, npy.WriteInts(negCode, []int{2, K}, []int32{0, 1, -1, 3, 4, 5, 6, 7}, "int32"))
	hugeCode := filepath.Join(dir, "hugecode.npy")
	rawNpy(t, hugeCode, "<i8", "False", "(1, 4)", func() []byte {
		var b []byte
		for _, v := range []int64{1, 2, 1 << 33, 3} {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
		return b
	}())
	wrongK := filepath.Join(dir, "wrongk.npy")
	require.NoError(t, npy.WriteInts(wrongK, []int{1, 2, 3}, []int32{0, 1, 2, 3, 4, 5}, "int32"))
	goodBytes, _ := os.ReadFile(good)
	truncated := filepath.Join(dir, "trunc.npy")
	require.NoError(t, os.WriteFile(truncated, goodBytes[:len(goodBytes)-10], 0o644))
	text := filepath.Join(dir, "text.npy")
	require.NoError(t, os.WriteFile(text, []byte("B,N,C\n1,2,3\n"), 0o644))
	fortran := filepath.Join(dir, "fortran.npy")
	rawNpy(t, fortran, "<f4", "True", "(1, 4, 48)", goodBytes[128:])
	bigEndian := filepath.Join(dir, "be.npy")
	rawNpy(t, bigEndian, ">f4", "False", "(1, 4, 48)", goodBytes[128:])
	empty := mk("empty.npy", []int{0, C}, nil)
	missingDir := filepath.Join(dir, "missing")
	require.NoError(t, os.Mkdir(missingDir, 0o755))
	noQKV := writeCheckpoint(t, missingDir, map[string]bool{"quant_proj.attn.qkv.weight": true})
	notCkpt := filepath.Join(dir, "notckpt.safetensors")
	require.NoError(t, os.WriteFile(notCkpt, []byte("definitely not a checkpoint"), 0o644))

	out := filepath.Join(dir, "out.npy")
	enc := func(in string, extra ...string) []string {
		return append([]string{"encode", "--checkpoint", ckpt, "--in", in, "--out", out}, extra...)
	}
	dec := func(in string, extra ...string) []string {
		return append([]string{"decode", "--checkpoint", ckpt, "--in", in, "--out", out}, extra...)
	}
	cases := []struct {
		name  string
		args  []string
		words []string
	}{
		{"no command", nil, []string{"no command"}},
		{"unknown command", []string{"tokenise"}, []string{`unknown command "tokenise"`}},
		{"unknown flag", enc(good, "--bogus"), []string{"unknown flag --bogus"}},
		{"flag without value", []string{"encode", "--checkpoint"}, []string{"--checkpoint"}},
		{"missing checkpoint", []string{"encode", "--in", good, "--out", out}, []string{"missing required flag --checkpoint"}},
		{"missing in", []string{"encode", "--checkpoint", ckpt, "--out", out}, []string{"missing required flag --in"}},
		{"missing out", []string{"decode", "--checkpoint", ckpt, "--in", codesOK}, []string{"missing required flag --out"}},
		{"extra argument", enc(good, "stray"), []string{`unexpected argument "stray"`}},
		{"bad metric", enc(good, "--metric", "dot"), []string{"--metric", `"dot"`}},
		{"bad layout", enc(good, "--layout", "nbk"), []string{"--layout", `"nbk"`}},
		{"bad codes dtype", enc(good, "--codes-dtype", "float32"), []string{"--codes-dtype", `"float32"`}},
		{"bad causal", enc(good, "--causal=maybe"), []string{"--causal"}},
		{"bad heads", enc(good, "--heads", "-3"), []string{"--heads"}},
		{"heads not dividing", enc(good, "--heads", "5"), []string{"divisible by 5 heads"}},
		{"bad device", enc(good, "--device", "tpu"), []string{`unknown device "tpu"`}},
		{"NaN features", enc(nanPath), []string{nanPath, "non-finite", "NaN", "row 2", "column 7"}},
		{"Inf features", enc(infPath), []string{infPath, "non-finite", "-Inf"}},
		{"rank 4", enc(rank4), []string{rank4, "shape (1,1,4,48)", "(B,N,C)"}},
		{"rank 1", enc(rank1), []string{rank1, "shape (48,)"}},
		{"wrong width", enc(narrow), []string{narrow, "C=32", "C=48"}},
		{"empty", enc(empty), []string{empty, "empty"}},
		{"code >= V", dec(bigCode), []string{bigCode, "code 100", "out of range [0, 100)"}},
		{"negative code", []string{"lookup", "--checkpoint", ckpt, "--in", negCode, "--out", out}, []string{negCode, "code -1", "out of range"}},
		{"code beyond int32", []string{"lookup", "--checkpoint", ckpt, "--in", hugeCode, "--out", out}, []string{hugeCode, "8589934592", "int32 range"}},
		{"wrong K", dec(wrongK), []string{wrongK, "K=3", "K=4"}},
		{"float codes", dec(good), []string{good, "float32", "integer codes"}},
		{"integer features", enc(codesOK), []string{codesOK, "int32", "float32"}},
		{"quantize 3-D", []string{"quantize", "--checkpoint", ckpt, "--in", good, "--out", out}, []string{good, "(M,D)"}},
		{"truncated", enc(truncated), []string{truncated, "truncated: have 758 bytes of data, want 768"}},
		{"not npy", enc(text), []string{text, "not a .npy file"}},
		{"fortran", enc(fortran), []string{fortran, "fortran_order"}},
		{"big endian", enc(bigEndian), []string{bigEndian, "big-endian"}},
		{"missing input", enc(filepath.Join(dir, "nope.npy")), []string{"nope.npy", "no such file"}},
		{"missing tensor", []string{"encode", "--checkpoint", noQKV, "--in", good, "--out", out}, []string{noQKV, "missing tensor quant_proj.attn.qkv.weight"}},
		{"missing checkpoint", []string{"encode", "--checkpoint", filepath.Join(dir, "none.safetensors"), "--in", good, "--out", out}, []string{"none.safetensors"}},
		{"not a checkpoint", []string{"encode", "--checkpoint", notCkpt, "--in", good, "--out", out}, []string{notCkpt, "not a safetensors file"}},
		{"out dir holds the input", []string{"encode", "--checkpoint", ckpt, "--in", good, "--out", dir}, []string{good, "would overwrite the input"}},
		{"bench bad op", []string{"bench", "--checkpoint", ckpt, "--op", "sort"}, []string{"--op", `"sort"`}},
		{"bench bad batch", []string{"bench", "--checkpoint", ckpt, "--batch", "0"}, []string{"--batch 0"}},
		{"inspect no arg", []string{"inspect"}, []string{"inspect", "missing checkpoint"}},
		{"inspect missing file", []string{"inspect", filepath.Join(dir, "none.safetensors")}, []string{"none.safetensors"}},
	}
	if hasCUDA() {
		t.Log("cuda backend compiled in: skipping the no-CUDA device case")
	} else {
		cases = append(cases, struct {
			name  string
			args  []string
			words []string
		}{"cuda without cuda", enc(good, "--device", "cuda:0"), []string{"cuda:0", "without CUDA"}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cli(c.args...)
			t.Log(strings.TrimSpace(r.stderr))
			assert.Equal(t, 1, r.code)
			assert.Empty(t, r.stdout)
			require.True(t, strings.HasPrefix(r.stderr, "unitok: "), "stderr %q", r.stderr)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "exactly one line: %q", r.stderr)
			for _, w := range c.words {
				assert.Contains(t, r.stderr, w)
			}
			assert.NoFileExists(t, out)
			assertNoTemps(t, dir)
		})
	}
}

func hasCUDA() bool {
	for _, d := range unitok.Devices() {
		if d == "cuda" {
			return true
		}
	}
	return false
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		assert.NotContains(t, e.Name(), ".tmp-", "leftover temp file")
	}
}

func TestFailedRunKeepsExistingOutput(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	out := filepath.Join(dir, "codes.npy")
	require.NoError(t, os.WriteFile(out, []byte("precious"), 0o644))
	feats := randFloats(3*testCfg.InDim, 9)
	feats[len(feats)-1] = float32(math.NaN())
	in := filepath.Join(dir, "f.npy")
	require.NoError(t, npy.WriteFloat32(in, []int{3, testCfg.InDim}, feats))
	r := cli("encode", "--checkpoint", ckpt, "--in", in, "--out", out)
	assert.Equal(t, 1, r.code)
	b, _ := os.ReadFile(out)
	assert.Equal(t, "precious", string(b))
	assertNoTemps(t, dir)
	// A good run replaces it.
	feats[len(feats)-1] = 0
	require.NoError(t, npy.WriteFloat32(in, []int{3, testCfg.InDim}, feats))
	r = cli("encode", "--checkpoint", ckpt, "--in", in, "--out", out)
	require.Equal(t, 0, r.code, r.stderr)
	shape, _, _ := readInts(t, out)
	assert.Equal(t, []int{3, testCfg.NumCodebooks}, shape)
}

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil,
		safetensors.F32Tensor("encoder.blocks.0.weight", []int{2}, []float32{1, 2}),
		safetensors.F32Tensor("encoder.blocks.1.weight", []int{2}, []float32{1, 2}),
		safetensors.F32Tensor("decoder.head.bias", []int{1}, []float32{1}),
	)
	r := cli("inspect", ckpt)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stderr)
	for _, w := range []string{
		"(safetensors)", "C=48 D=16 K=4 V=100 (d=4, vocab 400) H=4 (from metadata) attention=full",
		"quant_proj.attn.qkv.weight", "F32", "(144,48)", "quantizer.codebooks.3.codebook.weight", "(100,4)",
		"missing: none", "ignored non-core tensors: 3 (decoder 1, encoder 2)", "num_heads=4",
	} {
		assert.Contains(t, r.stdout, w)
	}
	assert.NotContains(t, r.stdout, "encoder.blocks.0.weight")

	r = cli("inspect", "--json", ckpt)
	require.Equal(t, 0, r.code, r.stderr)
	var rep inspectReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.True(t, rep.Complete)
	require.NotNil(t, rep.Config)
	assert.Equal(t, 48, rep.Config.InDim)
	assert.Equal(t, 100, rep.Config.CodebookSize)
	assert.Equal(t, map[string]int{"encoder": 2, "decoder": 1}, rep.Ignored)
	assert.Len(t, rep.Tensors, len(unitok.SynthTensorInfos(testCfg)))

	// Missing tensors: the full report on stdout, one error line, exit 1.
	sub := filepath.Join(dir, "partial")
	require.NoError(t, os.Mkdir(sub, 0o755))
	partial := writeCheckpoint(t, sub, map[string]bool{
		"post_quant_proj.mlp.w2.weight": true, "quant_proj.norm2.bias": true, "quant_proj.attn.zero_k_bias": true,
	})
	r = cli("inspect", partial)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stdout, "missing (2):")
	assert.Contains(t, r.stdout, "post_quant_proj.mlp.w2.weight")
	assert.Contains(t, r.stdout, "quant_proj.norm2.bias")
	assert.NotContains(t, r.stdout, "  quant_proj.attn.zero_k_bias\n", "zero_k_bias is optional")
	assert.Regexp(t, `^unitok: .*partial/tok.safetensors: incomplete checkpoint: 2 required tensors missing \(.*\)\n$`, r.stderr)
}

func TestBench(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	r := cli("bench", "--checkpoint", ckpt, "--batch", "2", "--tokens", "8", "--iters", "2", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var rep benchReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.Equal(t, "cpu", rep.Device)
	assert.Equal(t, 48, rep.Config.InDim)
	require.Len(t, rep.Results, 3)
	for i, op := range []string{"quantize", "encode", "decode"} {
		assert.Equal(t, op, rep.Results[i].Op)
		assert.Equal(t, 16, rep.Results[i].Tokens)
		assert.Greater(t, rep.Results[i].TokensPerS, 0.0)
	}

	r = cli("bench", "--checkpoint", ckpt, "--batch", "1", "--tokens", "4", "--iters", "1", "--op", "all")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "model "+ckpt+": C=48 D=16 K=4 V=100 H=4 full attention, metric cosine")
	for _, op := range []string{"quantize", "encode", "decode", "lookup", "tokens/s"} {
		assert.Contains(t, r.stdout, op)
	}

	// Without a checkpoint: the synthetic real-width model.
	r = cli("bench", "--op", "quantize", "--batch", "1", "--tokens", "16", "--iters", "1", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	assert.Equal(t, "synthetic", rep.Model)
	assert.Equal(t, unitok.Config{InDim: 1024, LatentDim: 64, NumCodebooks: 8, CodebookSize: 4096, NumHeads: 16}, rep.Config)
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"encode", "-h"}} {
		r := cli(args...)
		assert.Equal(t, 0, r.code, args)
		assert.Contains(t, r.stdout, "usage: unitok", args)
		assert.Empty(t, r.stderr)
	}
}

func TestConvertPth(t *testing.T) {
	dir := t.TempDir()
	pth := filepath.Join("..", "..", "testdata", "pth", "small_fp32.pth")
	out := filepath.Join(dir, "core.safetensors")
	r := cli("convert", "--heads", "4", "--causal", pth, out)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "48 core tensors")
	require.Contains(t, r.stderr, "H=4 causal=true")

	// The converted file carries heads and causal, and encodes exactly as
	// the .pth does with the same overrides.
	feats := filepath.Join(dir, "f.npy")
	require.NoError(t, npy.WriteFloat32(feats, []int{2, 5, 48}, randFloats(2*5*48, 3)))
	a, b := filepath.Join(dir, "a.npy"), filepath.Join(dir, "b.npy")
	r = cli("encode", "--device", "cpu", "--checkpoint", out, "--in", feats, "--out", a)
	require.Equal(t, 0, r.code, r.stderr)
	r = cli("encode", "--device", "cpu", "--heads", "4", "--causal", "--checkpoint", pth, "--in", feats, "--out", b)
	require.Equal(t, 0, r.code, r.stderr)
	_, _, ca := readInts(t, a)
	_, _, cb := readInts(t, b)
	require.Equal(t, cb, ca)

	// Refusals leave nothing behind.
	bad := filepath.Join(dir, "bad.safetensors")
	r = cli("convert", filepath.Join("..", "..", "testdata", "pth", "malicious.pth"), bad)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "refusing to load global os.system")
	require.NoFileExists(t, bad)
	r = cli("convert", pth, filepath.Join(dir, "x.npy"))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "must end in .safetensors")
	r = cli("convert", pth)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "want two arguments")
	assertNoTemps(t, dir)
}

func TestShardedEncodeResumes(t *testing.T) {
	dir := t.TempDir()
	ckpt := writeCheckpoint(t, dir, nil)
	in := filepath.Join(dir, "shards")
	require.NoError(t, os.MkdirAll(filepath.Join(in, "part"), 0o755))
	for i := 0; i < 3; i++ {
		x := randFloats(2*5*48, uint64(10+i))
		require.NoError(t, npy.WriteFloat32(filepath.Join(in, "part", fmt.Sprintf("s%d.npy", i)), []int{2, 5, 48}, x))
	}
	out := filepath.Join(dir, "out")
	r := cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "3 shards: 3 done, 0 already done, 0 failed")
	// Each output equals a single-file run on the same shard.
	for i := 0; i < 3; i++ {
		single := filepath.Join(dir, fmt.Sprintf("single%d.npy", i))
		r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", filepath.Join(in, "part", fmt.Sprintf("s%d.npy", i)), "--out", single)
		require.Equal(t, 0, r.code, r.stderr)
		a, err := os.ReadFile(single)
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(out, "part", fmt.Sprintf("s%d.npy", i)))
		require.NoError(t, err)
		require.Equal(t, a, b)
	}
	// A rerun does nothing; a bad shard added later is named, the rest done.
	bad := filepath.Join(in, "part", "s9.npy")
	x := randFloats(1*5*48, 99)
	x[7] = float32(math.Inf(1))
	require.NoError(t, npy.WriteFloat32(bad, []int{1, 5, 48}, x))
	r = cli("encode", "--device", "cpu", "--checkpoint", ckpt, "--in", in, "--out", out)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "4 shards: 0 done, 3 already done, 1 failed")
	require.Contains(t, r.stderr, "s9.npy")
	require.NoFileExists(t, filepath.Join(out, "part", "s9.npy"))
}

// TestBenchImages: the image ops report images/s on a checkpoint with the
// image path; a core-only checkpoint and an unknown synthetic model are
// one-line errors.
func TestBenchImages(t *testing.T) {
	demo := filepath.Join("..", "..", "testdata", "demo", "unitok_small.pth")
	r := cli("bench", "--checkpoint", demo, "--op", "tokenize,detokenize,embed", "--batch", "2", "--iters", "1", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var rep benchReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Len(t, rep.Results, 3)
	for i, op := range []string{"tokenize", "detokenize", "embed"} {
		res := rep.Results[i]
		assert.Equal(t, op, res.Op)
		assert.Equal(t, 2, res.Images)
		assert.Equal(t, 2*256, res.Tokens) // 256 tokens per 256x256 image
		assert.Greater(t, res.ImagesPerS, 0.0)
		assert.GreaterOrEqual(t, res.BestImagesS, res.ImagesPerS)
	}

	core := filepath.Join("..", "..", "testdata", "sample", "model.safetensors")
	r = cli("bench", "--checkpoint", core, "--op", "tokenize", "--iters", "1")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "unitok: "+core+": image model: missing tensor encoder.patch_embed.backbone.stem.conv1.weight (no ViTamin encoder in the checkpoint)\n", r.stderr)

	r = cli("bench", "--op", "detokenize", "--model", "vitamin_huge", "--iters", "1")
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "unitok: --model: synthetic image model \"vitamin_huge\": want vitamin_base or vitamin_large\n", r.stderr)
}
