package kern

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/unitok/unitok/internal/cputime"
)

// forEachLevel runs f once per kernel level this CPU supports, with that
// level forced.
func forEachLevel(t *testing.T, f func(t *testing.T)) {
	for _, l := range Supported() {
		t.Run(l.String(), func(t *testing.T) {
			defer SetLevel(SetLevel(l))
			f(t)
		})
	}
}

// forEachLayout is forEachLevel once per panel width the level's kernel
// takes (16 and 32 for the 16-wide tiles, 32 for AVX-512's), with Pack
// forced to it: a CPU without AVX-512 also runs its tiles on the layout
// that one with AVX-512 packs.
func forEachLayout(t *testing.T, f func(t *testing.T)) {
	forEachLevel(t, func(t *testing.T) {
		for _, pw := range []int{16, panelWidth} {
			if pw < kernels[level].nr {
				continue
			}
			t.Run(fmt.Sprintf("pw%d", pw), func(t *testing.T) {
				defer func(old int) { packWidth = old }(packWidth)
				packWidth = pw
				f(t)
			})
		}
	})
}

func randNormals(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

// checkGemm runs Gemm on random operands and compares every output (and
// the untouched padding) with a float64 oracle.
func checkGemm(t *testing.T, rng *rand.Rand, R, I, O int, withBias, acc bool, threads int) {
	t.Helper()
	lda, ldd := I+3, O+2
	a := randNormals(rng, R*lda)
	w := randNormals(rng, O*I)
	var bias []float32
	if withBias {
		bias = randNormals(rng, O)
	}
	p := Pack(w, O, I)
	dst := make([]float32, R*ldd)
	for i := range dst {
		dst[i] = 0.5
	}
	Gemm(dst, ldd, a, lda, R, p, bias, acc, threads)
	for r := 0; r < R; r++ {
		for o := 0; o < O; o++ {
			want, mag := 0.0, 0.0
			if bias != nil {
				want = float64(bias[o])
			}
			if acc {
				want += 0.5
			}
			for k := 0; k < I; k++ {
				x := float64(a[r*lda+k]) * float64(w[o*I+k])
				want += x
				mag += math.Abs(x)
			}
			// float32 summation: error within a few ulps per term.
			if got := float64(dst[r*ldd+o]); math.Abs(got-want) > 1e-6*(2+mag)*float64(I+2) {
				t.Fatalf("R=%d I=%d O=%d bias=%v acc=%v threads=%d: dst[%d,%d] = %g, want %g",
					R, I, O, withBias, acc, threads, r, o, got, want)
			}
		}
		for o := O; o < ldd; o++ {
			if dst[r*ldd+o] != 0.5 {
				t.Fatalf("R=%d I=%d O=%d: padding column %d of row %d written", R, I, O, o, r)
			}
		}
	}
}

func TestGemmMatchesFloat64(t *testing.T) {
	forEachLayout(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		// Shapes cover: full and edge tiles in rows (12, 6, 4) and columns
		// (32, 16), k below, at and across the kc block and the 4-step unroll,
		// several row blocks and panel groups.
		for _, sz := range [][3]int{{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {64, 100, 48}, {12, 256, 32},
			{24, 257, 64}, {13, 3, 33}, {130, 515, 97}, {257, 70, 160}, {6, 4, 16}, {5, 0, 9},
			{1700, 300, 45}} { // many row blocks, few panels: threads take row blocks
			for _, bias := range []bool{false, true} {
				for _, acc := range []bool{false, true} {
					for _, th := range []int{1, 3} {
						checkGemm(t, rng, sz[0], sz[1], sz[2], bias, acc, th)
					}
				}
			}
		}
	})
}

// Every level gives the same bits whatever the thread count.
func TestGemmDeterministicAcrossThreads(t *testing.T) {
	forEachLayout(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		// The second shape splits the threads over row blocks.
		for _, sz := range [][3]int{{200, 600, 150}, {2900, 300, 70}} {
			R, I, O := sz[0], sz[1], sz[2]
			a, w, bias := randNormals(rng, R*I), randNormals(rng, O*I), randNormals(rng, O)
			p := Pack(w, O, I)
			ref := make([]float32, R*O)
			Gemm(ref, O, a, I, R, p, bias, false, 1)
			for _, th := range []int{2, 4, 7} {
				got := make([]float32, R*O)
				Gemm(got, O, a, I, R, p, bias, false, th)
				for i := range got {
					if got[i] != ref[i] {
						t.Fatalf("%v threads=%d: dst[%d] = %v, single thread %v", sz, th, i, got[i], ref[i])
					}
				}
			}
		}
	})
}

