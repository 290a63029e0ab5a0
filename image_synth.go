package unitok

import (
	"fmt"
	"math"
	"strings"

	"github.com/unitok/unitok/internal/ckpt"
	"github.com/unitok/unitok/internal/model/vitamin"
)

// imageSynthTensor extends SynthTensor to the image tensors, bit for bit as
// bench/torch_image_reference.py does: 4-D convolution weights
// (out, in/groups, kh, kw) are scaled by float32(1/sqrt(in/groups*kh*kw)),
// encoder.pos_embed is zero (as UniTok sets it), everything else is
// SynthTensor.
func imageSynthTensor(name string, shape []int, seed uint64) []float32 {
	if strings.HasSuffix(name, "pos_embed") {
		n := 1
		for _, s := range shape {
			n *= s
		}
		return make([]float32, n)
	}
	if len(shape) == 4 {
		n := shape[0] * shape[1] * shape[2] * shape[3]
		h := uint64(14695981039346656037)
		for i := 0; i < len(name); i++ {
			h ^= uint64(name[i])
			h *= 1099511628211
		}
		v := synthUniform(h^(seed*0x9E3779B97F4A7C15), n)
		scale := float32(1 / math.Sqrt(float64(shape[1]*shape[2]*shape[3])))
		for i := range v {
			v[i] *= scale
		}
		return v
	}
	return SynthTensor(name, shape, seed)
}

// synthImageReader serves a whole synthetic UniTok state dict: the core of
// c and the image tensors of vc, from one seed.
type synthImageReader struct {
	infos []ckpt.Info
	seed  uint64
	meta  map[string]string
}

func newSynthImageReader(c Config, vc vitamin.Config, seed uint64) *synthImageReader {
	r := &synthImageReader{seed: seed, meta: map[string]string{
		"num_heads": fmt.Sprint(c.NumHeads), "causal": fmt.Sprint(c.Causal),
		"model": vc.Name, "vit_heads": fmt.Sprint(vc.Heads), "img_size": fmt.Sprint(vc.ImgSize),
	}}
	r.infos = SynthTensorInfos(c)
	for _, part := range [][]vitamin.Tensor{vc.EncoderTensors(), vc.DecoderTensors(), vc.HeadTensors()} {
		for _, t := range part {
			r.infos = append(r.infos, ckpt.Info{Name: t.Name, DType: "F32", Shape: t.Shape})
		}
	}
	return r
}

func (r *synthImageReader) Tensors() []ckpt.Info { return r.infos }
func (r *synthImageReader) ReadFloat32(name string) ([]float32, error) {
	for _, t := range r.infos {
		if t.Name == name {
			return imageSynthTensor(name, t.Shape, r.seed), nil
		}
	}
	return nil, fmt.Errorf("no synthetic tensor %s", name)
}
func (r *synthImageReader) Metadata() map[string]string { return r.meta }
func (r *synthImageReader) Close() error                { return nil }

// openSynthImage builds a Tokenizer over a synthetic UniTok model (core c,
// image architecture vc), for tests and benchmarks.
func openSynthImage(c Config, vc vitamin.Config, seed uint64, opts ...Option) (*Tokenizer, error) {
	r := newSynthImageReader(c, vc, seed)
	return openReader(r, opts...)
}

// SynthImageTokenizer builds a Tokenizer over a whole UniTok model with
// deterministic pseudo-random weights: the encoder and decoder of the
// preset architecture model ("vitamin_base" or "vitamin_large"), the CLIP
// image head and the real core (D=64, K=8, V=4096, H=C/D). For benchmarks
// of the image path where no checkpoint is at hand; its outputs mean
// nothing.
func SynthImageTokenizer(model string, seed uint64, opts ...Option) (*Tokenizer, error) {
	vc, ok := vitamin.Preset(model, 1024)
	if !ok {
		return nil, fmt.Errorf("synthetic image model %q: want vitamin_base or vitamin_large", model)
	}
	c := Config{InDim: vc.Width, LatentDim: 64, NumCodebooks: 8, CodebookSize: 4096, NumHeads: vc.Width / 64}
	return openSynthImage(c, vc, seed, opts...)
}
