package cpu

import (
	"math"
	"os"
	"sync"

	"github.com/unitok/unitok/internal/engine"
)

// poolMaxBytes bounds the memory an engine keeps for reuse. Models call
// Trim when a call ends (engine.Trim), so the pool only lives within
// calls: freshly allocated activations cost page faults (the runtime hands
// freed spans back to the OS), which at vitamin_large and 4 images a call
// made the encoder's 128x128 stage 2-10x slower per op than with reuse
// (TestOpTimes, UNITOK_OPTIME_BATCH=4: encoder 7.0 -> 6.5 s). Kept across
// calls, the pool held 0.6-1.1 GB more resident memory and measured no
// faster at one image a call.
const poolMaxBytes = 1 << 30

// poisonReleased fills released buffers with NaN before they are reused
// (UNITOK_CPU_POISON=1), so a tensor used after Release shows up as NaN
// in the results instead of as quietly wrong values. For tests.
var poisonReleased = os.Getenv("UNITOK_CPU_POISON") == "1"

// bufPool keeps released activation buffers by exact length for reuse
// until Trim. In the poison test mode (see poisonReleased) every reused
// buffer arrives NaN-filled, so an op that claims to write all of its
// output and does not, or a tensor used after Release, is caught. The zero
// value is ready; safe for concurrent use.
type bufPool struct {
	mu    sync.Mutex
	free  map[int][][]float32
	bytes int
}

// get returns a buffer of n values with arbitrary contents.
func (p *bufPool) get(n int) []float32 {
	p.mu.Lock()
	if l := p.free[n]; len(l) > 0 {
		b := l[len(l)-1]
		p.free[n] = l[:len(l)-1]
		p.bytes -= 4 * n
		p.mu.Unlock()
		return b
	}
	p.mu.Unlock()
	return make([]float32, n)
}

// put offers b for reuse; the caller must not use it again.
func (p *bufPool) put(b []float32) {
	n := cap(b)
	if n == 0 {
		return
	}
	b = b[:n]
	if poisonReleased {
		nan := float32(math.NaN())
		for i := range b {
			b[i] = nan
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+4*n > poolMaxBytes {
		return
	}
	if p.free == nil {
		p.free = map[int][][]float32{}
	}
	p.free[n] = append(p.free[n], b)
	p.bytes += 4 * n
}

// trim drops every kept buffer (the garbage collector takes them).
func (p *bufPool) trim() {
	p.mu.Lock()
	p.free, p.bytes = nil, 0
	p.mu.Unlock()
}

// Trim drops the memory the engine keeps for reuse (engine.Trimmer): the
// models call it when an Encode or Decode ends.
func (e *Engine) Trim() { e.bufs.trim() }

// buf returns a scratch or output buffer of n values, contents arbitrary.
func (e *Engine) buf(n int) []float32 { return e.bufs.get(n) }

// zbuf returns a buffer of n zeros.
func (e *Engine) zbuf(n int) []float32 {
	b := e.bufs.get(n)
	clear(b)
	return b
}

// recycle returns an op's scratch buffer to the pool.
func (e *Engine) recycle(b []float32) { e.bufs.put(b) }

// tensor returns a tensor of shape s with arbitrary contents, for ops that
// write every value.
func (e *Engine) tensor(s engine.Shape) *Tensor { return &Tensor{S: s, D: e.bufs.get(s.Elems())} }

// Release returns t's memory for reuse by later tensors. t and every
// Reshape view of it must not be used afterwards.
func (e *Engine) Release(t engine.Tensor) {
	if t == nil {
		return
	}
	c := tens(t)
	e.bufs.put(c.D)
	c.D = nil
}
