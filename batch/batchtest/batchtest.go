// Package batchtest holds test engines for the batch and server packages: a
// fake image side over a real feature engine, and a gate that holds engine
// calls until a test releases them.
package batchtest

import (
	"context"
	"errors"
	"image"
	"sync"
	"sync/atomic"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/batch"
)

// Images adds a deterministic fake image model to a feature engine. Each
// image maps to N tokens of K codes, an embedding of E values and back to a
// (3, S, S) image, every one a function of that image (or code row) alone,
// so a batched call must return exactly the direct call's values.
type Images struct {
	batch.FeatureEngine
	S, N, E int
	Calls   atomic.Int64 // engine calls made (one per batch)
}

var _ batch.ImageEngine = (*Images)(nil)

// ImageModel reports that the fake image model is present.
func (f *Images) ImageModel() error { return nil }

// Device forwards to the feature engine when it names one.
func (f *Images) Device() string {
	if d, ok := f.FeatureEngine.(interface{ Device() string }); ok {
		return d.Device()
	}
	return "fake"
}

// ImageSize is S.
func (f *Images) ImageSize() int { return f.S }

// Pixel is the value the fake reads from an image: the red channel of its
// top-left pixel plus its width and height.
func Pixel(im image.Image) int {
	b := im.Bounds()
	r, _, _, _ := im.At(b.Min.X, b.Min.Y).RGBA()
	return int(r>>8) + b.Dx() + b.Dy()
}

// TokenizeImages gives code (Pixel + n + k) mod V at token n, codebook k.
func (f *Images) TokenizeImages(ctx context.Context, imgs []image.Image) ([]int32, error) {
	f.Calls.Add(1)
	c := f.Config()
	K, V := c.NumCodebooks, c.CodebookSize
	out := make([]int32, 0, len(imgs)*f.N*K)
	for _, im := range imgs {
		p := Pixel(im)
		for n := 0; n < f.N; n++ {
			for k := 0; k < K; k++ {
				out = append(out, int32((p+n+k)%V))
			}
		}
	}
	return out, ctx.Err()
}

// EmbedImages gives embedding e = Pixel * (e+1) / 1000.
func (f *Images) EmbedImages(ctx context.Context, imgs []image.Image) ([]float32, error) {
	f.Calls.Add(1)
	out := make([]float32, 0, len(imgs)*f.E)
	for _, im := range imgs {
		p := Pixel(im)
		for e := 0; e < f.E; e++ {
			out = append(out, float32(p*(e+1))/1000)
		}
	}
	return out, ctx.Err()
}

// Detokenize fills each image's (3, S, S) with a value in [-1, 1] derived
// from its codes: channel c, pixel i holds ((sum of codes + c + i) mod 255) / 127.5 - 1.
func (f *Images) Detokenize(ctx context.Context, codes []int32, B int) ([]float32, error) {
	f.Calls.Add(1)
	if B <= 0 || len(codes)%B != 0 {
		return nil, &unitok.Error{Op: "detokenize", Msg: "bad shape", Kind: unitok.ErrBadInput}
	}
	per := len(codes) / B
	S := f.S
	out := make([]float32, 0, B*3*S*S)
	for b := 0; b < B; b++ {
		s := 0
		for _, v := range codes[b*per : (b+1)*per] {
			s += int(v)
		}
		for c := 0; c < 3; c++ {
			for i := 0; i < S*S; i++ {
				out = append(out, float32((s+c+i)%255)/127.5-1)
			}
		}
	}
	return out, ctx.Err()
}

// Gate wraps an engine (feature and, if it has one, image side) so that
// every call waits until Release or Open. Entered counts calls that have
// reached the gate.
type Gate struct {
	Engine  batch.FeatureEngine
	mu      sync.Mutex
	ch      chan struct{}
	open    bool
	Entered atomic.Int64
	// Panic, if set, makes the next call panic with this value.
	Panic atomic.Value
}

// NewGate returns a closed gate over e.
func NewGate(e batch.FeatureEngine) *Gate { return &Gate{Engine: e, ch: make(chan struct{})} }

// Release lets the calls waiting now (and later ones, until Close) through.
func (g *Gate) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		g.open = true
		close(g.ch)
	}
}

// Close makes later calls wait again.
func (g *Gate) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open {
		g.open = false
		g.ch = make(chan struct{})
	}
}

func (g *Gate) wait() {
	g.Entered.Add(1)
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	<-ch
	if p := g.Panic.Swap(""); p != nil && p != "" {
		panic(p)
	}
}

// Config forwards to the engine.
func (g *Gate) Config() unitok.Config { return g.Engine.Config() }

// Layout forwards to the engine.
func (g *Gate) Layout() unitok.Layout { return g.Engine.Layout() }

// EncodeInto waits at the gate, then forwards.
func (g *Gate) EncodeInto(dst []int32, x []float32, B, N int) error {
	g.wait()
	return g.Engine.EncodeInto(dst, x, B, N)
}

// DecodeInto waits at the gate, then forwards.
func (g *Gate) DecodeInto(dst []float32, c []int32, B, N int) error {
	g.wait()
	return g.Engine.DecodeInto(dst, c, B, N)
}

// QuantizeInto waits at the gate, then forwards.
func (g *Gate) QuantizeInto(dst []int32, x []float32, M int) error {
	g.wait()
	return g.Engine.QuantizeInto(dst, x, M)
}

// LookupInto waits at the gate, then forwards.
func (g *Gate) LookupInto(dst []float32, c []int32, M int) error {
	g.wait()
	return g.Engine.LookupInto(dst, c, M)
}

var errNoImages = errors.New("gate: engine has no image side")

func (g *Gate) img() batch.ImageEngine {
	ie, _ := g.Engine.(batch.ImageEngine)
	return ie
}

// ImageModel forwards, or reports the image side missing.
func (g *Gate) ImageModel() error {
	if ie := g.img(); ie != nil {
		return ie.ImageModel()
	}
	return errNoImages
}

// ImageSize forwards.
func (g *Gate) ImageSize() int { return g.img().ImageSize() }

// TokenizeImages waits at the gate, then forwards.
func (g *Gate) TokenizeImages(ctx context.Context, imgs []image.Image) ([]int32, error) {
	g.wait()
	return g.img().TokenizeImages(ctx, imgs)
}

// EmbedImages waits at the gate, then forwards.
func (g *Gate) EmbedImages(ctx context.Context, imgs []image.Image) ([]float32, error) {
	g.wait()
	return g.img().EmbedImages(ctx, imgs)
}

// Detokenize waits at the gate, then forwards.
func (g *Gate) Detokenize(ctx context.Context, codes []int32, B int) ([]float32, error) {
	g.wait()
	return g.img().Detokenize(ctx, codes, B)
}
