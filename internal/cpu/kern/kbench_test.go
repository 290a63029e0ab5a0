package kern

import (
	"runtime"
	"testing"
)

func BenchmarkKernelOnly(b *testing.B) {
	for _, l := range Supported()[1:] {
		mk := kernels[l]
		b.Run(l.String(), func(b *testing.B) {
			a := make([]float32, mk.kc*mk.mr)
			w := make([]float32, mk.kc*panelWidth)
			c := make([]float32, mk.mr*mk.nr)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t0 := threadCPU()
			for i := 0; i < b.N; i++ {
				mk.run(mk.kc, a, w, c, mk.nr, nil, true, 1)
			}
			b.ReportMetric(float64(2*mk.kc*mk.mr*mk.nr)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			b.ReportMetric(float64(2*mk.kc*mk.mr*mk.nr)*float64(b.N)/(threadCPU()-t0).Seconds()/1e9, "GFLOP/cpu-s")
		})
	}
}

func BenchmarkKC(b *testing.B) {
	R, I, O := 256, 1024, 3072
	a, w := make([]float32, R*I), make([]float32, O*I)
	p := Pack(w, O, I)
	dst := make([]float32, R*O)
	for _, k := range []int{64, 96, 128, 192, 256} {
		b.Run(fmtInt(k), func(b *testing.B) {
			old := kernels[AVX2].kc
			kernels[AVX2].kc = k
			defer func() { kernels[AVX2].kc = old }()
			defer SetLevel(SetLevel(AVX2))
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t0 := threadCPU()
			for i := 0; i < b.N; i++ {
				Gemm(dst, O, a, I, R, p, nil, false, 1)
			}
			b.ReportMetric(float64(2*R*I*O)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			b.ReportMetric(float64(2*R*I*O)*float64(b.N)/(threadCPU()-t0).Seconds()/1e9, "GFLOP/cpu-s")
		})
	}
}

func fmtInt(k int) string {
	return string(rune('0'+k/100)) + string(rune('0'+k/10%10)) + string(rune('0'+k%10))
}
