package vitamin

import (
	"context"
	"fmt"

	"github.com/unitok/unitok/internal/engine"
	"github.com/unitok/unitok/internal/model/nn"
)

// lnEps is the eps of every LayerNorm2d and ViT LayerNorm in ViTamin.
const lnEps = 1e-6

// Stem is UniTok's Stem: conv1 (3x3 s2) -> norm1 (LayerNorm2d + GELU) ->
// conv2 (3x3).
type Stem struct {
	Conv1, Conv2 nn.Conv2d
	Norm1        nn.LayerNorm
}

// MbConvLNBlock is UniTok's pre-norm inverted bottleneck: shortcut +
// conv3_1x1(gelu(conv2_kxk(gelu(conv1_1x1(pre_norm(x)))))). With stride 2
// the shortcut is Downsample2d: AvgPool2d(3, 2, 1, count_include_pad=False)
// then a 1x1 expand when the width changes.
type MbConvLNBlock struct {
	Stride    int
	Shortcut  *nn.Conv2d // shortcut.expand (stride 2) or shortcut (1x1); nil: identity
	PreNorm   nn.LayerNorm
	Conv1     nn.Conv2d // conv1_1x1
	Conv2     nn.Conv2d // conv2_kxk, depthwise, strided
	Conv3     nn.Conv2d // conv3_1x1
	Downscale bool      // shortcut pools (stride 2)
}

// StridedConv is UniTok's StridedConv: norm (LayerNorm2d) -> proj (3x3 s2).
type StridedConv struct {
	Norm nn.LayerNorm
	Proj nn.Conv2d
}

// Encoder is the ViTamin encoder as UniTok builds it (patch_size 1, no class
// token, zero pos_embed, GeGLU MLP, final norm, no pooling or head).
type Encoder struct {
	Cfg      Config
	Stem     Stem
	Stages   [][]MbConvLNBlock
	Pool     StridedConv
	PosEmbed engine.Tensor // nil when absent or zero
	Blocks   []nn.Block
	Norm     nn.LayerNorm
}

// LoadEncoder uploads the encoder of config c from src (keys encoder.*).
func LoadEncoder(e engine.Engine, src nn.Source, c Config) (*Encoder, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	l := &nn.Loader{E: e, Src: src}
	m := &Encoder{Cfg: c}
	m.Stem = Stem{
		Conv1: l.Conv2d(backbone+"stem.conv1", 3, c.StemWidth, 3, 2, 1, 1),
		Norm1: l.LayerNorm(backbone+"stem.norm1", c.StemWidth, lnEps),
		Conv2: l.Conv2d(backbone+"stem.conv2", c.StemWidth, c.StemWidth, 3, 1, 1, 1),
	}
	in := c.StemWidth
	for s, dim := range c.StageDims {
		var stage []MbConvLNBlock
		for d := 0; d < c.StageDepths[s]; d++ {
			p := fmt.Sprintf("%sstages.%d.%d.", backbone, s, d)
			b := MbConvLNBlock{Stride: 1}
			mid := makeDivisible(float64(dim) * 4)
			if d == 0 {
				b.Stride, b.Downscale = 2, true
				if in != dim {
					sc := l.Conv2d(p+"shortcut.expand", in, dim, 1, 1, 0, 1)
					b.Shortcut = &sc
				}
			} else if in != dim {
				sc := l.Conv2d(p+"shortcut", in, dim, 1, 1, 0, 1)
				b.Shortcut = &sc
			}
			b.PreNorm = l.LayerNorm(p+"pre_norm", in, lnEps)
			b.Conv1 = l.Conv2d(p+"conv1_1x1", in, mid, 1, 1, 0, 1)
			b.Conv2 = l.Conv2d(p+"conv2_kxk", mid, mid, 3, b.Stride, 1, mid)
			b.Conv3 = l.Conv2d(p+"conv3_1x1", mid, dim, 1, 1, 0, 1)
			stage = append(stage, b)
			in = dim
		}
		m.Stages = append(m.Stages, stage)
	}
	m.Pool = StridedConv{
		Norm: l.LayerNorm(backbone+"pool.norm", in, lnEps),
		Proj: l.Conv2d(backbone+"pool.proj", in, c.Width, 3, 2, 1, 1),
	}
	if _, ok := src.Shape(PosEmbedKey); ok {
		pe := l.Get(PosEmbedKey, 1, 1, c.Width)
		for _, v := range pe {
			if v != 0 {
				m.PosEmbed = e.FromHost(pe, engine.Shape{B: 1, H: 1, W: 1, C: c.Width})
				break
			}
		}
	}
	for i := 0; i < c.Depth; i++ {
		m.Blocks = append(m.Blocks, l.Block(fmt.Sprintf("encoder.blocks.%d", i), c.Width, c.Heads, c.MLPHidden))
	}
	m.Norm = l.LayerNorm("encoder.norm", c.Width, lnEps)
	if l.Err != nil {
		return nil, l.Err
	}
	return m, nil
}

