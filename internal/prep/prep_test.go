package prep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/npy"
	"github.com/unitok/unitok/internal/safetensors"
)

var testConfig = unitok.Config{InDim: 48, LatentDim: 16, NumCodebooks: 4, CodebookSize: 100, NumHeads: 4}

const testN = 16 // tokens per image

func newTok(t testing.TB, opts ...unitok.Option) *unitok.Tokenizer {
	t.Helper()
	m, err := unitok.SynthModel(testConfig, 7)
	require.NoError(t, err)
	tok, err := unitok.New(m, append([]unitok.Option{unitok.WithDevice("cpu")}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return tok
}

func randFloats(seed uint64, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// shardSpec is a test shard: its path under the input root and its images
// (B = 0 writes a 2-D (N, C) array of one image).
type shardSpec struct {
	rel string
	B   int
}

var testShards = []shardSpec{
	{"a/s00.npy", 5}, {"a/s01.npy", 3}, {"a/s02.npy", 0}, {"b/s03.npy", 7},
	{"b/c/s04.npy", 1}, {"s05.npy", 4},
}

// writeFeatureShards writes encode inputs and returns each shard's features.
func writeFeatureShards(t testing.TB, root string, specs []shardSpec) map[string][]float32 {
	t.Helper()
	C := testConfig.InDim
	out := map[string][]float32{}
	for i, s := range specs {
		p := filepath.Join(root, filepath.FromSlash(s.rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		shape := []int{s.B, testN, C}
		n := s.B * testN * C
		if s.B == 0 {
			shape, n = []int{testN, C}, testN*C
		}
		x := randFloats(uint64(100+i), n)
		require.NoError(t, npy.WriteFloat32(p, shape, x))
		out[s.rel] = x
	}
	return out
}

func readCodes(t testing.TB, path string) ([]int, []int32) {
	t.Helper()
	a, err := npy.Open(path)
	require.NoError(t, err, path)
	defer a.Close()
	c, err := a.Int32()
	require.NoError(t, err)
	return a.Shape, c
}

func readFloats(t testing.TB, path string) ([]int, []float32) {
	t.Helper()
	a, err := npy.Open(path)
	require.NoError(t, err, path)
	defer a.Close()
	f, err := a.Float32()
	require.NoError(t, err)
	return a.Shape, append([]float32(nil), f...)
}

func manifestLines(t testing.TB, dir string) []Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "manifest.jsonl"))
	require.NoError(t, err)
	recs, bad, err := readManifest(filepath.Join(dir, "manifest.jsonl"))
	require.NoError(t, err)
	require.Zero(t, bad)
	var lines []string // published outputs; failure records are counted apart
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if !strings.Contains(l, `"error":`) {
			lines = append(lines, l)
		}
	}
	require.Len(t, recs, len(lines), "duplicate manifest records")
	var out []Record
	for _, r := range recs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Output < out[j].Output })
	return out
}

// dirFiles maps every file under dir (relative path) to its bytes.
func dirFiles(t testing.TB, dir string, skipManifest bool) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if skipManifest && rel == "manifest.jsonl" {
			return nil
		}
		b, err := os.ReadFile(p)
		out[filepath.ToSlash(rel)] = b
		return err
	}))
	return out
}

