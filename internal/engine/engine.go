// Package engine is the op set that unitok's models are written over: the
// ViTamin encoder and decoder (internal/model/vitamin) are compositions of
// these ops, and each compute engine (internal/cpu today; CUDA next)
// implements them. Models never see an engine's memory: activations are
// opaque Tensor handles and weights opaque Weight handles, so an engine is
// free to keep both on a device and to lay weights out for its kernels when
// they are uploaded.
//
// Layout: one activation layout for everything, NHWC. A feature map is
// (B, H, W, C) row-major; a token sequence is the same thing with H*W tokens
// (the ViT blocks use H=N, W=1 or the 2-D grid, it does not matter), so
// LayerNorm over channels of a map and over features of a token is one op,
// a 1x1 convolution and a linear layer are one op, and convolutions reuse the
// GEMM.
package engine

// Shape is the shape of an NHWC activation: B images of H x W positions with
// C channels, row-major with C fastest.
type Shape struct{ B, H, W, C int }

// Rows is the number of positions B*H*W (the GEMM row count).
func (s Shape) Rows() int { return s.B * s.H * s.W }

// Elems is the number of values.
func (s Shape) Elems() int { return s.B * s.H * s.W * s.C }

// Tensor is an activation owned by an engine.
type Tensor interface{ Shape() Shape }

// Weight is a parameter uploaded to an engine (laid out for its kernels).
type Weight interface{}

// Engine computes the op set. Ops return new tensors unless documented as
// in place; inputs are not modified. Shape errors are programming errors of
// the model code and panic; an engine that lacks an op variant panics with
// a message naming it (models check what they need when they are built).
// Methods are safe for concurrent use.
//
// The upload methods (FromHost, Linear, Conv, UpConvWeight, Vector) must not keep the
// slices they are given: they copy or repack them before returning. The
// image loader relies on it: it passes views of a memory-mapped checkpoint
// and unmaps the file once the model is built.
type Engine interface {
	// Name says which engine this is ("cpu").
	Name() string

	// FromHost copies x, laid out as s (NHWC), into a new tensor.
	FromHost(x []float32, s Shape) Tensor
	// ToHost copies t to a new host slice (NHWC).
	ToHost(t Tensor) []float32
	// Reshape views t with a new shape of the same element count.
	Reshape(t Tensor, s Shape) Tensor
	// Release says t, and every Reshape view of it, will not be used again,
	// so the engine may back a later tensor with its memory. Models
	// release the intermediates they create; releasing is optional (the
	// garbage collector reclaims the rest), using a released tensor is a
	// bug.
	Release(t Tensor)

	// Linear uploads a linear layer: w (out, in) row-major as nn.Linear
	// stores it, bias (out) or nil.
	Linear(w, bias []float32, out, in int) Weight
	// Conv uploads a convolution: w (out, in/groups, kh, kw) as nn.Conv2d
	// stores it (OIHW), bias (out) or nil.
	Conv(w, bias []float32, out, in, kh, kw, groups int) Weight
	// UpConvWeight uploads the 3x3 convolution of an Upsample2d (w as
	// Conv stores it, groups 1) for UpConv3x3 only, so an engine can lay
	// it out for the fused upsampling product when it is loaded.
	UpConvWeight(w, bias []float32, out, in int) Weight
	// Vector uploads a per-channel vector (LayerNorm affine parameters).
	Vector(v []float32) Weight

	// MatMul applies a Linear weight over the channels of every position:
	// y = x W^T + b. With acc non-nil the result is added into acc in place
	// (a residual connection) and acc is returned.
	MatMul(x Tensor, w Weight, acc Tensor) Tensor
	// Conv2d is a 2-D convolution with zero padding pad on every side.
	Conv2d(x Tensor, w Weight, stride, pad int) Tensor
	// LayerNorm normalizes every position over its C channels (biased
	// variance) and applies weight and bias.
	LayerNorm(x Tensor, weight, bias Weight, eps float32) Tensor
	// GELU applies the exact (erf) GELU in place and returns x.
	GELU(x Tensor) Tensor
	// GeGLU returns gelu_tanh(gate) * value, elementwise.
	GeGLU(gate, value Tensor) Tensor
	// Attention is full multi-head self-attention over the H*W positions of
	// each image: qkv holds, per position, q | k | v (each `heads` heads of
	// C/(3*heads) channels, head-major) as timm's Attention lays out its qkv
	// Linear output; the result is softmax(q k^T / sqrt(hd)) v with heads
	// concatenated, shape (B, H, W, C/3).
	Attention(qkv Tensor, heads int) Tensor
	// Upsample2x is nearest-neighbour x2 upsampling (F.interpolate
	// scale_factor=2, mode='nearest').
	Upsample2x(x Tensor) Tensor
	// UpConv3x3 is Conv2d(Upsample2x(x), w, stride 1, pad 1) for a dense
	// 3x3 w (UniTok's Upsample2d) from UpConvWeight (or Conv), which an
	// engine may compute without materializing the upsampled map (each
	// output phase is a 2x2 convolution of x with summed taps: 4/9 of the
	// multiply-adds).
	UpConv3x3(x Tensor, w Weight) Tensor
	// AvgPool3x3s2 is nn.AvgPool2d(3, stride=2, padding=1,
	// count_include_pad=False).
	AvgPool3x3s2(x Tensor) Tensor
	// Add adds x into dst in place and returns dst.
	Add(dst, x Tensor) Tensor
	// Clamp limits every value to [lo, hi] in place and returns x.
	Clamp(x Tensor, lo, hi float32) Tensor
	// MeanPositions averages over the H*W positions: (B, H, W, C) -> (B, 1, 1, C).
	MeanPositions(x Tensor) Tensor
	// L2Normalize divides every position's C channels by max(|v|, 1e-12)
	// (F.normalize) in place and returns x.
	L2Normalize(x Tensor) Tensor
}

// Trimmer is an Engine that keeps released memory for reuse, within a call
// and from one call to the next. Models call CallDone (the function) when
// a call ends: the engine keeps the memory for the next call and drops it
// once no call has used it for a while. Trim drops it now.
type Trimmer interface {
	CallDone()
	Trim()
}

// CallDone tells e that a call has ended, if e keeps memory for reuse.
func CallDone(e Engine) {
	if t, ok := e.(Trimmer); ok {
		t.CallDone()
	}
}

// Trim drops the memory e keeps for reuse, if it keeps any.
func Trim(e Engine) {
	if t, ok := e.(Trimmer); ok {
		t.Trim()
	}
}
