package cpu

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/unitok/unitok/internal/engine"
)

// Released tensors back later tensors of the same size until Trim, which
// drops the kept memory.
func TestReleaseReusesUntilTrim(t *testing.T) {
	e := New(1)
	s := engine.Shape{B: 1, H: 4, W: 5, C: 6}
	a := e.tensor(s)
	pa := &a.D[0]
	e.Release(a)
	b := e.tensor(s)
	pb := &b.D[0]
	require.Same(t, pa, pb, "a released buffer of the same size is reused")
	c := e.tensor(s)
	pc := &c.D[0]
	require.NotSame(t, pb, pc, "a buffer is handed out once")
	e.Release(b)
	e.Release(c)
	e.Trim()
	d := e.tensor(s)
	require.NotSame(t, pb, &d.D[0], "Trim drops the kept buffers")
	require.NotSame(t, pc, &d.D[0], "Trim drops the kept buffers")
	engine.Trim(e) // through the optional interface
	require.Zero(t, e.bufs.bytes)
}

// CallDone keeps the released buffers for the next call and drops them
// once the engine has been idle: a buffer handed out in the meantime (a
// call running) cancels the drop.
func TestCallDoneKeepsUntilIdle(t *testing.T) {
	e := New(1)
	s := engine.Shape{B: 1, H: 4, W: 5, C: 6}
	a := e.tensor(s)
	pa := &a.D[0]
	e.Release(a)
	engine.CallDone(e)
	c := e.tensor(s) // the next call
	require.Same(t, pa, &c.D[0], "after CallDone the kept buffer serves the next call")
	x := e.tensor(s)
	e.Release(c)
	e.Release(x) // two kept

	e.bufs.trimAfter(20 * time.Millisecond)
	d := e.tensor(s) // activity before the deadline; one stays kept
	time.Sleep(60 * time.Millisecond)
	e.bufs.mu.Lock()
	kept := e.bufs.bytes
	e.bufs.mu.Unlock()
	require.Equal(t, 4*s.Elems(), kept, "a buffer handed out after trimAfter cancels the drop")
	e.Release(d)

	e.bufs.trimAfter(time.Millisecond)
	require.Eventually(t, func() bool {
		e.bufs.mu.Lock()
		defer e.bufs.mu.Unlock()
		return e.bufs.bytes == 0 && e.bufs.free == nil
	}, 5*time.Second, time.Millisecond, "an idle pool is dropped")
}
