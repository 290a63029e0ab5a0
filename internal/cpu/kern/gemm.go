// Package kern holds the CPU engine's compute kernels: the GEMM that every
// linear layer, convolution (by im2col) and attention block of the CPU engine
// runs on. The API here is the contract; the implementation behind it is
// chosen once at start-up (assembly where the CPU has it, pure Go otherwise;
// see Level).
//
// The GEMM is BLIS-shaped: W is packed once into k-major panels of 32
// columns (CPUs with AVX-512) or 16 (the others) (Pack), A is packed per
// block of rows and KC values of k into micro-panels of the tile's row
// count, and a microkernel (AVX-512 12x32, AVX2 6x16, or Go 4x16) keeps its
// C tile in registers for KC steps of k while the panel's KC-row slice
// stays in L1.
package kern

import (
	"sync"
	"sync/atomic"
)

// panelWidth is the widest packed panel: the number of W rows (output
// columns) in one panel of the AVX-512 layout.
const panelWidth = 32

// packWidth is the panel width Pack lays W out in: 32 where the CPU has
// AVX-512 (its 12x32 tile reads a whole panel row), 16 elsewhere, the
// width of the AVX2 and Go tiles. A 16-wide tile on a 32-wide panel reads
// half of every 128-byte row: the KC x 16 slice it reuses then sits on
// every other L1 set, half the cache, and the A and C lines that share
// those sets evict it. On the 2-core Zen 3 VM, interleaved: the kernel
// over a 252-row block of 252x1024x2048 on one core 76 vs 72 and 87 vs 83
// GFLOP per CPU second; whole GEMMs on 2 threads, medians of 9,
// 2048x2048x1024 141 vs 135 GFLOP/s, 2048x1024x2048 143 vs 138,
// 256x4096x1024 143 vs 139, 256x1024x3072 135 vs 130. Tests change it to
// cover both layouts on each level.
var packWidth = func() int {
	if detect() >= AVX512 {
		return panelWidth
	}
	return 16
}()

// kcMax bounds the k-block (microKernel.kc): a panel slice of kc x pw
// floats is reused by every row tile of a block while it sits in L1.
const kcMax = 256

// mcMax bounds the rows of A packed at once (mcMax x kc floats, 264 KB,
// stays in L2); a multiple of every tile height.
const mcMax = 264

// tileMax bounds mr*nr over the kernels.
const tileMax = 16 * panelWidth

// Packed is a weight matrix W (Out x In, PyTorch's nn.Linear row-major
// layout) laid out once for Gemm: ceil(Out/pw) panels of pw columns (pw =
// packWidth when packed), panel p holding W[pw*p+j, k] at p*In*pw + k*pw +
// j, zero past Out. It is immutable once built (PackStrided may refill one
// the caller owns) and safe to share.
type Packed struct {
	Out, In int
	pw      int
	panels  []float32
}

// Pack lays out w, an (out, in) row-major matrix, for Gemm. w is copied.
func Pack(w []float32, out, in int) *Packed {
	if len(w) < out*in {
		panic("kern.Pack: weight shorter than out*in")
	}
	return PackStrided(nil, w, out, in, in, 1)
}

// PackStrided packs W[o, k] = w[o*so + k*si] for o < out, k < in (so a
// transposed or interleaved operand packs without a copy) into p's storage
// when p is non-nil and large enough, else into a new Packed, and returns
// it. Reusing p lets a caller repack per block without allocating.
func PackStrided(p *Packed, w []float32, out, in, so, si int) *Packed {
	if out > 0 && in > 0 {
		_ = w[(out-1)*so+(in-1)*si] // bounds, once
	}
	pw := packWidth
	n := (out + pw - 1) / pw * pw * in
	if p == nil {
		p = &Packed{}
	}
	if cap(p.panels) < n {
		p.panels = make([]float32, n)
	}
	p.Out, p.In, p.pw, p.panels = out, in, pw, p.panels[:n]
	for c0 := 0; c0 < out; c0 += pw {
		panel := p.panels[c0*in : (c0+pw)*in]
		nc := min(pw, out-c0)
		if nc < pw {
			clear(panel)
		}
		switch {
		case si == 1: // rows of W contiguous: read each row once
			for j := 0; j < nc; j++ {
				for k, v := range w[(c0+j)*so : (c0+j)*so+in] {
					panel[k*pw+j] = v
				}
			}
		case so == 1: // columns of W contiguous (a transposed operand)
			for k := 0; k < in; k++ {
				copy(panel[k*pw:k*pw+nc], w[c0+k*si:c0+k*si+nc])
			}
		default:
			for j := 0; j < nc; j++ {
				for k := 0; k < in; k++ {
					panel[k*pw+j] = w[(c0+j)*so+k*si]
				}
			}
		}
	}
	return p
}

