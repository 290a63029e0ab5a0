package unitok

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/unitok/unitok/internal/ckpt"
	"github.com/unitok/unitok/internal/pth"
)

// Config holds the hyper-parameters of UniTok's tokenizer core. Every size is
// a parameter; the real UniTok-Large values are C=1024, D=64, K=8, V=4096,
// H=16.
type Config struct {
	InDim        int  // C: encoder feature width (quant_proj input, post_quant_proj output)
	LatentDim    int  // D: latent width; D = K*d
	NumCodebooks int  // K: number of codebooks (chunks of the latent)
	CodebookSize int  // V: codewords per codebook, at most 65536
	NumHeads     int  // H: attention heads of both projections
	Causal       bool // causal (j <= i) attention in both projections
}

// ChunkDim is d = D/K, the width of one codebook's codewords.
func (c Config) ChunkDim() int { return c.LatentDim / c.NumCodebooks }

// Validate reports the first inconsistency in c.
func (c Config) Validate() error {
	switch {
	case c.InDim <= 0 || c.LatentDim <= 0 || c.NumCodebooks <= 0 || c.CodebookSize <= 0 || c.NumHeads <= 0:
		return badInput("config", "all sizes must be positive: %+v", c)
	case c.LatentDim%c.NumCodebooks != 0:
		return badInput("config", "latent width %d is not divisible by %d codebooks", c.LatentDim, c.NumCodebooks)
	case c.CodebookSize > 65536:
		return badInput("config", "codebook size %d exceeds 65536", c.CodebookSize)
	}
	for _, p := range [2][2]int{{c.InDim, c.LatentDim}, {c.LatentDim, c.InDim}} {
		if _, err := headDim(p[0], p[1], c.NumHeads); err != nil {
			return err
		}
	}
	return nil
}

// headDim is UniTok's PlainAttention head width: max(in, out)/H.
func headDim(in, out, heads int) (int, error) {
	m := max(in, out)
	if m%heads != 0 {
		return 0, badInput("config", "width %d is not divisible by %d heads", m, heads)
	}
	return m / heads, nil
}

// LayerNorm is an affine layer normalization over the last axis.
type LayerNorm struct {
	Weight, Bias []float32
	Eps          float32
}

// Linear is y = x W^T + b with W of shape (Out, In), row-major, as PyTorch's
// nn.Linear stores it. Bias may be nil.
type Linear struct {
	In, Out int
	Weight  []float32
	Bias    []float32
}

// AttnProjection holds the weights of UniTok's AttnProjection(in, out, H):
//
//	x1 = proj(norm3(x)) + attn.proj(attention(norm1(x)))
//	y  = x1 + mlp(norm2(x1)),  mlp(z) = w2(gelu_tanh(w0(LN(z))) * w1(LN(z)))
type AttnProjection struct {
	In, Out, Heads, HeadDim int
	Norm1, Norm2, Norm3     LayerNorm
	QKV                     Linear // (3*H*hd, In); bias = concat(q_bias, zero_k_bias, v_bias)
	AttnProj                Linear // (Out, Out)
	Proj                    Linear // (Out, In)
	MLPNorm                 LayerNorm
	W0, W1                  Linear // (2*Out, Out)
	W2                      Linear // (Out, 2*Out)
}

// MeanHeads reports whether the attention output is averaged over heads
// (in > out, the encode side) rather than concatenated.
func (p *AttnProjection) MeanHeads() bool { return p.In > p.Out }

// Pooled reports whether the head mean is resized with adaptive average
// pooling (when the head width differs from the output width).
func (p *AttnProjection) Pooled() bool { return p.MeanHeads() && p.HeadDim != p.Out }

// AttnWidth is the width of the attention output before attn.proj:
// Out (pooled or concatenated heads).
func (p *AttnProjection) AttnWidth() int { return p.Out }

// Model is a loaded tokenizer core: both projections and the K raw codebooks.
type Model struct {
	Config
	QuantProj     AttnProjection // C -> D
	PostQuantProj AttnProjection // D -> C
	// Codebooks[i] is codebook i's raw weight, (V, d) row-major, as stored.
	Codebooks [][]float32
	// NormCodebooks[i] is codebook i with each row scaled to unit length
	// (F.normalize, eps 1e-12): what cosine quantize compares against and
	// what Lookup returns.
	NormCodebooks [][]float32
}

// normalizeRows returns a copy of a (rows, d) matrix with each row divided by
// max(|row|, 1e-12), as torch.nn.functional.normalize does.
func normalizeRows(w []float32, d int) []float32 {
	out := make([]float32, len(w))
	for r := 0; r+d <= len(w); r += d {
		var s float32
		for _, v := range w[r : r+d] {
			s += v * v
		}
		n := sqrt32(s)
		if n < 1e-12 {
			n = 1e-12
		}
		for j, v := range w[r : r+d] {
			out[r+j] = v / n
		}
	}
	return out
}