func TestEncodeEndToEnd(t *testing.T) {
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	feats := writeFeatureShards(t, in, testShards)
	hist := filepath.Join(t.TempDir(), "hist.npy")
	var prog bytes.Buffer
	sum, err := Run(context.Background(), tok, Encode, Options{
		In: []string{in}, OutDir: out, Batch: 2, InFlight: 3, Histogram: hist, Progress: &prog, Terminal: 1,
	})
	require.NoError(t, err)
	assert.Equal(t, len(testShards), sum.Shards)
	assert.Equal(t, len(testShards), sum.Done)
	assert.Zero(t, sum.Failed)

	K, V := testConfig.NumCodebooks, testConfig.CodebookSize
	want := make([]int64, K*V)
	var tokens int64
	for _, s := range testShards {
		B := max(s.B, 1)
		codes, err := tok.Encode(feats[s.rel], B, testN)
		require.NoError(t, err)
		shape, got := readCodes(t, filepath.Join(out, filepath.FromSlash(s.rel)))
		if s.B == 0 {
			assert.Equal(t, []int{testN, K}, shape, s.rel)
		} else {
			assert.Equal(t, []int{s.B, testN, K}, shape, s.rel)
		}
		assert.Equal(t, codes, got, s.rel)
		countCodes(want, codes, unitok.TokenMajor, testN, K, V)
		tokens += int64(B * testN)
	}
	assert.Equal(t, tokens, sum.Tokens)
	assert.Equal(t, want, sum.Counts)

	a, err := npy.Open(hist)
	require.NoError(t, err)
	assert.Equal(t, []int{K, V}, a.Shape)
	assert.Equal(t, npy.Int64, a.DType)
	a.Close()
	for k := 0; k < K; k++ {
		assert.Greater(t, sum.Perplexity[k], 1.0)
		assert.LessOrEqual(t, sum.Perplexity[k], float64(V)+1e-9)
		assert.Greater(t, sum.Usage[k], 0.0)
	}

	recs := manifestLines(t, out)
	require.Len(t, recs, len(testShards))
	for _, r := range recs {
		h, n, err := fileSHA256(filepath.Join(out, filepath.FromSlash(r.Output)))
		require.NoError(t, err)
		assert.Equal(t, r.SHA256, h, r.Output)
		assert.Equal(t, r.Bytes, n, r.Output)
	}

	var p bytes.Buffer
	sum.Print(&p)
	assert.Contains(t, p.String(), "6 done")
	assert.Contains(t, p.String(), "perplexity")
	assert.Contains(t, prog.String(), "\rencode: 6/6 shards")

	// A second run finds everything done and writes nothing.
	before := dirFiles(t, out, false)
	sum2, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, Verify: true})
	require.NoError(t, err)
	assert.Equal(t, 0, sum2.Done)
	assert.Equal(t, len(testShards), sum2.Skipped)
	assert.Equal(t, before, dirFiles(t, out, false))
	assert.Equal(t, want, sum2.Counts, "statistics cover shards done earlier")

	// Another dtype is another output: nothing is taken as done.
	sum3, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, CodesDType: "int64"})
	require.NoError(t, err)
	assert.Equal(t, len(testShards), sum3.Done)
	_, got := readCodes(t, filepath.Join(out, "s05.npy"))
	codes, _ := tok.Encode(feats["s05.npy"], 4, testN)
	assert.Equal(t, codes, got)
}

func TestGlobAndFiles(t *testing.T) {
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	writeFeatureShards(t, in, testShards)
	sum, err := Run(context.Background(), tok, Encode, Options{
		In: []string{filepath.Join(in, "a", "s0*.npy"), filepath.Join(in, "b", "c", "s04.npy"), filepath.Join(in, "*", "s03.npy")}, OutDir: out,
	})
	require.NoError(t, err)
	assert.Equal(t, 5, sum.Done)
	for _, p := range []string{"s00.npy", "s01.npy", "s02.npy", "s04.npy", "b/s03.npy"} {
		assert.FileExists(t, filepath.Join(out, p))
	}
}

// reference runs an uninterrupted encode into a fresh directory.
func reference(t *testing.T, tok *unitok.Tokenizer, in string) map[string][]byte {
	t.Helper()
	ref := t.TempDir()
	_, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: ref, Batch: 2})
	require.NoError(t, err)
	return dirFiles(t, ref, true)
}

func TestResumeAfterCancel(t *testing.T) {
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	writeFeatureShards(t, in, testShards)
	ref := reference(t, tok, in)

	ctx, cancel := context.WithCancel(context.Background())
	commits := 0
	testHookCommitted = func(Record) {
		if commits++; commits == 2 {
			cancel()
		}
	}
	defer func() { testHookCommitted = nil }()
	sum, err := Run(ctx, tok, Encode, Options{In: []string{in}, OutDir: out, Batch: 2, InFlight: 2})
	testHookCommitted = nil
	require.ErrorIs(t, err, context.Canceled)
	assert.True(t, sum.Interrupted)
	assert.Equal(t, 2, sum.Done)
	assert.Len(t, manifestLines(t, out), 2)
	assertNoTemps(t, out)

	sum, err = Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, Batch: 3})
	require.NoError(t, err)
	assert.Equal(t, 2, sum.Skipped)
	assert.Equal(t, len(testShards)-2, sum.Done)
	assert.Len(t, manifestLines(t, out), len(testShards))
	assert.Equal(t, ref, dirFiles(t, out, true))
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	for p := range dirFiles(t, dir, false) {
		assert.NotContains(t, p, ".tmp-", "temporary file left behind")
	}
}

