package vitamin

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/unitok/unitok/internal/cpu"
	"github.com/unitok/unitok/internal/cputime"
	"github.com/unitok/unitok/internal/engine"
)

type rsrc struct{ shapes map[string][]int }

func (r rsrc) Shape(n string) ([]int, bool) { s, ok := r.shapes[n]; return s, ok }
func (r rsrc) Get(n string, shape ...int) ([]float32, error) {
	s := r.shapes[n]
	k := 1
	for _, d := range s {
		k *= d
	}
	v := make([]float32, k)
	rng := rand.New(rand.NewPCG(uint64(k), 3))
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 0.02)
	}
	return v, nil
}

type timed struct {
	*cpu.Engine
	t     map[string]time.Duration
	cpu   map[string]float64 // CPU seconds (all threads) per op
	flops map[string]float64
	// perOut is each uploaded linear or convolution weight's floating-point
	// operations per output value (2 x its multiply-adds).
	perOut map[engine.Weight]float64
}

func opKey(name string, s engine.Shape) string {
	return fmt.Sprintf("%s %dx%dx%d", name, s.H, s.W, s.C)
}

// mark is an op's start: wall clock and the process's CPU time.
type mark struct {
	w time.Time
	c float64
}

func (t *timed) start() mark { return mark{time.Now(), cputime.Process().Seconds()} }

// rec adds an op's wall and CPU time since m to its row and, for an op
// with an uploaded weight w (nil: none), its floating-point operations.
func (t *timed) rec(name string, s engine.Shape, m mark, w engine.Weight) {
	k := opKey(name, s)
	t.t[k] += time.Since(m.w)
	t.cpu[k] += cputime.Process().Seconds() - m.c
	if w != nil {
		t.flops[k] += float64(s.B*s.H*s.W*s.C) * t.perOut[w]
	}
}
func (t *timed) Linear(w, bias []float32, out, in int) engine.Weight {
	r := t.Engine.Linear(w, bias, out, in)
	t.perOut[r] = 2 * float64(in)
	return r
}
func (t *timed) Conv(w, bias []float32, out, in, kh, kw, groups int) engine.Weight {
	r := t.Engine.Conv(w, bias, out, in, kh, kw, groups)
	t.perOut[r] = 2 * float64(in/groups*kh*kw)
	return r
}

// UpConvWeight: the work done, 4 taps per output (each sub-pixel phase of
// a 3x3 convolution after a 2x nearest upsample is a 2x2 convolution of the
// low-resolution map), not the 9 of the convolution it equals.
func (t *timed) UpConvWeight(w, bias []float32, out, in int) engine.Weight {
	r := t.Engine.UpConvWeight(w, bias, out, in)
	t.perOut[r] = 2 * float64(in*4)
	return r
}
func (t *timed) MatMul(x engine.Tensor, w engine.Weight, acc engine.Tensor) engine.Tensor {
	t0 := t.start()
	r := t.Engine.MatMul(x, w, acc)
	t.rec("MatMul", r.Shape(), t0, w)
	return r
}
func (t *timed) Conv2d(x engine.Tensor, w engine.Weight, s, p int) engine.Tensor {
	t0 := t.start()
	r := t.Engine.Conv2d(x, w, s, p)
	t.rec(fmt.Sprintf("Conv2d(in %d,s%d)", x.Shape().C, s), r.Shape(), t0, w)
	return r
}
func (t *timed) UpConv3x3(x engine.Tensor, w engine.Weight) engine.Tensor {
	t0 := t.start()
	r := t.Engine.UpConv3x3(x, w)
	t.rec("UpConv", r.Shape(), t0, w)
	return r
}
func (t *timed) LayerNorm(x engine.Tensor, a, b engine.Weight, eps float32) engine.Tensor {
	t0 := t.start()
	r := t.Engine.LayerNorm(x, a, b, eps)
	t.rec("LN", r.Shape(), t0, nil)
	return r
}
func (t *timed) GELU(x engine.Tensor) engine.Tensor {
	t0 := t.start()
	r := t.Engine.GELU(x)
	t.rec("GELU", r.Shape(), t0, nil)
	return r
}
func (t *timed) GeGLU(a, b engine.Tensor) engine.Tensor {
	t0 := t.start()
	r := t.Engine.GeGLU(a, b)
	t.rec("GeGLU", r.Shape(), t0, nil)
	return r
}
func (t *timed) Attention(x engine.Tensor, h int) engine.Tensor {
	t0 := t.start()
	r := t.Engine.Attention(x, h)
	t.rec("Attn", r.Shape(), t0, nil)
	return r
}
func (t *timed) Add(a, b engine.Tensor) engine.Tensor {
	t0 := t.start()
	r := t.Engine.Add(a, b)
	t.rec("Add", r.Shape(), t0, nil)
	return r
}
func (t *timed) AvgPool3x3s2(x engine.Tensor) engine.Tensor {
	t0 := t.start()
	r := t.Engine.AvgPool3x3s2(x)
	t.rec("Pool", r.Shape(), t0, nil)
	return r
}
func (t *timed) Upsample2x(x engine.Tensor) engine.Tensor {
	t0 := t.start()
	r := t.Engine.Upsample2x(x)
	t.rec("Up2x", r.Shape(), t0, nil)
	return r
}