// microKernel is one level's register tile: mr rows x nr columns (nr
// divides the panel width). run computes C = A B over kc steps for tiles
// full tiles down the rows, B in a panel pw floats wide (see gemm_amd64.go
// for the argument layout); it takes every pw >= nr that Pack makes on a
// CPU with this level.
type microKernel struct {
	mr, nr int
	kc     int // k-block, <= kcMax
	run    func(kc int, a, b []float32, pw int, c []float32, ldc int, bias []float32, load bool, tiles int, pf []float32)
	pack6  pack6Func // mr == 6: the vector body of packing A (nil: Go)
}

// pack6Func interleaves six rows into a 6-row micro-panel, d[6k+i] =
// s_i[k] for k < n, n a multiple of 8.
type pack6Func func(d, s0, s1, s2, s3, s4, s5 *float32, n int)

// kernels is indexed by Level: the generic tile and, on amd64, the
// assembly ones (kernelTable, per platform).
var kernels = kernelTable()

var genericKernel = microKernel{mr: 4, nr: 16, kc: 256, run: kernelGeneric}

// Gemm computes, for r in [0, R) and o in [0, w.Out):
//
//	dst[r*ldd+o] = sum_k a[r*lda+k] * W[o, k] + bias[o] (+ dst[r*ldd+o] when accumulate)
//
// a is (R, w.In) with row stride lda >= w.In; dst is (R, w.Out) with row
// stride ldd >= w.Out; bias may be nil. Work is split over up to threads
// goroutines (threads <= 1: the calling goroutine only). Each dst value is
// written by one worker per k-block, with k summed in order in blocks of kc
// (the old value and the bias are added after the first block), so the
// result is deterministic and does not depend on threads.
func Gemm(dst []float32, ldd int, a []float32, lda int, R int, w *Packed, bias []float32, accumulate bool, threads int) {
	gemm(kernels[level], dst, ldd, operand{a: a, lda: lda}, R, w, bias, accumulate, threads)
}

// GemmTaps is Gemm with an implicit A gathered from taps of a: for r in
// [0, R), tap t in [0, len(taps)) and c in [0, C),
//
//	A[r, t*C + c] = a[r*lda + taps[t] + c]
//
// and w.In == len(taps)*C. A stride-1 kxk convolution over a zero-padded
// NHWC map is one GemmTaps (taps the element offsets of the kernel's
// positions, lda = C), with no im2col matrix in memory: the taps are read
// straight into the packed A block. The result equals Gemm on the
// materialized A bit for bit (the same k order and blocking).
func GemmTaps(dst []float32, ldd int, a []float32, lda int, R int, taps []int, C int, w *Packed, bias []float32, accumulate bool, threads int) {
	if len(taps)*C != w.In {
		panic("kern.GemmTaps: len(taps)*C != w.In")
	}
	gemm(kernels[level], dst, ldd, operand{a: a, lda: lda, taps: taps, c: C}, R, w, bias, accumulate, threads)
}

// operand is a GEMM's A: rows lda apart, and either contiguous (taps nil:
// A[r, k] = a[r*lda + k]) or gathered from taps of C values each.
type operand struct {
	a    []float32
	lda  int
	taps []int
	c    int
}

// last is the largest index of a that rows [0, R) of width I read.
func (op operand) last(R, I int) int {
	if op.taps == nil {
		return (R-1)*op.lda + I - 1
	}
	m := 0
	for _, t := range op.taps {
		if t < 0 {
			panic("kern.GemmTaps: negative tap offset")
		}
		m = max(m, t)
	}
	return (R-1)*op.lda + m + op.c - 1
}