// PackStrided of a transposed operand equals Pack of the transpose, and a
// reused Packed is refilled (including a smaller shape's zero padding).
func TestPackStrided(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	out, in := 45, 70
	w := randNormals(rng, out*in)
	wt := make([]float32, in*out) // wt[k*out+o] = w[o*in+k]
	for o := 0; o < out; o++ {
		for k := 0; k < in; k++ {
			wt[k*out+o] = w[o*in+k]
		}
	}
	want := Pack(w, out, in)
	big := PackStrided(nil, randNormals(rng, 64*80), 64, 80, 80, 1)
	got := PackStrided(big, wt, out, in, 1, out)
	if got != big || got.Out != out || got.In != in || len(got.panels) != len(want.panels) {
		t.Fatalf("PackStrided did not reuse or reshape its Packed")
	}
	for i := range want.panels {
		if got.panels[i] != want.panels[i] {
			t.Fatalf("panel value %d: %v, want %v", i, got.panels[i], want.panels[i])
		}
	}
}

// Every level the CPU has passes the start-up check (a failure would
// silently drop to a lower level in production).
func TestSelfCheck(t *testing.T) {
	if usable != detect() {
		t.Fatalf("the %v kernel failed its start-up check; using %v", detect(), usable)
	}
	for l := Generic; l <= detect(); l++ {
		if !selfCheck(l) {
			t.Errorf("selfCheck(%v) failed", l)
		}
	}
}

func TestSetLevelRejectsUnsupported(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("SetLevel(99) did not panic")
		}
	}()
	SetLevel(99)
}