// Forward maps images x (B, S, S, 3) NHWC to tokens (B, g, g, C). ctx is
// checked between blocks; on cancellation Forward returns ctx's error.
func (m *Encoder) Forward(ctx context.Context, e engine.Engine, x engine.Tensor) (engine.Tensor, error) {
	// Every tensor from here on is the encoder's own: step releases the
	// one it replaces (x itself is the caller's).
	input := x
	step := func(y engine.Tensor) {
		if y != x && x != input {
			e.Release(x)
		}
		x = y
	}
	step(m.Stem.Conv1.Forward(e, x))
	step(e.GELU(m.Stem.Norm1.Forward(e, x)))
	step(m.Stem.Conv2.Forward(e, x))
	for _, stage := range m.Stages {
		for _, b := range stage {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			step(b.Forward(e, x))
		}
	}
	step(m.Pool.Norm.Forward(e, x))
	step(m.Pool.Proj.Forward(e, x))
	if m.PosEmbed != nil {
		s := x.Shape()
		pe := e.ToHost(m.PosEmbed)
		full := make([]float32, 0, s.Elems())
		for r := 0; r < s.Rows(); r++ {
			full = append(full, pe...)
		}
		p := e.FromHost(full, s)
		x = e.Add(x, p)
		e.Release(p)
	}
	for _, b := range m.Blocks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		x = b.Forward(e, x)
	}
	step(m.Norm.Forward(e, x))
	return x, nil
}

// Forward runs the block on x.
func (b MbConvLNBlock) Forward(e engine.Engine, x engine.Tensor) engine.Tensor {
	sc := x
	if b.Downscale {
		sc = e.AvgPool3x3s2(sc)
	}
	if b.Shortcut != nil {
		s := b.Shortcut.Forward(e, sc)
		releaseUnless(e, sc, x)
		sc = s
	}
	h := chain(e, b.PreNorm.Forward(e, x),
		func(h engine.Tensor) engine.Tensor { return e.GELU(b.Conv1.Forward(e, h)) },
		func(h engine.Tensor) engine.Tensor { return e.GELU(b.Conv2.Forward(e, h)) },
		func(h engine.Tensor) engine.Tensor { return b.Conv3.Forward(e, h) })
	h = e.Add(h, sc)
	releaseUnless(e, sc, x)
	return h
}

// chain applies each step to the result of the last, releasing every
// intermediate (x too) once its successor exists.
func chain(e engine.Engine, x engine.Tensor, steps ...func(engine.Tensor) engine.Tensor) engine.Tensor {
	for _, f := range steps {
		y := f(x)
		releaseUnless(e, x, y)
		x = y
	}
	return x
}

// releaseUnless releases t when it is not keep (an op that works in place
// returns its input).
func releaseUnless(e engine.Engine, t, keep engine.Tensor) {
	if t != keep {
		e.Release(t)
	}
}

// InvMbConvLNBlock is UniTok's decoder block: shortcut + conv3_1x1(gelu(
// conv2_kxk(up(gelu(conv1_1x1(pre_norm(x))))))), where the first block of a
// group upsamples (shortcut and up are Upsample2d).
type InvMbConvLNBlock struct {
	ShortcutUp *nn.Upsample2d // shortcut (stride 2)
	Shortcut   *nn.Conv2d     // 1x1 shortcut when the width changes
	PreNorm    nn.LayerNorm
	Conv1      nn.Conv2d
	Up         *nn.Upsample2d
	Conv2      nn.Conv2d // depthwise
	Conv3      nn.Conv2d
}

