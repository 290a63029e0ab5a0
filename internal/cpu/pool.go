package cpu

import (
	"math"
	"os"
	"sync"
	"time"

	"github.com/unitok/unitok/internal/engine"
)

// poolMaxBytes bounds the memory an engine keeps for reuse.
//
// Released activations are reused within a call and kept from one call to
// the next (until the engine has been idle for keepIdle): freshly
// allocated activations cost page faults on the machines measured (a
// large live heap, the model's weights, makes garbage collections rare,
// so a call's freed activations are not reused by the runtime before the
// next call allocates new ones). At vitamin_large, one image a call, the
// encoder faulted in ~146 MB a call (37k minor faults, 0.4 s of system
// CPU time) and the decoder ~250 MB; kept across calls, 16 MB and 12 MB,
// and the calls ran 1.64-1.87 s instead of 2.06-2.28 s (encoder) and
// 2.98-3.18 s instead of 3.28-3.68 s (decoder), interleaved runs
// (docs/notes/imagespeed.md). Within a call at 4 images, reuse made the
// encoder's 128x128 stage 2-10x faster per op.
const poolMaxBytes = 1 << 30

// keepIdle is how long an engine keeps released memory after a call ends
// with no other call using it.
const keepIdle = 2 * time.Second

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
	gets  uint64      // buffers handed out so far: activity, for trimAfter
	timer *time.Timer // trimAfter's pending drop
}

// get returns a buffer of n values with arbitrary contents.
func (p *bufPool) get(n int) []float32 {
	p.mu.Lock()
	p.gets++
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
	p.drop()
	p.mu.Unlock()
}

// drop empties the pool and cancels a pending trimAfter; p.mu is held.
func (p *bufPool) drop() {
	p.free, p.bytes = nil, 0
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
}

// trimAfter drops the kept buffers after d unless a buffer is handed out
// in the meantime (a call is running; it calls trimAfter again when it
// ends).
func (p *bufPool) trimAfter(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.timer != nil {
		p.timer.Stop()
	}
	gets := p.gets
	p.timer = time.AfterFunc(d, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.gets == gets {
			p.drop()
		}
	})
}

// CallDone keeps the released memory for the next call and drops it once
// the engine has been idle for keepIdle (engine.Trimmer): the models call
// it when an Encode or Decode ends.
func (e *Engine) CallDone() { e.bufs.trimAfter(keepIdle) }

// Trim drops the memory the engine keeps for reuse now (engine.Trimmer).
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
