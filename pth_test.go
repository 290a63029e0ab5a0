package unitok

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/unitok/unitok/internal/safetensors"
)

// The PyTorch fixtures under testdata/pth are written by torch.save from the
// synthetic weights of pthConfig with seed 1 (fp32 exactly, bf16 rounded).
var pthConfig = Config{InDim: 48, LatentDim: 16, NumCodebooks: 4, CodebookSize: 100, NumHeads: 4, Causal: true}

func pthFixture(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("testdata", "pth", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("fixture %s is missing", p)
	}
	return p
}

func TestPthFP32MatchesSynth(t *testing.T) {
	r, err := openCheckpoint(pthFixture(t, "small_fp32.pth"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	have := map[string]bool{}
	for _, ti := range r.Tensors() {
		if !IsCoreTensor(ti.Name) {
			t.Errorf("Tensors lists non-core %s", ti.Name)
		}
		have[ti.Name] = true
	}
	for _, want := range SynthTensorInfos(pthConfig) {
		if !have[want.Name] {
			t.Errorf("missing %s", want.Name)
			continue
		}
		got, err := r.ReadFloat32(want.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, SynthTensor(want.Name, want.Shape, 1)) {
			t.Errorf("%s differs from the synthetic weights", want.Name)
		}
	}
	m, err := LoadModel(r, WithHeads(4), WithCausal(true))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := SynthModel(pthConfig, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, ref) {
		t.Error("model loaded from small_fp32.pth differs from SynthModel(seed 1)")
	}
}

func TestPthBF16MatchesSafetensors(t *testing.T) {
	pr, err := openCheckpoint(pthFixture(t, "small_bf16.pth"))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	sr, err := safetensors.Open(pthFixture(t, "small_bf16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	have := map[string]string{}
	for _, ti := range pr.Tensors() {
		have[ti.Name] = string(ti.DType)
	}
	for _, ti := range sr.Tensors() {
		if have[ti.Name] != string(ti.DType) {
			t.Errorf("%s: .pth has dtype %q, safetensors %q", ti.Name, have[ti.Name], ti.DType)
			continue
		}
		a, err := pr.ReadFloat32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		b, err := sr.ReadFloat32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s differs between small_bf16.pth and small_bf16.safetensors", ti.Name)
		}
	}
}

// requireCPUEngine skips when the CPU engine is not compiled in yet.
func requireCPUEngine(t *testing.T) {
	t.Helper()
	for _, d := range Devices() {
		if d == "cpu" {
			return
		}
	}
	t.Skip("no cpu backend registered")
}

func randFeatures(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func TestPthEncodeMatches(t *testing.T) {
	requireCPUEngine(t)
	const B, N = 2, 16
	x := randFeatures(B*N*pthConfig.InDim, 3)
	opts := []Option{WithDevice("cpu"), WithHeads(4), WithCausal(true)}
	run := func(tok *Tokenizer, err error) ([]int32, []float32) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer tok.Close()
		codes, err := tok.Encode(x, B, N)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := tok.Decode(codes, B, N)
		if err != nil {
			t.Fatal(err)
		}
		return codes, dec
	}
	ref, err := SynthModel(pthConfig, 1)
	if err != nil {
		t.Fatal(err)
	}
	c0, d0 := run(New(ref, opts...))
	c1, d1 := run(Open(pthFixture(t, "small_fp32.pth"), opts...))
	c2, d2 := run(Open(pthFixture(t, "bare_state_dict.pth"), opts...))
	if !reflect.DeepEqual(c0, c1) || !reflect.DeepEqual(d0, d1) || !reflect.DeepEqual(c0, c2) || !reflect.DeepEqual(d0, d2) {
		t.Error("fp32 .pth encode/decode differs from the synthetic model")
	}
	c3, d3 := run(Open(pthFixture(t, "small_bf16.pth"), opts...))
	c4, d4 := run(Open(pthFixture(t, "small_bf16.safetensors"), opts...))
	if !reflect.DeepEqual(c3, c4) || !reflect.DeepEqual(d3, d4) {
		t.Error("bf16 .pth encode/decode differs from bf16 safetensors")
	}
}

func TestPthRefusals(t *testing.T) {
	_, err := Open(pthFixture(t, "malicious.pth"), WithDevice("cpu"))
	if err == nil || !strings.Contains(err.Error(), "refusing to load global os.system") || !errors.Is(err, ErrBadInput) {
		t.Errorf("malicious.pth: %v", err)
	}
	if _, err := InspectCheckpoint(pthFixture(t, "malicious.pth")); err == nil {
		t.Error("InspectCheckpoint accepted malicious.pth")
	}
	good, err := os.ReadFile(pthFixture(t, "small_fp32.pth"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range []int{len(good) - 1, len(good) / 2, 100} {
		p := filepath.Join(dir, "trunc.pth")
		if err := os.WriteFile(p, good[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(p, WithDevice("cpu"), WithHeads(4))
		if err == nil || !strings.Contains(err.Error(), "truncated") || !errors.Is(err, ErrBadInput) {
			t.Errorf("truncated to %d bytes: %v", n, err)
		}
	}
}

func TestInspectCheckpoint(t *testing.T) {
	info, err := InspectCheckpoint(pthFixture(t, "small_fp32.pth"))
	if err != nil {
		t.Fatal(err)
	}
	want := pthConfig
	// The .pth records neither heads nor causal: heads are C/D = 48/16, as
	// UniTok's UniTok class builds them; attention is full.
	want.NumHeads, want.Causal = 3, false
	if info.Format != "pytorch-zip" || info.Config != want || info.ConfigError != "" || info.HeadsKnown || info.HeadsSource != HeadsFromWidths {
		t.Errorf("info %+v", info)
	}
	if len(info.Missing) != 0 || len(info.Misshapen) != 0 {
		t.Errorf("missing %v, misshapen %v", info.Missing, info.Misshapen)
	}
	if len(info.Tensors) < len(SynthTensorInfos(pthConfig)) || len(info.Ignored) == 0 || info.Metadata["args.vocab_width"] != "16" {
		t.Errorf("tensors %d, ignored %v, metadata %v", len(info.Tensors), info.Ignored, info.Metadata)
	}
	if g := info.SortedIgnoredGroups(); len(g) == 0 || g[0] > g[len(g)-1] {
		t.Errorf("groups %v", g)
	}
	st, err := InspectCheckpoint(pthFixture(t, "small_bf16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Format != "safetensors" || st.Config != pthConfig || !st.HeadsKnown || st.HeadsSource != HeadsFromMetadata || len(st.Missing) != 0 {
		t.Errorf("safetensors info %+v", st)
	}
}

func TestConvertToSafetensors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "core.safetensors")
	if err := ConvertToSafetensors(pthFixture(t, "small_bf16.pth"), out); err != nil {
		t.Fatal(err)
	}
	got, err := safetensors.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	ref, err := safetensors.Open(pthFixture(t, "small_bf16.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	if !reflect.DeepEqual(got.Tensors(), ref.Tensors()) {
		t.Errorf("converted tensors %v\nwant %v", got.Tensors(), ref.Tensors())
	}
	for _, ti := range ref.Tensors() {
		a, _ := got.Raw(ti.Name)
		b, _ := ref.Raw(ti.Name)
		if string(a) != string(b) {
			t.Errorf("%s: converted bytes differ", ti.Name)
		}
	}
	if m := got.Metadata(); m["source"] != "small_bf16.pth" || m["causal"] != "false" || m["args.vocab_width"] != "16" {
		t.Errorf("metadata %v", m)
	}
	// A refused input writes nothing.
	bad := filepath.Join(dir, "bad.safetensors")
	if err := ConvertToSafetensors(pthFixture(t, "malicious.pth"), bad); err == nil {
		t.Error("converted malicious.pth")
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("output left behind: %v", err)
	}
	// The fp32 conversion loads to exactly the synthetic model.
	out32 := filepath.Join(dir, "core32.safetensors")
	if err := ConvertToSafetensors(pthFixture(t, "small_fp32.pth"), out32); err != nil {
		t.Fatal(err)
	}
	r, err := openCheckpoint(out32)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m, err := LoadModel(r, WithHeads(4), WithCausal(true))
	if err != nil {
		t.Fatal(err)
	}
	syn, _ := SynthModel(pthConfig, 1)
	if !reflect.DeepEqual(m, syn) {
		t.Error("converted fp32 model differs from SynthModel(seed 1)")
	}
}
