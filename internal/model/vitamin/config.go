// Package vitamin is UniTok's image model over the engine op set: the ViTamin
// encoder (timm's VisionTransformer with UniTok's MbConvStages HybridEmbed
// and GeGLU MLP), UniTok's ViTaminDecoder, and the CLIP image head
// (fc_norm, projection). Layers are named by their state-dict keys
// (encoder.patch_embed.backbone.stem.conv1, decoder.up_conv2.0.conv2_kxk,
// ...), so a checkpoint key leads to the code that uses it.
package vitamin

import (
	"fmt"
	"strconv"
	"strings"
)

// Config is the architecture of UniTok's image path. Every size is a
// parameter; VitaminLarge and VitaminBase are the released ones.
type Config struct {
	Name        string // "vitamin_large", "vitamin_base", or "custom"
	ImgSize     int    // input side in pixels (256)
	StemWidth   int    // stem output channels
	StageDims   []int  // MbConvLNBlock stage widths (160, 320)
	StageDepths []int  // blocks per stage (2, 4)
	Width       int    // ViT width C (1024)
	Depth       int    // encoder ViT blocks (31)
	Heads       int    // ViT attention heads (16)
	MLPHidden   int    // GeGLU hidden width (2*C)
	DecDepth    int    // decoder ViT blocks (31)
	DecDims     []int  // decoder widths after up_conv1 and up_conv3 (320, 160)
	DecDepths   []int  // InvMbConvLNBlocks in up_conv2 and up_conv3 (4, 2)
	EmbedDim    int    // CLIP projection width (args.embed_dim); 0: no head
}

// VitaminLarge returns UniTok-Large's image architecture (embedDim: the
// CLIP projection width, 0 for none).
func VitaminLarge(embedDim int) Config {
	return Config{Name: "vitamin_large", ImgSize: 256, StemWidth: 160, StageDims: []int{160, 320}, StageDepths: []int{2, 4},
		Width: 1024, Depth: 31, Heads: 16, MLPHidden: 2048, DecDepth: 31, DecDims: []int{320, 160}, DecDepths: []int{4, 2}, EmbedDim: embedDim}
}

// VitaminBase returns vitamin_base's image architecture.
func VitaminBase(embedDim int) Config {
	return Config{Name: "vitamin_base", ImgSize: 256, StemWidth: 128, StageDims: []int{128, 256}, StageDepths: []int{2, 4},
		Width: 768, Depth: 14, Heads: 12, MLPHidden: 1536, DecDepth: 14, DecDims: []int{256, 128}, DecDepths: []int{4, 2}, EmbedDim: embedDim}
}

// Preset returns the named architecture ("vitamin_large", "vitamin_base",
// with or without an image-size suffix such as "_256").
func Preset(model string, embedDim int) (Config, bool) {
	m := model
	if i := strings.LastIndexByte(m, '_'); i >= 0 {
		if _, err := strconv.Atoi(m[i+1:]); err == nil {
			m = m[:i]
		}
	}
	switch m {
	case "vitamin_large":
		return VitaminLarge(embedDim), true
	case "vitamin_base":
		return VitaminBase(embedDim), true
	}
	return Config{}, false
}

// Stride is the total downsampling of the encoder: stem, one per stage,
// and the StridedConv.
func (c Config) Stride() int { return 1 << (2 + len(c.StageDims)) }

// Grid is the token grid side: ImgSize / Stride.
func (c Config) Grid() int { return c.ImgSize / c.Stride() }

// Tokens is the number of tokens per image.
func (c Config) Tokens() int { return c.Grid() * c.Grid() }

// Validate reports the first inconsistency.
func (c Config) Validate() error {
	switch {
	case c.StemWidth <= 0 || c.Width <= 0 || c.Heads <= 0 || c.MLPHidden <= 0 || c.ImgSize <= 0:
		return fmt.Errorf("vitamin config: sizes must be positive: %+v", c)
	case len(c.StageDims) != 2 || len(c.StageDepths) != 2:
		// UniTok's MbConvStages builds exactly two stages (embed_dim[:2]),
		// and the decoder's four x2 upsamplings undo exactly stride 16.
		return fmt.Errorf("vitamin config: want 2 MbConv stages, have widths %v and depths %v", c.StageDims, c.StageDepths)
	case len(c.DecDims) != 2 || len(c.DecDepths) != 2 || c.DecDepths[0] < 1 || c.DecDepths[1] < 1:
		return fmt.Errorf("vitamin config: the decoder needs 2 widths and 2 depths >= 1, have %v and %v", c.DecDims, c.DecDepths)
	case c.Width%c.Heads != 0:
		return fmt.Errorf("vitamin config: width %d is not divisible by %d heads", c.Width, c.Heads)
	case c.ImgSize%c.Stride() != 0:
		return fmt.Errorf("vitamin config: image size %d is not a multiple of the encoder stride %d", c.ImgSize, c.Stride())
	}
	for _, d := range c.StageDepths {
		if d < 1 {
			return fmt.Errorf("vitamin config: stage depths must be >= 1, have %v", c.StageDepths)
		}
	}
	return nil
}

