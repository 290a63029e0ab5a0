package unitok

import (
	"math"

	"fmt"
	"github.com/unitok/unitok/internal/ckpt"
	"strings"
)

// SynthModel builds a model with deterministic pseudo-random weights, for
// benchmarks and for fixtures too large to commit. bench/torch_reference.py
// implements the same generator bit for bit, so a fixture made there from a
// seed is reproduced here from the same seed (see synthTensor).
func SynthModel(c Config, seed uint64) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s := &tensorSet{r: synthReader{c: c, seed: seed}, infos: map[string]ckpt.Info{}}
	for _, t := range SynthTensorInfos(c) {
		s.infos[t.Name] = t
	}
	return loadModel(s, c)
}

// SynthTensorInfos lists every core tensor of config c with its shape, in
// checkpoint order.
func SynthTensorInfos(c Config) []ckpt.Info {
	var out []ckpt.Info
	add := func(name string, shape ...int) {
		out = append(out, ckpt.Info{Name: name, DType: "F32", Shape: shape})
	}
	for _, p := range []struct {
		prefix  string
		in, out int
	}{{keyQuantProj, c.InDim, c.LatentDim}, {keyPostQuantProj, c.LatentDim, c.InDim}} {
		w := max(p.in, p.out)
		for _, n := range []string{"norm1", "norm3"} {
			add(p.prefix+"."+n+".weight", p.in)
			add(p.prefix+"."+n+".bias", p.in)
		}
		add(p.prefix+".norm2.weight", p.out)
		add(p.prefix+".norm2.bias", p.out)
		add(p.prefix+".attn.qkv.weight", 3*w, p.in)
		add(p.prefix+".attn.q_bias", w)
		add(p.prefix+".attn.zero_k_bias", w)
		add(p.prefix+".attn.v_bias", w)
		add(p.prefix+".attn.proj.weight", p.out, p.out)
		add(p.prefix+".attn.proj.bias", p.out)
		add(p.prefix+".proj.weight", p.out, p.in)
		add(p.prefix+".proj.bias", p.out)
		add(p.prefix+".mlp.norm.weight", p.out)
		add(p.prefix+".mlp.norm.bias", p.out)
		add(p.prefix+".mlp.w0.weight", 2*p.out, p.out)
		add(p.prefix+".mlp.w0.bias", 2*p.out)
		add(p.prefix+".mlp.w1.weight", 2*p.out, p.out)
		add(p.prefix+".mlp.w1.bias", 2*p.out)
		add(p.prefix+".mlp.w2.weight", p.out, 2*p.out)
		add(p.prefix+".mlp.w2.bias", p.out)
	}
	for i := 0; i < c.NumCodebooks; i++ {
		add(fmt.Sprintf(keyCodebookFmt, i), c.CodebookSize, c.ChunkDim())
	}
	return out
}

// synthUniform returns n values (2u-1) with u = k/2^24 drawn from
// splitmix64's finalizer over seed + i*golden; every value is exact in
// float32.
func synthUniform(seed uint64, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		z := seed + uint64(i)*0x9E3779B97F4A7C15
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		k := int64(z >> 40) // 24 random bits
		out[i] = float32(2*k-(1<<24)) / (1 << 24)
	}
	return out
}

// SynthTensor returns the named tensor's values for a synthetic model:
//
//	seed_t = fnv1a64(name) XOR (seed * golden)
//	v_i    = 2*u_i - 1                          (synthUniform)
//	Linear weights (2-D, not codebooks): v * float32(1/sqrt(in))
//	LayerNorm weights:                   1 + float32(0.1*v)
//	biases, q_bias, v_bias:              float32(0.02*v)
//	zero_k_bias:                         0
//	codebooks:                           v
//
// with every product rounded to float32 before any addition.
func SynthTensor(name string, shape []int, seed uint64) []float32 {
	n := 1
	for _, s := range shape {
		n *= s
	}
	if strings.HasSuffix(name, "zero_k_bias") {
		return make([]float32, n)
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	v := synthUniform(h^(seed*0x9E3779B97F4A7C15), n)
	isNorm := strings.Contains(name, "norm")
	switch {
	case strings.HasPrefix(name, "quantizer."):
	case len(shape) == 2:
		scale := float32(1 / sqrt64(float64(shape[1])))
		for i := range v {
			v[i] = float32(v[i] * scale)
		}
	case isNorm && strings.HasSuffix(name, ".weight"):
		for i := range v {
			x := float32(0.1 * v[i])
			v[i] = float32(1 + x)
		}
	default: // biases
		for i := range v {
			v[i] = float32(0.02 * v[i])
		}
	}
	return v
}

type synthReader struct {
	c    Config
	seed uint64
}

func (r synthReader) Tensors() []ckpt.Info { return SynthTensorInfos(r.c) }
func (r synthReader) ReadFloat32(name string) ([]float32, error) {
	for _, t := range SynthTensorInfos(r.c) {
		if t.Name == name {
			return SynthTensor(name, t.Shape, r.seed), nil
		}
	}
	return nil, fmt.Errorf("no synthetic tensor %s", name)
}
func (r synthReader) Metadata() map[string]string { return map[string]string{} }
func (r synthReader) Close() error                { return nil }

func sqrt64(x float64) float64 { return math.Sqrt(x) }
