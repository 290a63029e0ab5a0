package cpu

import (
	"math"
	"os"
	"sync"

	"github.com/unitok/unitok/internal/engine"
)

// poolMaxBytes bounds the memory an engine keeps for reuse. Reuse is off
// outside the poison test mode: at vitamin_large it measured no faster
// (interleaved runs, GOGC 100 and 25: the runtime already reuses freed
// spans) and it held 0.6-1.1 GB more resident memory.
const poolMaxBytes = 1 << 30

// poisonReleased fills released buffers with NaN before they are reused
// (UNITOK_CPU_POISON=1), so a tensor used after Release shows up as NaN
// in the results instead of as quietly wrong values. For tests.
var poisonReleased = os.Getenv("UNITOK_CPU_POISON") == "1"

// bufPool keeps released activation buffers by exact length for reuse.
// Only in the poison test mode (see poisonReleased): there every reused
// buffer arrives NaN-filled, so an op that claims to write all of its
// output and does not is caught. Otherwise released buffers are left to
// the garbage collector. The zero value is ready; safe for concurrent use.
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
	if !poisonReleased {
		return
	}
	b = b[:n]
	nan := float32(math.NaN())
	for i := range b {
		b[i] = nan
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