// makeDivisible is timm's make_divisible(v, 8): the expanded width of an
// MbConv block.
func makeDivisible(v float64) int {
	const divisor = 8
	n := max(divisor, int(v+divisor/2)/divisor*divisor)
	if float64(n) < 0.9*v {
		n += divisor
	}
	return n
}

// Tensor is a checkpoint tensor the image path reads.
type Tensor struct {
	Name  string
	Shape []int
}

// Key prefixes of the three parts in UniTok's state dict.
const (
	EncoderPrefix = "encoder."
	DecoderPrefix = "decoder."
	backbone      = "encoder.patch_embed.backbone."
	PosEmbedKey   = "encoder.pos_embed" // (1, 1, C) zeros in UniTok; added when present
)

// EncoderTensors lists the encoder's tensors (pos_embed excluded: optional).
func (c Config) EncoderTensors() []Tensor {
	var t tlist
	t.conv(backbone+"stem.conv1", 3, c.StemWidth, 3, 1)
	t.vec(backbone+"stem.norm1", c.StemWidth)
	t.conv(backbone+"stem.conv2", c.StemWidth, c.StemWidth, 3, 1)
	in := c.StemWidth
	for s, dim := range c.StageDims {
		for d := 0; d < c.StageDepths[s]; d++ {
			p := fmt.Sprintf("%sstages.%d.%d.", backbone, s, d)
			if d == 0 && in != dim {
				t.conv(p+"shortcut.expand", in, dim, 1, 1)
			}
			mid := makeDivisible(float64(dim) * 4)
			t.vec(p+"pre_norm", in)
			t.conv(p+"conv1_1x1", in, mid, 1, 1)
			t.conv(p+"conv2_kxk", mid, mid, 3, mid)
			t.conv(p+"conv3_1x1", mid, dim, 1, 1)
			in = dim
		}
	}
	t.vec(backbone+"pool.norm", in)
	t.conv(backbone+"pool.proj", in, c.Width, 3, 1)
	for i := 0; i < c.Depth; i++ {
		t.block(fmt.Sprintf("encoder.blocks.%d", i), c.Width, c.MLPHidden)
	}
	t.vec("encoder.norm", c.Width)
	return t
}

// DecoderTensors lists the decoder's tensors.
func (c Config) DecoderTensors() []Tensor {
	var t tlist
	for i := 0; i < c.DecDepth; i++ {
		t.block(fmt.Sprintf("decoder.blocks.%d", i), c.Width, c.MLPHidden)
	}
	t.vec("decoder.norm", c.Width)
	t.conv("decoder.up_conv1.conv", c.Width, c.DecDims[0], 3, 1)
	in := c.DecDims[0]
	for g, dim := range c.DecDims {
		for d := 0; d < c.DecDepths[g]; d++ {
			p := fmt.Sprintf("decoder.up_conv%d.%d.", g+2, d)
			mid := makeDivisible(float64(dim) * 4)
			if d == 0 {
				t.conv(p+"shortcut.conv", in, dim, 3, 1)
			} else if in != dim {
				t.conv(p+"shortcut", in, dim, 1, 1)
			}
			t.vec(p+"pre_norm", in)
			t.conv(p+"conv1_1x1", in, mid, 1, 1)
			if d == 0 {
				t.conv(p+"up.conv", mid, mid, 3, 1)
			}
			t.conv(p+"conv2_kxk", mid, mid, 3, mid)
			t.conv(p+"conv3_1x1", mid, dim, 1, 1)
			in = dim
		}
	}
	t.conv("decoder.up_conv4.conv1.conv", in, in, 3, 1)
	t.vec("decoder.up_conv4.norm1", in)
	t.conv("decoder.up_conv4.conv2", in, 3, 3, 1)
	return t
}

// HeadTensors lists the CLIP image head's tensors (none when EmbedDim is 0).
func (c Config) HeadTensors() []Tensor {
	if c.EmbedDim == 0 {
		return nil
	}
	var t tlist
	t.vec("fc_norm", c.Width)
	t.lin("projection", c.Width, c.EmbedDim)
	return t
}

type tlist []Tensor

func (t *tlist) add(name string, shape ...int) { *t = append(*t, Tensor{name, shape}) }
func (t *tlist) vec(name string, n int)        { t.add(name+".weight", n); t.add(name+".bias", n) }
func (t *tlist) lin(name string, in, out int) {
	t.add(name+".weight", out, in)
	t.add(name+".bias", out)
}
func (t *tlist) conv(name string, in, out, k, groups int) {
	t.add(name+".weight", out, in/groups, k, k)
	t.add(name+".bias", out)
}
func (t *tlist) block(p string, dim, hidden int) {
	t.vec(p+".norm1", dim)
	t.lin(p+".attn.qkv", dim, 3*dim)
	t.lin(p+".attn.proj", dim, dim)
	t.vec(p+".norm2", dim)
	t.vec(p+".mlp.norm", dim)
	t.lin(p+".mlp.w0", dim, hidden)
	t.lin(p+".mlp.w1", dim, hidden)
	t.lin(p+".mlp.w2", hidden, dim)
}