// Forward runs the block on x.
func (b InvMbConvLNBlock) Forward(e engine.Engine, x engine.Tensor) engine.Tensor {
	sc := x
	switch {
	case b.ShortcutUp != nil:
		sc = b.ShortcutUp.Forward(e, x)
	case b.Shortcut != nil:
		sc = b.Shortcut.Forward(e, x)
	}
	up := func(h engine.Tensor) engine.Tensor {
		if b.Up != nil {
			return b.Up.Forward(e, h)
		}
		return h
	}
	h := chain(e, b.PreNorm.Forward(e, x),
		func(h engine.Tensor) engine.Tensor { return e.GELU(b.Conv1.Forward(e, h)) },
		up,
		func(h engine.Tensor) engine.Tensor { return e.GELU(b.Conv2.Forward(e, h)) },
		func(h engine.Tensor) engine.Tensor { return b.Conv3.Forward(e, h) })
	h = e.Add(h, sc)
	releaseUnless(e, sc, x)
	return h
}

// InvStem is UniTok's InvStem: conv1 (Upsample2d) -> norm1 (LayerNorm2d +
// GELU) -> conv2 (3x3 to RGB).
type InvStem struct {
	Conv1 nn.Upsample2d
	Norm1 nn.LayerNorm
	Conv2 nn.Conv2d
}

// Decoder is UniTok's ViTaminDecoder (norm_pre is the identity).
type Decoder struct {
	Cfg     Config
	Blocks  []nn.Block
	Norm    nn.LayerNorm
	UpConv1 nn.Upsample2d
	UpConv2 []InvMbConvLNBlock
	UpConv3 []InvMbConvLNBlock
	UpConv4 InvStem
}

// LoadDecoder uploads the decoder of config c from src (keys decoder.*).
func LoadDecoder(e engine.Engine, src nn.Source, c Config) (*Decoder, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.DecDepth == 0 {
		return nil, fmt.Errorf("missing tensor decoder.blocks.0.norm1.weight (no decoder in the checkpoint)")
	}
	l := &nn.Loader{E: e, Src: src}
	m := &Decoder{Cfg: c}
	if _, ok := src.Shape("decoder.norm_pre.weight"); ok {
		return nil, fmt.Errorf("decoder.norm_pre has weights: a pre-norm ViT is not supported")
	}
	for i := 0; i < c.DecDepth; i++ {
		m.Blocks = append(m.Blocks, l.Block(fmt.Sprintf("decoder.blocks.%d", i), c.Width, c.Heads, c.MLPHidden))
	}
	m.Norm = l.LayerNorm("decoder.norm", c.Width, lnEps)
	m.UpConv1 = l.Upsample2d("decoder.up_conv1", c.Width, c.DecDims[0])
	in := c.DecDims[0]
	groups := [2]*[]InvMbConvLNBlock{&m.UpConv2, &m.UpConv3}
	for g, dim := range c.DecDims {
		for d := 0; d < c.DecDepths[g]; d++ {
			p := fmt.Sprintf("decoder.up_conv%d.%d.", g+2, d)
			mid := makeDivisible(float64(dim) * 4)
			var b InvMbConvLNBlock
			if d == 0 {
				u := l.Upsample2d(p+"shortcut", in, dim)
				b.ShortcutUp = &u
			} else if in != dim {
				sc := l.Conv2d(p+"shortcut", in, dim, 1, 1, 0, 1)
				b.Shortcut = &sc
			}
			b.PreNorm = l.LayerNorm(p+"pre_norm", in, lnEps)
			b.Conv1 = l.Conv2d(p+"conv1_1x1", in, mid, 1, 1, 0, 1)
			if d == 0 {
				u := l.Upsample2d(p+"up", mid, mid)
				b.Up = &u
			}
			b.Conv2 = l.Conv2d(p+"conv2_kxk", mid, mid, 3, 1, 1, mid)
			b.Conv3 = l.Conv2d(p+"conv3_1x1", mid, dim, 1, 1, 0, 1)
			*groups[g] = append(*groups[g], b)
			in = dim
		}
	}
	m.UpConv4 = InvStem{
		Conv1: l.Upsample2d("decoder.up_conv4.conv1", in, in),
		Norm1: l.LayerNorm("decoder.up_conv4.norm1", in, lnEps),
		Conv2: l.Conv2d("decoder.up_conv4.conv2", in, 3, 3, 1, 1, 1),
	}
	if l.Err != nil {
		return nil, l.Err
	}
	return m, nil
}

