package unitok

import (
	"context"
	"fmt"
	"image"
	"math"
)

// TokenizeAndEmbedImages is TokenizeImages and EmbedImages in one encoder
// pass: codes (B, N, K) (or (B, K, N) with CodebookMajor) and the CLIP
// embeddings (B, E), L2-normalized, each equal to what the two calls
// return. The embedding is computed from the same codes (UniTok's
// encode_image quantizes first), so the encoder and quantizer run once.
func (t *Tokenizer) TokenizeAndEmbedImages(ctx context.Context, imgs []image.Image) ([]int32, []float32, error) {
	x, err := t.preprocess("embed", imgs)
	if err != nil {
		return nil, nil, err
	}
	return t.TokenizeAndEmbedPixels(ctx, x, len(imgs))
}

// TokenizeAndEmbedPixels is TokenizePixels and EmbedPixels in one encoder
// pass on preprocessed images x (B, 3, S, S).
func (t *Tokenizer) TokenizeAndEmbedPixels(ctx context.Context, x []float32, B int) ([]int32, []float32, error) {
	const op = "embed"
	im, err := t.imageReady(op, ctx)
	if err != nil {
		return nil, nil, err
	}
	if im.head == nil {
		return nil, nil, &Error{Op: op, Msg: im.headErr.Error(), Kind: ErrBadInput}
	}
	feats, err := t.encodeTokens(ctx, op, x, B)
	if err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, &Error{Op: op, Msg: err.Error(), Kind: err}
	}
	N := im.cfg.Tokens()
	codes, err := t.Encode(feats, B, N)
	if err != nil {
		return nil, nil, err
	}
	tokens, err := t.Decode(codes, B, N)
	if err != nil {
		return nil, nil, err
	}
	return codes, im.head.Embed(im.eng, tokens, B, N, t.model.InDim), nil
}

// ImageWeightsDigest identifies the image path's weights (encoder, decoder
// and CLIP head) as loaded: a 64-bit digest of every image tensor's name,
// shape and float32 values, in hex, computed while the checkpoint is read.
// It is "" without an image model. Data-prep runs record it so that outputs
// of another encoder are not taken as done.
func (t *Tokenizer) ImageWeightsDigest() string {
	if t == nil || t.closed.Load() {
		return ""
	}
	im := t.img()
	if im == nil || im.enc == nil {
		return ""
	}
	return fmt.Sprintf("%016x", im.digest)
}

// digestTensor folds one tensor into a running digest: four interleaved
// multiply-xor lanes over the float32 bits (fast enough to run on every
// load; not a cryptographic hash), then the name and shape.
func digestTensor(d uint64, name string, shape []int, v []float32) uint64 {
	return digestFold(d, name, shape, len(v), digestLanes(v))
}

// digestLanes is the value-dependent part of digestTensor: it depends on v
// alone, so tensors can be hashed in any order (or concurrently) and folded
// in the loaders' order afterwards.
func digestLanes(v []float32) [4]uint64 {
	const p = 0x100000001b3
	var l [4]uint64
	for i := range l {
		l[i] = 0xcbf29ce484222325 + uint64(i)
	}
	i := 0
	for ; i+4 <= len(v); i += 4 {
		l[0] = (l[0] ^ uint64(math.Float32bits(v[i]))) * p
		l[1] = (l[1] ^ uint64(math.Float32bits(v[i+1]))) * p
		l[2] = (l[2] ^ uint64(math.Float32bits(v[i+2]))) * p
		l[3] = (l[3] ^ uint64(math.Float32bits(v[i+3]))) * p
	}
	for ; i < len(v); i++ {
		l[0] = (l[0] ^ uint64(math.Float32bits(v[i]))) * p
	}
	return l
}

// digestFold mixes a tensor's name, shape, length n and lanes into d.
func digestFold(d uint64, name string, shape []int, n int, l [4]uint64) uint64 {
	const p = 0x100000001b3
	mix := func(x uint64) { d = (d ^ x) * p; d ^= d >> 29 }
	for _, c := range []byte(name) {
		mix(uint64(c))
	}
	for _, s := range shape {
		mix(uint64(s))
	}
	mix(uint64(n))
	for _, x := range l {
		mix(x)
	}
	return d
}