func TestResumeAfterCrash(t *testing.T) {
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	writeFeatureShards(t, in, testShards)
	ref := reference(t, tok, in)

	_, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.NoError(t, err)
	// Forge the state of a run killed while appending the 4th record:
	// outputs 0-3 published, records 0-2 whole and record 3 torn, output 4
	// half-written in a temporary, output 5 never started.
	mpath := filepath.Join(out, "manifest.jsonl")
	b, err := os.ReadFile(mpath)
	require.NoError(t, err)
	lines := strings.SplitAfter(string(b), "\n")
	sort.SliceStable(lines[:6], func(i, j int) bool { return lines[i] < lines[j] }) // any order will do
	recs := map[string]Record{}
	rs, _, _ := readManifest(mpath)
	for _, r := range rs {
		recs[r.Output] = r
	}
	outs := []string{"a/s00.npy", "a/s01.npy", "a/s02.npy", "b/c/s04.npy", "b/s03.npy", "s05.npy"}
	var kept string
	for _, o := range outs[:3] {
		kept += findLine(t, lines, o)
	}
	torn := findLine(t, lines, outs[3])
	kept += torn[:len(torn)/2]
	require.NoError(t, os.WriteFile(mpath, []byte(kept), 0o644))
	full, err := os.ReadFile(filepath.Join(out, outs[4]))
	require.NoError(t, err)
	tmp := filepath.Join(out, "b", ".s03.npy.tmp-12345")
	require.NoError(t, os.WriteFile(tmp, full[:len(full)/2], 0o644))
	require.NoError(t, os.Remove(filepath.Join(out, outs[4])))
	require.NoError(t, os.Remove(filepath.Join(out, outs[5])))

	sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, Batch: 4, InFlight: 1})
	require.NoError(t, err)
	assert.Equal(t, 3, sum.Skipped)
	assert.Equal(t, 3, sum.Done)
	assert.NoFileExists(t, tmp)
	got := manifestLines(t, out)
	assert.Len(t, got, 6)
	for _, r := range got {
		assert.Equal(t, recs[r.Output].SHA256, r.SHA256, r.Output)
	}
	assert.Equal(t, ref, dirFiles(t, out, true))
}

func findLine(t *testing.T, lines []string, output string) string {
	for _, l := range lines {
		if strings.Contains(l, `"output":"`+output+`"`) {
			return l
		}
	}
	t.Fatalf("no manifest line for %s", output)
	return ""
}

func TestCorruptOutputRedone(t *testing.T) {
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	writeFeatureShards(t, in, testShards)
	ref := reference(t, tok, in)
	_, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.NoError(t, err)
	// Same size, different bytes: only Verify notices.
	p := filepath.Join(out, "s05.npy")
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	require.NoError(t, os.WriteFile(p, b, 0o644))
	sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.NoError(t, err)
	assert.Equal(t, 0, sum.Done)
	sum, err = Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, Verify: true})
	require.NoError(t, err)
	assert.Equal(t, 1, sum.Done)
	// A truncated output is noticed by size alone.
	require.NoError(t, os.WriteFile(filepath.Join(out, "a", "s01.npy"), b[:10], 0o644))
	sum, err = Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.NoError(t, err)
	assert.Equal(t, 1, sum.Done)
	assert.Equal(t, ref, dirFiles(t, out, true))
}

func TestBadShards(t *testing.T) {
	tok := newTok(t)
	in, out := t.TempDir(), t.TempDir()
	feats := writeFeatureShards(t, in, testShards)
	C := testConfig.InDim
	// NaN in the last image of a 5-image shard: found in a later batch.
	x := randFloats(9, 5*testN*C)
	x[4*testN*C+3*C+7] = float32(math.NaN())
	require.NoError(t, npy.WriteFloat32(filepath.Join(in, "a", "s00b_nan.npy"), []int{5, testN, C}, x))
	require.NoError(t, npy.WriteFloat32(filepath.Join(in, "a", "s01b_width.npy"), []int{2, testN, C + 1}, randFloats(10, 2*testN*(C+1))))
	require.NoError(t, npy.WriteFloat32(filepath.Join(in, "b", "s03b_trunc.npy"), []int{4, testN, C}, randFloats(11, 4*testN*C)))
	tp := filepath.Join(in, "b", "s03b_trunc.npy")
	st, _ := os.Stat(tp)
	require.NoError(t, os.Truncate(tp, st.Size()-100))
	require.NoError(t, npy.WriteInts(filepath.Join(in, "s05b_ints.npy"), []int{1, testN, C}, make([]int32, testN*C), "int32"))

	var log bytes.Buffer
	sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out, Batch: 2, Progress: &log})
	require.Error(t, err)
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Equal(t, len(testShards), sum.Done)
	assert.Equal(t, 4, sum.Failed)
	reasons := map[string]string{}
	for _, f := range sum.Failures {
		reasons[f.Shard] = f.Err.Error()
	}
	assert.Contains(t, reasons["a/s00b_nan.npy"], "non-finite")
	assert.Contains(t, reasons["a/s00b_nan.npy"], "images 4-4")
	assert.Contains(t, reasons["a/s01b_width.npy"], "C=49")
	assert.Contains(t, reasons["b/s03b_trunc.npy"], "truncated")
	assert.Contains(t, reasons["s05b_ints.npy"], "int32")
	for name := range reasons {
		assert.NoFileExists(t, filepath.Join(out, filepath.FromSlash(name)))
		assert.Contains(t, log.String(), name)
	}
	var p bytes.Buffer
	sum.Print(&p)
	assert.Contains(t, p.String(), "failed: a/s00b_nan.npy")
	for _, s := range testShards {
		_, got := readCodes(t, filepath.Join(out, filepath.FromSlash(s.rel)))
		want, _ := tok.Encode(feats[s.rel], max(1, s.B), testN)
		assert.Equal(t, want, got, s.rel)
	}
	assertNoTemps(t, out)
	assert.Len(t, manifestLines(t, out), len(testShards))

	// A rerun retries only the bad shards.
	sum, err = Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Equal(t, 0, sum.Done)
	assert.Equal(t, len(testShards), sum.Skipped)
	assert.Equal(t, 4, sum.Failed)
}