// Checkpoint keys (UniTok's state-dict names).
const (
	keyQuantProj     = "quant_proj"
	keyPostQuantProj = "post_quant_proj"
	keyCodebookFmt   = "quantizer.codebooks.%d.codebook.weight"
)

// CoreTensorPrefixes are the state-dict prefixes the core reads; everything
// else in a checkpoint (encoder, decoder, text tower) is ignored.
var CoreTensorPrefixes = []string{"quant_proj.", "post_quant_proj.", "quantizer."}

// IsCoreTensor reports whether name belongs to the tokenizer core.
func IsCoreTensor(name string) bool {
	for _, p := range CoreTensorPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// tensorSet indexes a checkpoint's tensors by name for shape checks.
type tensorSet struct {
	r     ckpt.Reader
	infos map[string]ckpt.Info
}

func (s *tensorSet) get(name string, shape ...int) ([]float32, error) {
	info, ok := s.infos[name]
	if !ok {
		return nil, badInput("checkpoint", "missing tensor %s", name)
	}
	if !equalShape(info.Shape, shape) {
		return nil, badInput("checkpoint", "tensor %s has shape %v, want %v", name, info.Shape, shape)
	}
	data, err := s.r.ReadFloat32(name)
	if err != nil {
		return nil, badInput("checkpoint", "tensor %s: %v", name, err)
	}
	return data, nil
}

func (s *tensorSet) shape(name string) ([]int, error) {
	info, ok := s.infos[name]
	if !ok {
		return nil, badInput("checkpoint", "missing tensor %s", name)
	}
	return info.Shape, nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Where a config's head count came from (CheckpointInfo.HeadsSource).
const (
	HeadsFromOption   = "--heads"
	HeadsFromMetadata = "from metadata"
	HeadsFromWidths   = "C/D, as UniTok's UniTok class builds it"
)

// UniTokHeads is the head count UniTok's UniTok class (models/unitok.py)
// gives both projections: num_heads = encoder.embed_dim // vocab_width,
// i.e. C / D (16 for vitamin_large, 1024/64; 12 for vitamin_base, 768/64).
// It is an error when D does not divide C: no UniTok model has such widths,
// and the head count must then be given (WithHeads, --heads).
func UniTokHeads(inDim, latentDim int) (int, error) {
	if inDim <= 0 || latentDim <= 0 || inDim%latentDim != 0 {
		return 0, badInput("checkpoint", "num_heads is not recorded and C=%d is not a multiple of D=%d, "+
			"so it cannot be C/D as UniTok's UniTok class builds it; pass the number of heads (--heads N)", inDim, latentDim)
	}
	return inDim / latentDim, nil
}

// inferConfig reads C, D, K, V from tensor shapes, causal from metadata
// (default full attention) and H from, in order: heads (WithHeads, when > 0),
// metadata num_heads, or C/D as UniTok's UniTok class builds the
// projections. It also returns where H came from (HeadsFrom*). Training
// arguments recorded as metadata (args.model, args.vocab_width, from a .pth
// or a file converted from one) must agree with the tensor shapes.
func inferConfig(s *tensorSet, meta map[string]string, heads int) (Config, string, error) {
	var c Config
	sh, err := s.shape(keyQuantProj + ".proj.weight")
	if err != nil {
		return c, "", err
	}
	if len(sh) != 2 {
		return c, "", badInput("checkpoint", "tensor %s.proj.weight has shape %v, want 2 dims", keyQuantProj, sh)
	}
	c.LatentDim, c.InDim = sh[0], sh[1]
	for {
		if _, ok := s.infos[fmt.Sprintf(keyCodebookFmt, c.NumCodebooks)]; !ok {
			break
		}
		c.NumCodebooks++
	}
	if c.NumCodebooks == 0 {
		return c, "", badInput("checkpoint", "missing tensor %s", fmt.Sprintf(keyCodebookFmt, 0))
	}
	cb, _ := s.shape(fmt.Sprintf(keyCodebookFmt, 0))
	if len(cb) != 2 {
		return c, "", badInput("checkpoint", "tensor %s has shape %v, want (V, d)", fmt.Sprintf(keyCodebookFmt, 0), cb)
	}
	c.CodebookSize = cb[0]
	if err := checkArgs(c, meta); err != nil {
		return c, "", err
	}
	if v, ok := meta["causal"]; ok {
		b, err := strconv.ParseBool(strings.ToLower(strings.TrimSpace(v)))
		if err != nil {
			return c, "", badInput("checkpoint", "metadata causal=%q is not a boolean", v)
		}
		c.Causal = b
	}
	var src string
	switch v, ok := meta["num_heads"]; {
	case heads > 0:
		c.NumHeads, src = heads, HeadsFromOption
	case ok:
		h, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || h <= 0 {
			return c, "", badInput("checkpoint", "metadata num_heads=%q is not a positive integer", v)
		}
		c.NumHeads, src = h, HeadsFromMetadata
	default:
		if c.NumHeads, err = UniTokHeads(c.InDim, c.LatentDim); err != nil {
			return c, "", err
		}
		src = HeadsFromWidths
	}
	return c, src, nil
}

// checkArgs cross-checks UniTok's training arguments, where the metadata
// carries them, against the tensor shapes: args.model names the encoder
// (vitamin_base is 768 wide, vitamin_large 1024), which is C, and
// args.vocab_width is D; together they fix the head count UniTok's UniTok
// class built (C/D). A mismatch means the arguments belong to another
// model, and C/D would not be the heads the weights were trained with.
func checkArgs(c Config, meta map[string]string) error {
	if v, ok := meta["args.vocab_width"]; ok {
		if w, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && w != c.LatentDim {
			return badInput("checkpoint", "args.vocab_width=%d but tensor %s.proj.weight gives latent width D=%d", w, keyQuantProj, c.LatentDim)
		}
	}
	if v, ok := meta["args.model"]; ok {
		if w, ok := pth.ModelWidth(strings.TrimSpace(v)); ok && int(w) != c.InDim {
			return badInput("checkpoint", "args.model=%s is %d wide but tensor %s.proj.weight gives width C=%d", v, w, keyQuantProj, c.InDim)
		}
	}
	return nil
}

// loadModel reads and shape-checks every core tensor for config c.
func loadModel(s *tensorSet, c Config) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m := &Model{Config: c}
	var err error
	if m.QuantProj, err = loadAttnProjection(s, keyQuantProj, c.InDim, c.LatentDim, c.NumHeads); err != nil {
		return nil, err
	}
	if m.PostQuantProj, err = loadAttnProjection(s, keyPostQuantProj, c.LatentDim, c.InDim, c.NumHeads); err != nil {
		return nil, err
	}
	d := c.ChunkDim()
	for i := 0; i < c.NumCodebooks; i++ {
		w, err := s.get(fmt.Sprintf(keyCodebookFmt, i), c.CodebookSize, d)
		if err != nil {
			return nil, err
		}
		m.Codebooks = append(m.Codebooks, w)
		m.NormCodebooks = append(m.NormCodebooks, normalizeRows(w, d))
	}
	return m, nil
}

func loadAttnProjection(s *tensorSet, prefix string, in, out, heads int) (AttnProjection, error) {
	hd, err := headDim(in, out, heads)
	if err != nil {
		return AttnProjection{}, err
	}
	p := AttnProjection{In: in, Out: out, Heads: heads, HeadDim: hd}
	w := heads * hd // width of q, k and v
	ln := func(name string, n int, eps float32) (LayerNorm, error) {
		g, err := s.get(prefix+"."+name+".weight", n)
		if err != nil {
			return LayerNorm{}, err
		}
		b, err := s.get(prefix+"."+name+".bias", n)
		if err != nil {
			return LayerNorm{}, err
		}
		return LayerNorm{Weight: g, Bias: b, Eps: eps}, nil
	}
	lin := func(name string, i, o int, bias bool) (Linear, error) {
		wt, err := s.get(prefix+"."+name+".weight", o, i)
		if err != nil {
			return Linear{}, err
		}
		l := Linear{In: i, Out: o, Weight: wt}
		if bias {
			if l.Bias, err = s.get(prefix+"."+name+".bias", o); err != nil {
				return Linear{}, err
			}
		}
		return l, nil
	}
	steps := []func() error{
		func() (e error) { p.Norm1, e = ln("norm1", in, 1e-5); return },
		func() (e error) { p.Norm2, e = ln("norm2", out, 1e-5); return },
		func() (e error) { p.Norm3, e = ln("norm3", in, 1e-5); return },
		func() (e error) { p.MLPNorm, e = ln("mlp.norm", out, 1e-6); return },
		func() (e error) { p.QKV, e = lin("attn.qkv", in, 3*w, false); return },
		func() (e error) { p.AttnProj, e = lin("attn.proj", out, out, true); return },
		func() (e error) { p.Proj, e = lin("proj", in, out, true); return },
		func() (e error) { p.W0, e = lin("mlp.w0", out, 2*out, true); return },
		func() (e error) { p.W1, e = lin("mlp.w1", out, 2*out, true); return },
		func() (e error) { p.W2, e = lin("mlp.w2", 2*out, out, true); return },
		func() error {
			qb, err := s.get(prefix+".attn.q_bias", w)
			if err != nil {
				return err
			}
			vb, err := s.get(prefix+".attn.v_bias", w)
			if err != nil {
				return err
			}
			kb := make([]float32, w)
			// zero_k_bias is a buffer of zeros; older exports may omit it.
			if _, ok := s.infos[prefix+".attn.zero_k_bias"]; ok {
				if kb, err = s.get(prefix+".attn.zero_k_bias", w); err != nil {
					return err
				}
			}
			p.QKV.Bias = append(append(append(make([]float32, 0, 3*w), qb...), kb...), vb...)
			return nil
		},
	}
	for _, f := range steps {
		if err := f(); err != nil {
			return AttnProjection{}, err
		}
	}
	return p, nil
}
