// Package nn holds the layers the image models are built from (Linear,
// LayerNorm, Conv2d, timm's ViT Block with UniTok's GeGLU MLP), each a thin
// composition of internal/engine ops, loaded by checkpoint key.
package nn

import (
	"fmt"

	"github.com/unitok/unitok/internal/engine"
)

// Source serves checkpoint tensors by state-dict key.
type Source interface {
	// Get returns the named tensor as float32, checking its shape.
	Get(name string, shape ...int) ([]float32, error)
	// Shape returns the named tensor's shape, if present.
	Shape(name string) ([]int, bool)
}

// Loader uploads layers from a Source to an engine, keeping the first
// error so a model's constructor reads as a list of layers.
type Loader struct {
	E   engine.Engine
	Src Source
	Err error
}

// Get reads a tensor (nil after the first error).
func (l *Loader) Get(name string, shape ...int) []float32 {
	if l.Err != nil {
		return nil
	}
	v, err := l.Src.Get(name, shape...)
	if err != nil {
		l.Err = err
		return nil
	}
	return v
}

// LayerNorm is nn.LayerNorm / timm's LayerNorm2d over channels.
type LayerNorm struct {
	Weight, Bias engine.Weight
	Eps          float32
}

// LayerNorm loads name.weight and name.bias of width n.
func (l *Loader) LayerNorm(name string, n int, eps float32) LayerNorm {
	w, b := l.Get(name+".weight", n), l.Get(name+".bias", n)
	if l.Err != nil {
		return LayerNorm{}
	}
	return LayerNorm{Weight: l.E.Vector(w), Bias: l.E.Vector(b), Eps: eps}
}

// Forward normalizes x over its channels.
func (n LayerNorm) Forward(e engine.Engine, x engine.Tensor) engine.Tensor {
	return e.LayerNorm(x, n.Weight, n.Bias, n.Eps)
}

// Linear is nn.Linear(in, out) with bias.
type Linear struct{ W engine.Weight }

// Linear loads name.weight (out, in) and name.bias (out).
func (l *Loader) Linear(name string, in, out int) Linear {
	w, b := l.Get(name+".weight", out, in), l.Get(name+".bias", out)
	if l.Err != nil {
		return Linear{}
	}
	return Linear{W: l.E.Linear(w, b, out, in)}
}

// Forward computes x W^T + b; with acc non-nil it adds into acc in place.
func (m Linear) Forward(e engine.Engine, x, acc engine.Tensor) engine.Tensor {
	return e.MatMul(x, m.W, acc)
}

// Conv2d is nn.Conv2d with bias, zero padding and a stride.
type Conv2d struct {
	W           engine.Weight
	Stride, Pad int
}

// Conv2d loads name.weight (out, in/groups, k, k) and name.bias (out).
func (l *Loader) Conv2d(name string, in, out, k, stride, pad, groups int) Conv2d {
	w, b := l.Get(name+".weight", out, in/groups, k, k), l.Get(name+".bias", out)
	if l.Err != nil {
		return Conv2d{}
	}
	return Conv2d{W: l.E.Conv(w, b, out, in, k, k, groups), Stride: stride, Pad: pad}
}

// Forward convolves x.
func (c Conv2d) Forward(e engine.Engine, x engine.Tensor) engine.Tensor {
	return e.Conv2d(x, c.W, c.Stride, c.Pad)
}

// Upsample2d is UniTok's Upsample2d: nearest x2, then a 3x3 convolution
// (key name.conv).
type Upsample2d struct{ Conv Conv2d }

// Upsample2d loads name.conv.
func (l *Loader) Upsample2d(name string, in, out int) Upsample2d {
	w, b := l.Get(name+".conv.weight", out, in, 3, 3), l.Get(name+".conv.bias", out)
	if l.Err != nil {
		return Upsample2d{}
	}
	return Upsample2d{Conv: Conv2d{W: l.E.UpConvWeight(w, b, out, in), Stride: 1, Pad: 1}}
}

// Forward upsamples and convolves x.
func (u Upsample2d) Forward(e engine.Engine, x engine.Tensor) engine.Tensor {
	return e.UpConv3x3(x, u.Conv.W)
}

// GeGluMlp is UniTok's GeGluMlp: w2(gelu_tanh(w0(LN(x))) * w1(LN(x))), its
// LayerNorm with eps 1e-6.
type GeGluMlp struct {
	Norm       LayerNorm
	W0, W1, W2 Linear
}

// GeGluMlp loads name.{norm,w0,w1,w2}.
func (l *Loader) GeGluMlp(name string, dim, hidden int) GeGluMlp {
	return GeGluMlp{
		Norm: l.LayerNorm(name+".norm", dim, 1e-6),
		W0:   l.Linear(name+".w0", dim, hidden),
		W1:   l.Linear(name+".w1", dim, hidden),
		W2:   l.Linear(name+".w2", hidden, dim),
	}
}

// Forward adds the MLP of x into acc (the residual stream) and returns it.
func (m GeGluMlp) Forward(e engine.Engine, x, acc engine.Tensor) engine.Tensor {
	h := m.Norm.Forward(e, x)
	gate, val := m.W0.Forward(e, h, nil), m.W1.Forward(e, h, nil)
	e.Release(h)
	g := e.GeGLU(gate, val)
	e.Release(gate)
	e.Release(val)
	y := m.W2.Forward(e, g, acc)
	e.Release(g)
	return y
}

// Attention is timm's Attention with qkv bias and no q/k norm.
type Attention struct {
	QKV, Proj Linear
	Heads     int
}

// Block is timm's VisionTransformer Block as ViTamin uses it:
// x += attn(norm1(x)); x += mlp(norm2(x)), LayerNorm eps 1e-6, no layer
// scale.
type Block struct {
	Norm1, Norm2 LayerNorm
	Attn         Attention
	Mlp          GeGluMlp
}

// Block loads name.{norm1,attn.qkv,attn.proj,norm2,mlp.*}.
func (l *Loader) Block(name string, dim, heads, hidden int) Block {
	if l.Err == nil && dim%heads != 0 {
		l.Err = fmt.Errorf("%s: width %d is not divisible by %d heads", name, dim, heads)
	}
	return Block{
		Norm1: l.LayerNorm(name+".norm1", dim, 1e-6),
		Attn:  Attention{QKV: l.Linear(name+".attn.qkv", dim, 3*dim), Proj: l.Linear(name+".attn.proj", dim, dim), Heads: heads},
		Norm2: l.LayerNorm(name+".norm2", dim, 1e-6),
		Mlp:   l.GeGluMlp(name+".mlp", dim, hidden),
	}
}

// Forward updates the residual stream x in place and returns it. Like every
// Forward here, it releases the intermediates it creates, never its input.
func (b Block) Forward(e engine.Engine, x engine.Tensor) engine.Tensor {
	h := b.Norm1.Forward(e, x)
	qkv := b.Attn.QKV.Forward(e, h, nil)
	e.Release(h)
	a := e.Attention(qkv, b.Attn.Heads)
	e.Release(qkv)
	x = b.Attn.Proj.Forward(e, a, x)
	e.Release(a)
	h = b.Norm2.Forward(e, x)
	x = b.Mlp.Forward(e, h, x)
	e.Release(h)
	return x
}