// BenchmarkFMAPeak measures the FMA throughput ceiling of one core per
// vector level: independent VFMADD231PS chains, no loads.
func BenchmarkFMAPeak(b *testing.B) {
	for _, l := range Supported() {
		pk := peaks[l]
		if pk.run == nil {
			continue
		}
		b.Run(l.String(), func(b *testing.B) {
			const n = 1 << 20
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t0 := cputime.Thread()
			for i := 0; i < b.N; i++ {
				pk.run(n)
			}
			b.ReportMetric(float64(pk.flop)*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			b.ReportMetric(float64(pk.flop)*n*float64(b.N)/(cputime.Thread()-t0).Seconds()/1e9, "GFLOP/cpu-s")
		})
	}
}

// measurePeak is the best of a few short runs of the level's FMA loop, in
// GFLOP per second of the calling thread's CPU time (0 when the level has
// no loop). The caller locks its goroutine to its thread.
func measurePeak(l Level) float64 {
	pk := peaks[l]
	if pk.run == nil {
		return 0
	}
	best := 0.0
	for range 5 {
		const n = 1 << 18
		t0 := cputime.Thread()
		pk.run(n)
		if dt := (cputime.Thread() - t0).Seconds(); dt > 0 {
			best = max(best, float64(pk.flop)*n/dt/1e9)
		}
	}
	return best
}

// BenchmarkGemm times the encode side's largest GEMM (256 tokens x
// 1024 -> 3072) on one core and on every thread, per level. It reports
// GFLOP/s (wall clock), GFLOP/cpu-s (per second of CPU time the GEMM's
// threads got: on a shared machine, what the cores did) and, for the vector
// levels, of-peak: GFLOP/cpu-s over the FMA peak per CPU second measured
// just before on the same thread.
func BenchmarkGemm(b *testing.B) {
	R, I, O := 256, 1024, 3072
	rng := rand.New(rand.NewPCG(1, 1))
	a, w, bias := randNormals(rng, R*I), randNormals(rng, O*I), randNormals(rng, O)
	p := Pack(w, O, I)
	dst := make([]float32, R*O)
	for _, l := range Supported() {
		for _, th := range []int{1, runtime.GOMAXPROCS(0)} {
			b.Run(fmt.Sprintf("%v/threads=%d", l, th), func(b *testing.B) {
				defer SetLevel(SetLevel(l))
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				peak := measurePeak(l)
				cpu := cputime.Thread
				if th > 1 {
					cpu = cputime.Process
				}
				b.ResetTimer()
				t0 := cpu()
				for i := 0; i < b.N; i++ {
					Gemm(dst, O, a, I, R, p, bias, false, th)
				}
				dt := cpu() - t0
				flop := float64(2*R*I*O) * float64(b.N)
				b.ReportMetric(flop/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				if dt > 0 {
					gf := flop / dt.Seconds() / 1e9
					b.ReportMetric(gf, "GFLOP/cpu-s")
					if peak > 0 {
						b.ReportMetric(gf/peak, "of-peak")
					}
				}
			})
		}
	}
}

// TestGemmTapsMatchesGemm: GemmTaps over a padded map equals Gemm on the
// materialized im2col matrix bit for bit, on every level, with taps whose
// width does not divide the k-block (so packed blocks cross taps), taps out
// of order, and odd row counts, accumulation and bias.
func TestGemmTapsMatchesGemm(t *testing.T) {
	forEachLayout(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, tc := range []struct{ R, C, O, lda int }{
			{1, 3, 5, 3}, {37, 100, 33, 100}, {300, 160, 27, 171}, {61, 256, 64, 256}, {530, 40, 70, 40}, {2000, 24, 20, 24},
		} {
			taps := []int{0, 5 * tc.lda, 1, 2*tc.lda + 3, 7, tc.lda, 2 * tc.lda, 4, 3 * tc.lda}
			I := len(taps) * tc.C
			a := randNormals(rng, tc.R*tc.lda+3*tc.lda+5*tc.lda+tc.C+8)
			col := make([]float32, tc.R*I)
			for r := 0; r < tc.R; r++ {
				for ti, off := range taps {
					copy(col[r*I+ti*tc.C:r*I+(ti+1)*tc.C], a[r*tc.lda+off:])
				}
			}
			p := Pack(randNormals(rng, tc.O*I), tc.O, I)
			bias := randNormals(rng, tc.O)
			for _, acc := range []bool{false, true} {
				for _, th := range []int{1, 3} {
					want := randNormals(rand.New(rand.NewPCG(1, 1)), tc.R*tc.O)
					got := append([]float32(nil), want...)
					Gemm(want, tc.O, col, I, tc.R, p, bias, acc, th)
					GemmTaps(got, tc.O, a, tc.lda, tc.R, taps, tc.C, p, bias, acc, th)
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%+v acc=%v threads=%d: value %d = %g, im2col GEMM %g", tc, acc, th, i, got[i], want[i])
						}
					}
				}
			}
		}
	})
}

// Each kernel's vector pack6 interleaves six rows exactly as the Go loop
// does, for every length (the vector body takes 8 values at a time, Go the
// rest), and writes nothing past 6n. Every level the CPU has runs, also
// one that its start-up check dropped.
func TestPack6(t *testing.T) {
	for l := Generic; l <= detect(); l++ {
		vec := kernels[l].pack6
		if vec == nil {
			continue
		}
		for n := 0; n <= 41; n++ {
			var s [6][]float32
			for i := range s {
				s[i] = make([]float32, n)
				for k := range s[i] {
					s[i][k] = float32(1000*i + k + 1)
				}
			}
			d := make([]float32, 6*n+8)
			for i := range d {
				d[i] = -1
			}
			pack6(vec, d, s[0], s[1], s[2], s[3], s[4], s[5])
			for k := 0; k < n; k++ {
				for i := 0; i < 6; i++ {
					if d[6*k+i] != s[i][k] {
						t.Fatalf("%v n=%d: d[%d] = %v, want row %d value %d = %v", l, n, 6*k+i, d[6*k+i], i, k, s[i][k])
					}
				}
			}
			for i := 6 * n; i < len(d); i++ {
				if d[i] != -1 {
					t.Fatalf("%v n=%d: wrote d[%d] past 6n", l, n, i)
				}
			}
		}
	}
}