func gemm(mk microKernel, dst []float32, ldd int, op operand, R int, w *Packed, bias []float32, accumulate bool, threads int) {
	I, O := w.In, w.Out
	if R <= 0 || O <= 0 {
		return
	}
	_ = dst[(R-1)*ldd+O-1]
	if bias != nil {
		bias = bias[:O]
	}
	if I == 0 {
		for r := 0; r < R; r++ {
			row := dst[r*ldd : r*ldd+O]
			for o := range row {
				v := float32(0)
				if bias != nil {
					v = bias[o]
				}
				if accumulate {
					v += row[o]
				}
				row[o] = v
			}
		}
		return
	}
	_ = op.a[op.last(R, I)]
	// Row blocks of at most mcMax rows (the packed A block stays in L2 and
	// every W panel slice brought into L1 serves all its row tiles),
	// rounded to the tile.
	blocks := (R + mcMax - 1) / mcMax
	mc := ((R+blocks-1)/blocks + mk.mr - 1) / mk.mr * mk.mr
	if mk.nr > w.pw {
		panic("kern: W packed narrower than the kernel's tile")
	}
	panels := (O + w.pw - 1) / w.pw
	g := gemmCall{mk: mk, dst: dst, ldd: ldd, op: op, w: w, bias: bias, accumulate: accumulate}
	workers := max(threads, 1)
	rowSplit := false
	if workers > 1 && R >= 8*workers*mk.mr {
		// Row split: the threads take whole row blocks, each packing its
		// own A, and never wait for each other (below). The block count
		// is rounded up to a multiple of the threads (smaller blocks, as
		// many per thread): one image's 256 tokens on 2 threads run one
		// block each (each thread streams all of W; 256x1024x3072,
		// interleaved runs: median 113 vs 101 GFLOP/s splitting panels),
		// and 5 blocks on 2 threads would run 3 and 2, one thread alone
		// for the last (the decoder's 64x64 UpConv phases: 1.77 threads
		// busy). With fewer than 8 row tiles per thread, each W slice
		// would serve too few tiles: the panels are split instead.
		if blocks%workers != 0 && blocks < 8*workers {
			blocks = (blocks + workers - 1) / workers * workers
			mc = ((R+blocks-1)/blocks + mk.mr - 1) / mk.mr * mk.mr
			blocks = (R + mc - 1) / mc
		}
		rowSplit = true
	}
	if rowSplit {
		// The threads take whole row blocks, each with its own packed A,
		// and never wait for each other (convolutions over a large map,
		// batches; 2 threads, interleaved runs: 4096x160x640 best 135 vs
		// 102 GFLOP/s splitting panels, 1024x1024x3072 median 115 vs 107).
		ParallelFor(blocks, 1, workers, func(_, lo, hi int) {
			sp := g.scratch(mc, 1)
			defer packPool.Put(sp)
			ap, tmp := (*sp)[:mc*kcMax], (*sp)[mc*kcMax:mc*kcMax+tileMax]
			for b := lo; b < hi; b++ {
				r0 := b * mc
				r1 := min(r0+mc, R)
				for k0 := 0; k0 < I; k0 += mk.kc {
					kb := min(mk.kc, I-k0)
					packA(ap, op, r0, r1, 0, r1-r0, k0, kb, mk)
					g.panels(ap, tmp, r0, r1, k0, kb, 0, panels)
				}
			}
		})
		return
	}
	// Otherwise per block and k-block: pack A once (split over the
	// threads), then split the panels across the threads.
	sp := g.scratch(mc, workers)
	defer packPool.Put(sp)
	ap, tmps := (*sp)[:mc*kcMax], (*sp)[mc*kcMax:mc*kcMax+workers*tileMax]
	tiles := (mc + mk.mr - 1) / mk.mr
	for r0 := 0; r0 < R; r0 += mc {
		r1 := min(r0+mc, R)
		for k0 := 0; k0 < I; k0 += mk.kc {
			kb := min(mk.kc, I-k0)
			pth := threads
			if (r1-r0)*kb < 1<<15 { // small: not worth waking workers
				pth = 1
			}
			ParallelFor((r1-r0+mk.mr-1)/mk.mr, max(1, tiles/max(pth, 1)), pth, func(_, lo, hi int) {
				packA(ap, op, r0, r1, lo*mk.mr, min(hi*mk.mr, r1-r0), k0, kb, mk)
			})
			grain := max(1, panels/(16*workers)) // fine: the k-block barrier waits for the last piece
			ParallelFor(panels, grain, threads, func(wk, p0, p1 int) {
				g.panels(ap, tmps[wk*tileMax:(wk+1)*tileMax], r0, r1, k0, kb, p0, p1)
			})
		}
	}
}

// gemmCall is one Gemm's operands, shared by its workers.
type gemmCall struct {
	mk         microKernel
	dst        []float32
	ldd        int
	op         operand
	w          *Packed
	bias       []float32
	accumulate bool
}

