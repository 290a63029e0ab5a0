package cpu

import (
	"testing"

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