// TestOpTimes is a diagnostic, not a check: it prints where the CPU engine
// spends the time of one vitamin_large image (encode, decode, twice each;
// the second pass is the warm one; UNITOK_OPTIME_BATCH=B for B images a
// call), with each op's threads kept busy and the GFLOP and GFLOP/s (wall
// clock, all threads) of the linears and convolutions, to hold against the
// FMA peak (go test -bench FMAPeak ./internal/cpu/kern, per core).
func TestOpTimes(t *testing.T) {
	if os.Getenv("UNITOK_OPTIME") == "" {
		t.Skip("set UNITOK_OPTIME=1: per-op wall times of the vitamin_large encoder and decoder on the CPU engine (synthetic weights)")
	}
	c := VitaminLarge(1024)
	sh := map[string][]int{}
	for _, x := range append(append(c.EncoderTensors(), c.DecoderTensors()...), c.HeadTensors()...) {
		sh[x.Name] = x.Shape
	}
	te := &timed{Engine: cpu.New(0), t: map[string]time.Duration{}, perOut: map[engine.Weight]float64{}}
	src := rsrc{sh}
	enc, err := LoadEncoder(te, src, c)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := LoadDecoder(te, src, c)
	if err != nil {
		t.Fatal(err)
	}
	B := 1
	if v, err := strconv.Atoi(os.Getenv("UNITOK_OPTIME_BATCH")); err == nil && v > 0 {
		B = v
	}
	x := make([]float32, B*3*256*256)
	for i := range x {
		x[i] = float32(i%17)/8 - 1
	}
	for _, which := range []string{"enc", "dec", "enc", "dec"} {
		te.t, te.flops, te.cpu = map[string]time.Duration{}, map[string]float64{}, map[string]float64{}
		t0 := time.Now()
		if which == "enc" {
			_, err = enc.Encode(context.Background(), te, x, B)
		} else {
			tok := make([]float32, B*256*1024)
			for i := range tok {
				tok[i] = float32(i%13)/13 - 0.5
			}
			_, err = dec.Decode(context.Background(), te, tok, B, true)
		}
		if err != nil {
			t.Fatal(err)
		}
		tot := time.Since(t0)
		type kv struct {
			k string
			v time.Duration
		}
		var l []kv
		var sum time.Duration
		for k, v := range te.t {
			l = append(l, kv{k, v})
			sum += v
		}
		sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
		var fl float64
		for _, f := range te.flops {
			fl += f
		}
		var cpuSum float64
		for _, c := range te.cpu {
			cpuSum += c
		}
		// threads: the op's CPU seconds over its wall seconds, the cores it
		// kept busy on average.
		fmt.Printf("== %s total %v (ops %v, %.2f threads busy); linears and convolutions %.1f GFLOP\n", which, tot, sum, cpuSum/sum.Seconds(), fl/1e9)
		for _, e := range l[:min(25, len(l))] {
			th := te.cpu[e.k] / e.v.Seconds()
			if f := te.flops[e.k]; f > 0 {
				fmt.Printf("  %-40s %8.1f ms %4.2f thr %7.1f GFLOP %6.1f GFLOP/s\n", e.k, e.v.Seconds()*1e3, th, f/1e9, f/e.v.Seconds()/1e9)
			} else {
				fmt.Printf("  %-40s %8.1f ms %4.2f thr\n", e.k, e.v.Seconds()*1e3, th)
			}
		}
	}
}