// scratch returns a pooled buffer for a packed A block of mc rows and
// workers edge tiles.
func (g *gemmCall) scratch(mc, workers int) *[]float32 {
	sp := packPool.Get().(*[]float32)
	if need := mc*kcMax + workers*tileMax; cap(*sp) < need {
		*sp = make([]float32, need)
	}
	return sp
}

// panels runs panels [p0, p1) of W over rows [r0, r1) and k-block
// [k0, k0+kb), with A packed in ap; tmp holds an edge tile.
func (g *gemmCall) panels(ap, tmp []float32, r0, r1, k0, kb, p0, p1 int) {
	mk, w, dst, ldd, bias := g.mk, g.w, g.dst, g.ldd, g.bias
	I, O, pw := w.In, w.Out, w.pw
	first := k0 == 0
	for p := p0; p < p1; p++ {
		for j0 := 0; j0 < pw && p*pw+j0 < O; j0 += mk.nr {
			c0 := p*pw + j0
			nc := min(mk.nr, O-c0)
			bp := w.panels[p*pw*I+k0*pw+j0:]
			var bs []float32
			if first && bias != nil && nc == mk.nr {
				bs = bias[c0 : c0+nc]
			}
			var pf []float32 // the next panel's slice, while this one runs
			if j0 == 0 && p+1 < p1 {
				pf = w.panels[(p+1)*pw*I+k0*pw : (p+1)*pw*I+(k0+kb)*pw]
			}
			full := (r1 - r0) / mk.mr
			if full > 0 && nc == mk.nr {
				mk.run(kb, ap, bp, pw, dst[r0*ldd+c0:], ldd, bs, !first || g.accumulate, full, pf)
			} else {
				full = 0
			}
			for i0 := r0 + full*mk.mr; i0 < r1; i0 += mk.mr {
				at := ap[(i0-r0)*kb:]
				nrow := min(mk.mr, r1-i0)
				t := tmp[:mk.mr*mk.nr]
				mk.run(kb, at, bp, pw, t, mk.nr, nil, false, 1, nil)
				for i := 0; i < nrow; i++ {
					row := dst[(i0+i)*ldd+c0 : (i0+i)*ldd+c0+nc]
					tr := t[i*mk.nr:]
					for j := range row {
						v := tr[j]
						if first && bias != nil {
							v += bias[c0+j]
						}
						if !first || g.accumulate {
							v += row[j]
						}
						row[j] = v
					}
				}
			}
		}
	}
}

var packPool = sync.Pool{New: func() any { return new([]float32) }}

// packA writes rows [r0+i0, r0+i1) (i0 a multiple of mr) and k in
// [k0, k0+kb) of op into dst as micro-panels of mr rows: micro-panel t
// holds A[r0+t*mr+i, k0+k] at t*mr*kb + k*mr + i, zero past r1.
func packA(dst []float32, op operand, r0, r1, i0, i1, k0, kb int, mk microKernel) {
	mr := mk.mr
	// The k range as contiguous pieces of a row: one, or one per tap it
	// crosses (the same for every row).
	var segBuf [16]aSeg
	segs := segBuf[:0]
	if op.taps == nil {
		segs = append(segs, aSeg{0, k0, kb})
	} else {
		for k := k0; k < k0+kb; {
			t, c := k/op.c, k%op.c
			n := min(op.c-c, k0+kb-k)
			segs = append(segs, aSeg{k - k0, op.taps[t] + c, n})
			k += n
		}
	}
	var srcBuf [16][]float32
	for t0 := r0 + i0; t0 < r0+i1; t0 += mr {
		mp := dst[(t0-r0)*kb : (t0-r0+mr)*kb]
		n := min(mr, r1-t0)
		if n < mr {
			clear(mp)
		}
		for _, sg := range segs {
			src := srcBuf[:n]
			for i := range src {
				o := (t0+i)*op.lda + sg.off
				src[i] = op.a[o : o+sg.n]
			}
			d := mp[sg.k*mr : (sg.k+sg.n)*mr]
			if n == 6 && mr == 6 {
				pack6(mk.pack6, d, src[0], src[1], src[2], src[3], src[4], src[5])
				continue
			}
			for i, sr := range src {
				for k, v := range sr {
					d[k*mr+i] = v
				}
			}
		}
	}
}

// aSeg is a piece of a packed k-block: k-block columns [k, k+n) come from
// row offsets [off, off+n).
type aSeg struct{ k, off, n int }

