package kern

import (
	"runtime"
	"testing"

	"github.com/unitok/unitok/internal/cputime"
)

// BenchmarkKernelOnly runs one vector level's microkernel on a tile whose
// operands stay in L1: the kernel's own ceiling, as GFLOP per CPU second
// and as a fraction of the FMA peak measured just before.
func BenchmarkKernelOnly(b *testing.B) {
	for _, l := range Supported() {
		mk := kernels[l]
		if l == Generic {
			continue
		}
		b.Run(l.String(), func(b *testing.B) {
			a := make([]float32, mk.kc*mk.mr)
			w := make([]float32, mk.kc*packWidth)
			c := make([]float32, mk.mr*mk.nr)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			peak := measurePeak(l)
			b.ResetTimer()
			t0 := cputime.Thread()
			for i := 0; i < b.N; i++ {
				mk.run(mk.kc, a, w, packWidth, c, mk.nr, nil, true, 1, nil)
			}
			gf := float64(2*mk.kc*mk.mr*mk.nr) * float64(b.N) / (cputime.Thread() - t0).Seconds() / 1e9
			b.ReportMetric(gf, "GFLOP/cpu-s")
			b.ReportMetric(gf/peak, "of-peak")
		})
	}
}