// Shapes answers shape queries about a checkpoint.
type Shapes interface {
	Shape(name string) ([]int, bool)
}

// Infer derives the architecture from tensor shapes: model names a preset
// ("" or unknown: custom), which is cross-checked against the shapes;
// heads > 0 overrides the head count (a custom config otherwise gets width/64,
// ViTamin's head width); imgSize > 0 sets the input size (default 256).
// The decoder and head are inferred when their tensors are present
// (DecDepth 0 / EmbedDim 0 otherwise). The number of blocks is counted from
// the keys, so a custom checkpoint missing its last blocks reads as a
// shallower model; presets are cross-checked.
func Infer(s Shapes, model string, heads, imgSize int) (c Config, err error) {
	dim0 := func(name string) (int, bool) {
		sh, ok := s.Shape(name)
		if !ok || len(sh) == 0 {
			return 0, false
		}
		return sh[0], true
	}
	count := func(f func(i int) string) int {
		n := 0
		for ; ; n++ {
			if _, ok := s.Shape(f(n)); !ok {
				return n
			}
		}
	}
	c.Name = "custom"
	var ok bool
	if c.StemWidth, ok = dim0(backbone + "stem.conv1.weight"); !ok {
		return c, fmt.Errorf("missing tensor %sstem.conv1.weight (no ViTamin encoder in the checkpoint)", backbone)
	}
	for st := 0; ; st++ {
		d := count(func(i int) string { return fmt.Sprintf("%sstages.%d.%d.conv3_1x1.weight", backbone, st, i) })
		if d == 0 {
			break
		}
		w, _ := dim0(fmt.Sprintf("%sstages.%d.0.conv3_1x1.weight", backbone, st))
		c.StageDims = append(c.StageDims, w)
		c.StageDepths = append(c.StageDepths, d)
	}
	if c.Width, ok = dim0(backbone + "pool.proj.weight"); !ok {
		return c, fmt.Errorf("missing tensor %spool.proj.weight", backbone)
	}
	c.Depth = count(func(i int) string { return fmt.Sprintf("encoder.blocks.%d.norm1.weight", i) })
	c.MLPHidden, _ = dim0("encoder.blocks.0.mlp.w0.weight")
	c.DecDepth = count(func(i int) string { return fmt.Sprintf("decoder.blocks.%d.norm1.weight", i) })
	if c.MLPHidden == 0 {
		c.MLPHidden, _ = dim0("decoder.blocks.0.mlp.w0.weight")
	}
	if w, ok := dim0("decoder.up_conv1.conv.weight"); ok {
		c.DecDims = []int{w, 0}
		c.DecDepths = []int{
			count(func(i int) string { return fmt.Sprintf("decoder.up_conv2.%d.conv3_1x1.weight", i) }),
			count(func(i int) string { return fmt.Sprintf("decoder.up_conv3.%d.conv3_1x1.weight", i) }),
		}
		c.DecDims[1], _ = dim0("decoder.up_conv3.0.conv3_1x1.weight")
	} else {
		c.DecDims, c.DecDepths = []int{0, 0}, []int{1, 1}
	}
	c.EmbedDim, _ = dim0("projection.weight")
	c.Heads = max(c.Width/64, 1)
	c.ImgSize = 256
	if p, ok := Preset(model, c.EmbedDim); ok {
		if err := sameArch(p, c); err != nil {
			return c, fmt.Errorf("args.model=%s but the checkpoint's tensors differ: %v", model, err)
		}
		c.Name, c.Heads = p.Name, p.Heads
	}
	if heads > 0 {
		c.Heads = heads
	}
	if imgSize > 0 {
		c.ImgSize = imgSize
	}
	return c, nil
}

func sameArch(p, c Config) error {
	eq := func(a, b []int) bool { return fmt.Sprint(a) == fmt.Sprint(b) }
	switch {
	case p.StemWidth != c.StemWidth || !eq(p.StageDims, c.StageDims) || !eq(p.StageDepths, c.StageDepths):
		return fmt.Errorf("conv stages: stem %d, widths %v, depths %v; %s has %d, %v, %v", c.StemWidth, c.StageDims, c.StageDepths, p.Name, p.StemWidth, p.StageDims, p.StageDepths)
	case p.Width != c.Width || p.Depth != c.Depth || p.MLPHidden != c.MLPHidden:
		return fmt.Errorf("ViT: width %d, %d blocks, MLP %d; %s has %d, %d, %d", c.Width, c.Depth, c.MLPHidden, p.Name, p.Width, p.Depth, p.MLPHidden)
	case c.DecDepth != 0 && (p.DecDepth != c.DecDepth || !eq(p.DecDims, c.DecDims) || !eq(p.DecDepths, c.DecDepths)):
		return fmt.Errorf("decoder: %d blocks, widths %v, depths %v; %s has %d, %v, %v", c.DecDepth, c.DecDims, c.DecDepths, p.Name, p.DecDepth, p.DecDims, p.DecDepths)
	}
	return nil
}