// Forward maps tokens (B, g, g, C) to images (B, S, S, 3) NHWC, unclamped.
// ctx is checked between blocks.
func (m *Decoder) Forward(ctx context.Context, e engine.Engine, x engine.Tensor) (engine.Tensor, error) {
	for _, b := range m.Blocks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		x = b.Forward(e, x)
	}
	// From here every tensor is the decoder's own (the ViT blocks updated
	// the caller's x in place): step releases the one it replaces.
	input := x
	step := func(y engine.Tensor) {
		if y != x && x != input {
			e.Release(x)
		}
		x = y
	}
	step(m.Norm.Forward(e, x))
	step(m.UpConv1.Forward(e, x))
	for _, b := range append(append([]InvMbConvLNBlock(nil), m.UpConv2...), m.UpConv3...) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		step(b.Forward(e, x))
	}
	step(m.UpConv4.Conv1.Forward(e, x))
	step(e.GELU(m.UpConv4.Norm1.Forward(e, x)))
	step(m.UpConv4.Conv2.Forward(e, x))
	return x, nil
}

// Head is UniTok's CLIP image head: mean over tokens, fc_norm (eps 1e-6),
// projection, L2 normalization.
type Head struct {
	FcNorm     nn.LayerNorm
	Projection nn.Linear
}

// LoadHead uploads fc_norm and projection.
func LoadHead(e engine.Engine, src nn.Source, c Config) (*Head, error) {
	if c.EmbedDim == 0 {
		return nil, fmt.Errorf("missing tensor projection.weight (no CLIP image head in the checkpoint)")
	}
	l := &nn.Loader{E: e, Src: src}
	h := &Head{FcNorm: l.LayerNorm("fc_norm", c.Width, lnEps), Projection: l.Linear("projection", c.Width, c.EmbedDim)}
	if l.Err != nil {
		return nil, l.Err
	}
	return h, nil
}

// Forward maps tokens (B, N, 1, C) to normalized embeddings (B, 1, 1, E).
func (h *Head) Forward(e engine.Engine, x engine.Tensor) engine.Tensor {
	m := e.MeanPositions(x)
	return e.L2Normalize(h.Projection.Forward(e, h.FcNorm.Forward(e, m), nil))
}

// NCHWToNHWC converts a (B, C, H, W) array to (B, H, W, C).
func NCHWToNHWC(x []float32, B, C, H, W int) []float32 {
	out := make([]float32, len(x))
	for b := 0; b < B; b++ {
		for c := 0; c < C; c++ {
			src := x[(b*C+c)*H*W:]
			for p := 0; p < H*W; p++ {
				out[(b*H*W+p)*C+c] = src[p]
			}
		}
	}
	return out
}

// NHWCToNCHW converts a (B, H, W, C) array to (B, C, H, W).
func NHWCToNCHW(x []float32, B, H, W, C int) []float32 {
	out := make([]float32, len(x))
	for b := 0; b < B; b++ {
		for p := 0; p < H*W; p++ {
			src := x[(b*H*W+p)*C:]
			for c := 0; c < C; c++ {
				out[(b*C+c)*H*W+p] = src[c]
			}
		}
	}
	return out
}

// Encode runs the encoder on preprocessed images x (B, 3, S, S) NCHW and
// returns tokens (B, N, C) row-major.
func (m *Encoder) Encode(ctx context.Context, e engine.Engine, x []float32, B int) ([]float32, error) {
	defer engine.CallDone(e)
	S := m.Cfg.ImgSize
	t := e.FromHost(NCHWToNHWC(x, B, 3, S, S), engine.Shape{B: B, H: S, W: S, C: 3})
	y, err := m.Forward(ctx, e, t)
	e.Release(t)
	if err != nil {
		return nil, err
	}
	out := e.ToHost(y)
	e.Release(y)
	return out, nil
}

// Decode runs the decoder on tokens (B, N, C) and returns images
// (B, 3, S, S) NCHW, clamped to [-1, 1] when clamp is set.
func (m *Decoder) Decode(ctx context.Context, e engine.Engine, tokens []float32, B int, clamp bool) ([]float32, error) {
	defer engine.CallDone(e)
	g, C := m.Cfg.Grid(), m.Cfg.Width
	t := e.FromHost(tokens, engine.Shape{B: B, H: g, W: g, C: C})
	y, err := m.Forward(ctx, e, t)
	e.Release(t)
	if err != nil {
		return nil, err
	}
	if clamp {
		y = e.Clamp(y, -1, 1)
	}
	s := y.Shape()
	out := e.ToHost(y)
	e.Release(y)
	return NHWCToNCHW(out, s.B, s.H, s.W, s.C), nil
}

// Embed maps tokens (B, N, C) to L2-normalized embeddings (B, E).
func (h *Head) Embed(e engine.Engine, tokens []float32, B, N, C int) []float32 {
	return e.ToHost(h.Forward(e, e.FromHost(tokens, engine.Shape{B: B, H: N, W: 1, C: C})))
}
