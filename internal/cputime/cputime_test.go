package cputime

import (
	"runtime"
	"testing"
)

// Both clocks advance while this goroutine spins on its locked thread.
func TestClocksAdvance(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p0, t0 := Process(), Thread()
	if p0 == 0 {
		t.Skip("no process clock on this platform")
	}
	x := 1.0
	for Process()-p0 < 20e6 { // 20 ms of CPU
		for i := 0; i < 1000; i++ {
			x = x*1.0000001 + 1e-9
		}
	}
	if x == 0 {
		t.Fatal("unreachable")
	}
	if runtime.GOOS == "linux" && Thread()-t0 < 10e6 {
		t.Fatalf("thread clock advanced %v while the process clock advanced 20 ms on this thread", Thread()-t0)
	}
}
