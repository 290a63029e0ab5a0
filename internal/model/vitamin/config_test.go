package vitamin

import (
	"strings"
	"testing"
)

type shapeMap map[string][]int

func (m shapeMap) Shape(name string) ([]int, bool) { s, ok := m[name]; return s, ok }

func shapesOf(c Config) shapeMap {
	m := shapeMap{}
	for _, part := range [][]Tensor{c.EncoderTensors(), c.DecoderTensors(), c.HeadTensors()} {
		for _, t := range part {
			m[t.Name] = t.Shape
		}
	}
	return m
}

func TestInferPresetsAndCustom(t *testing.T) {
	for _, p := range []Config{VitaminBase(768), VitaminLarge(1024)} {
		c, err := Infer(shapesOf(p), p.Name+"_256", 0, 0)
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		if c.Name != p.Name || c.Heads != p.Heads || c.Tokens() != 256 || c.EmbedDim != p.EmbedDim ||
			c.Depth != p.Depth || c.DecDepth != p.DecDepth || c.DecDepths[0] != 4 || c.DecDims[1] != p.DecDims[1] {
			t.Fatalf("%s: inferred %+v", p.Name, c)
		}
	}
	// args.model says large but the tensors are base: refused, naming the part.
	if _, err := Infer(shapesOf(VitaminBase(768)), "vitamin_large", 0, 0); err == nil || !strings.Contains(err.Error(), "vitamin_large") {
		t.Fatalf("cross-check: %v", err)
	}
	// No model name: custom, heads = width/64, overrides applied.
	c, err := Infer(shapesOf(VitaminBase(0)), "", 0, 0)
	if err != nil || c.Name != "custom" || c.Heads != 12 || c.EmbedDim != 0 || c.ImgSize != 256 {
		t.Fatalf("custom: %+v, %v", c, err)
	}
	c, err = Infer(shapesOf(VitaminBase(0)), "", 6, 128)
	if err != nil || c.Heads != 6 || c.ImgSize != 128 || c.Tokens() != 64 {
		t.Fatalf("overrides: %+v, %v", c, err)
	}
	// An encoder-only checkpoint infers no decoder.
	enc := shapeMap{}
	for _, t := range VitaminBase(0).EncoderTensors() {
		enc[t.Name] = t.Shape
	}
	if c, err = Infer(enc, "vitamin_base", 0, 0); err != nil || c.DecDepth != 0 {
		t.Fatalf("encoder only: %+v, %v", c, err)
	}
	if _, err = Infer(shapeMap{}, "", 0, 0); err == nil || !strings.Contains(err.Error(), "stem.conv1.weight") {
		t.Fatalf("empty: %v", err)
	}
}

func TestMakeDivisibleMatchesTimm(t *testing.T) {
	// timm.layers.make_divisible(v, 8) for the widths ViTamin uses.
	for v, want := range map[float64]int{640: 640, 1280: 1280, 512: 512, 64: 64, 12: 16, 4: 8, 100: 104} {
		if got := makeDivisible(v); got != want {
			t.Fatalf("makeDivisible(%g) = %d, want %d", v, got, want)
		}
	}
}