// pack6 interleaves six rows into a 6-row micro-panel, d[k*6+i] = si[k]:
// 8 values of k at a time with vec (the 6-row kernel's pack6, nil: none),
// the rest in Go, writing d in order.
func pack6(vec pack6Func, d, s0, s1, s2, s3, s4, s5 []float32) {
	n := len(s0)
	d = d[:6*n]
	s1, s2, s3, s4, s5 = s1[:n], s2[:n], s3[:n], s4[:n], s5[:n]
	k0 := 0
	if vec != nil && n >= 8 {
		k0 = n &^ 7
		vec(&d[0], &s0[0], &s1[0], &s2[0], &s3[0], &s4[0], &s5[0], k0)
	}
	for k := k0; k < n; k++ {
		e := d[6*k : 6*k+6 : 6*k+6]
		e[0], e[1], e[2], e[3], e[4], e[5] = s0[k], s1[k], s2[k], s3[k], s4[k], s5[k]
	}
}

// kernelGeneric is the pure-Go tile: 4 rows x 16 columns, the same
// contract as the assembly kernels (k in order, C = acc + bias + old C).
func kernelGeneric(kc int, a, b []float32, pw int, c []float32, ldc int, bias []float32, load bool, tiles int, _ []float32) {
	for t := 0; t < tiles; t++ {
		kernelGeneric1(kc, a[t*kc*4:], b, pw, c[t*4*ldc:], ldc, bias, load)
	}
}

func kernelGeneric1(kc int, a, b []float32, pw int, c []float32, ldc int, bias []float32, load bool) {
	a = a[:kc*4]
	b = b[:(kc-1)*pw+16]
	// Four passes of 4 columns: 16 scalar accumulators stay in registers.
	for j0 := 0; j0 < 16; j0 += 4 {
		var s00, s01, s02, s03, s10, s11, s12, s13 float32
		var s20, s21, s22, s23, s30, s31, s32, s33 float32
		for k := 0; k < kc; k++ {
			bk := b[k*pw+j0 : k*pw+j0+4 : k*pw+j0+4]
			ak := a[k*4 : k*4+4 : k*4+4]
			y0, y1, y2, y3 := bk[0], bk[1], bk[2], bk[3]
			x0, x1, x2, x3 := ak[0], ak[1], ak[2], ak[3]
			s00 += x0 * y0
			s01 += x0 * y1
			s02 += x0 * y2
			s03 += x0 * y3
			s10 += x1 * y0
			s11 += x1 * y1
			s12 += x1 * y2
			s13 += x1 * y3
			s20 += x2 * y0
			s21 += x2 * y1
			s22 += x2 * y2
			s23 += x2 * y3
			s30 += x3 * y0
			s31 += x3 * y1
			s32 += x3 * y2
			s33 += x3 * y3
		}
		store4(c[j0:], bias, j0, load, s00, s01, s02, s03)
		store4(c[ldc+j0:], bias, j0, load, s10, s11, s12, s13)
		store4(c[2*ldc+j0:], bias, j0, load, s20, s21, s22, s23)
		store4(c[3*ldc+j0:], bias, j0, load, s30, s31, s32, s33)
	}
}

func store4(d, bias []float32, j int, load bool, s0, s1, s2, s3 float32) {
	d = d[:4]
	if bias != nil {
		b := bias[j : j+4]
		s0, s1, s2, s3 = s0+b[0], s1+b[1], s2+b[2], s3+b[3]
	}
	if load {
		s0, s1, s2, s3 = s0+d[0], s1+d[1], s2+d[2], s3+d[3]
	}
	d[0], d[1], d[2], d[3] = s0, s1, s2, s3
}

// ParallelFor runs fn over [0, n) split into contiguous pieces of at least
// grain items, on up to threads goroutines; pieces are handed out in order
// from an atomic counter so uneven work balances. fn also receives its
// worker's index in [0, threads), for per-worker scratch.
func ParallelFor(n, grain, threads int, fn func(worker, lo, hi int)) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	pieces := (n + grain - 1) / grain
	workers := min(max(threads, 1), pieces)
	if workers <= 1 {
		fn(0, 0, n)
		return
	}
	var next atomic.Int64
	work := func(w int) {
		for {
			p := int(next.Add(1) - 1)
			if p >= pieces {
				return
			}
			fn(w, p*grain, min((p+1)*grain, n))
		}
	}
	// The calling goroutine is worker 0: one goroutine fewer to start and
	// wake per call, and the caller's thread, already running, starts at
	// once.
	var wg sync.WaitGroup
	wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		go func(w int) {
			defer wg.Done()
			work(w)
		}(w)
	}
	work(0)
	wg.Wait()
}