func TestOtherOps(t *testing.T) {
	tok := newTok(t)
	c := testConfig
	in, lat, codesDir := t.TempDir(), t.TempDir(), t.TempDir()
	// Quantize float64 latents in two shards; lookup the codes back.
	lats := map[string][]float32{}
	for i, M := range []int{37, 200} {
		x := randFloats(uint64(i+50), M*c.LatentDim)
		name := fmt.Sprintf("q%d.npy", i)
		w, err := npy.Create(filepath.Join(lat, name), "float64", []int{M, c.LatentDim})
		require.NoError(t, err)
		x64 := make([]float32, len(x))
		for j, v := range x {
			x64[j] = float32(float64(v))
		}
		require.NoError(t, w.WriteFloat32(x64))
		require.NoError(t, w.Commit())
		lats[name] = x
	}
	_, err := Run(context.Background(), tok, Quantize, Options{In: []string{lat}, OutDir: codesDir, Batch: 50, CodesDType: "int32"})
	require.NoError(t, err)
	latOut := t.TempDir()
	_, err = Run(context.Background(), tok, Lookup, Options{In: []string{codesDir}, OutDir: latOut, Batch: 64})
	require.NoError(t, err)
	for name, x := range lats {
		M := len(x) / c.LatentDim
		want, err := tok.Quantize(x, M)
		require.NoError(t, err)
		shape, got := readCodes(t, filepath.Join(codesDir, name))
		assert.Equal(t, []int{M, c.NumCodebooks}, shape)
		assert.Equal(t, want, got)
		wantL, err := tok.Lookup(want, M)
		require.NoError(t, err)
		_, gotL := readFloats(t, filepath.Join(latOut, name))
		assert.Equal(t, wantL, gotL)
	}

	// Encode from safetensors, then decode the codes.
	feats := randFloats(77, 3*testN*c.InDim)
	require.NoError(t, safetensors.Write(filepath.Join(in, "st.safetensors"),
		[]safetensors.Tensor{safetensors.F32Tensor("other", []int{2}, []float32{1, 2}), safetensors.F32Tensor("feats", []int{3, testN, c.InDim}, feats)}, nil))
	enc, dec := t.TempDir(), t.TempDir()
	_, err = Run(context.Background(), tok, Encode, Options{In: []string{in}, Tensor: "feats", OutDir: enc})
	require.NoError(t, err)
	codes, err := tok.Encode(feats, 3, testN)
	require.NoError(t, err)
	_, got := readCodes(t, filepath.Join(enc, "st.npy"))
	assert.Equal(t, codes, got)
	_, err = Run(context.Background(), tok, Decode, Options{In: []string{enc}, OutDir: dec, Batch: 2})
	require.NoError(t, err)
	wantF, err := tok.Decode(codes, 3, testN)
	require.NoError(t, err)
	shape, gotF := readFloats(t, filepath.Join(dec, "st.npy"))
	assert.Equal(t, []int{3, testN, c.InDim}, shape)
	assert.Equal(t, wantF, gotF)

	// A missing tensor is a failed shard, named.
	_, err = Run(context.Background(), tok, Encode, Options{In: []string{in}, Tensor: "nope", OutDir: t.TempDir()})
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Contains(t, err.Error(), "st.safetensors")

	// Codes out of range are a failed shard.
	bad := t.TempDir()
	require.NoError(t, npy.WriteInts(filepath.Join(bad, "bad.npy"), []int{2, c.NumCodebooks}, []int32{0, 1, 2, 3, 4, 5, 6, int32(c.CodebookSize)}, "int64"))
	_, err = Run(context.Background(), tok, Lookup, Options{In: []string{bad}, OutDir: t.TempDir()})
	require.ErrorIs(t, err, ErrShardsFailed)
	assert.Contains(t, err.Error(), "out of range")
}

func TestCodebookMajor(t *testing.T) {
	tok := newTok(t, unitok.WithLayout(unitok.CodebookMajor))
	in, enc, dec := t.TempDir(), t.TempDir(), t.TempDir()
	feats := writeFeatureShards(t, in, testShards[:2])
	hist := filepath.Join(t.TempDir(), "h.npy")
	sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: enc, Batch: 2, Histogram: hist})
	require.NoError(t, err)
	K, V := testConfig.NumCodebooks, testConfig.CodebookSize
	want := make([]int64, K*V)
	for _, s := range testShards[:2] {
		codes, err := tok.Encode(feats[s.rel], s.B, testN)
		require.NoError(t, err)
		shape, got := readCodes(t, filepath.Join(enc, filepath.FromSlash(s.rel)))
		assert.Equal(t, []int{s.B, K, testN}, shape)
		assert.Equal(t, codes, got)
		countCodes(want, codes, unitok.CodebookMajor, testN, K, V)

		_, err = Run(context.Background(), tok, Decode, Options{In: []string{enc}, OutDir: dec})
		require.NoError(t, err)
		wantF, _ := tok.Decode(codes, s.B, testN)
		_, gotF := readFloats(t, filepath.Join(dec, filepath.FromSlash(s.rel)))
		assert.Equal(t, wantF, gotF)
	}
	assert.Equal(t, want, sum.Counts)
	// Token-major and codebook-major counts agree.
	tm := newTok(t)
	sum2, err := Run(context.Background(), tm, Encode, Options{In: []string{in}, OutDir: t.TempDir()})
	require.NoError(t, err)
	assert.Equal(t, want, sum2.Counts)

	_, err = Run(context.Background(), tok, Quantize, Options{In: []string{in}, OutDir: t.TempDir()})
	require.Error(t, err)
}

func TestManifestTornLine(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "manifest.jsonl")
	require.NoError(t, os.WriteFile(p, []byte(`{"shard":"a","output":"a.npy","sha256":"00","bytes":1}`+"\n"+`{"shard":"b","outp`), 0o644))
	recs, _, err := readManifest(p)
	require.NoError(t, err)
	assert.Len(t, recs, 1)
	m, err := openManifest(p)
	require.NoError(t, err)
	require.NoError(t, m.append(Record{Shard: "c", Output: "c.npy", SHA256: "11"}))
	m.close()
	recs, bad, err := readManifest(p)
	require.NoError(t, err)
	assert.Zero(t, bad)
	assert.Len(t, recs, 2)
}

func TestOutputInsideInput(t *testing.T) {
	tok := newTok(t)
	in := t.TempDir()
	writeFeatureShards(t, in, testShards[:2])
	out := filepath.Join(in, "out")
	_, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.NoError(t, err)
	sum, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: out})
	require.NoError(t, err)
	assert.Equal(t, 2, sum.Shards, "outputs are not read back as inputs")
}

func TestNotifyContext(t *testing.T) {
	ctx, stop := NotifyContext(context.Background())
	stop()
	<-ctx.Done()
	assert.True(t, errors.Is(context.Cause(ctx), context.Canceled))
}

func TestProgressPlainLines(t *testing.T) {
	tok := newTok(t)
	in := t.TempDir()
	writeFeatureShards(t, in, testShards)
	testHookBatch = func() { time.Sleep(5 * time.Millisecond) }
	defer func() { testHookBatch = nil }()
	var buf syncBuffer
	_, err := Run(context.Background(), tok, Encode, Options{In: []string{in}, OutDir: t.TempDir(), Batch: 1,
		Progress: &buf, ProgressInterval: 10 * time.Millisecond, Terminal: -1})
	testHookBatch = nil
	require.NoError(t, err)
	out := buf.String()
	assert.NotContains(t, out, "\r")
	assert.Greater(t, strings.Count(out, "\n"), 1)
	assert.Contains(t, out, "tokens/s, ETA")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
