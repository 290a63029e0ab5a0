package cpu

import (
	"fmt"
	"math"
	"sync"

	"github.com/unitok/unitok/internal/cpu/kern"
	"github.com/unitok/unitok/internal/engine"
)

// Attention: full multi-head self-attention per image (MultiHeadAttention
// over the qkv tensor's rows, heads written side by side).
func (e *Engine) Attention(qkv engine.Tensor, heads int) engine.Tensor {
	xt := tens(qkv)
	s := xt.S
	if heads <= 0 || s.C%(3*heads) != 0 {
		panic(fmt.Sprintf("cpu engine: Attention: %d qkv channels for %d heads", s.C, heads))
	}
	C := s.C / 3
	o := s
	o.C = C
	out := e.tensor(o) // every head writes its columns of every row
	sc := attnPool.Get().(*AttnScratch)
	MultiHeadAttention(out.D, C, xt.D, s.C, s.B, s.H*s.W, heads, C/heads, false, e.threads(), sc)
	attnPool.Put(sc)
	return out
}

var attnPool = sync.Pool{New: func() any { return new(AttnScratch) }}

// AttnScratch is MultiHeadAttention's reusable working memory (per worker:
// a score block and the current head's Q, K^T and V copies, or its K and V
// packed for kern.Gemm). The zero value is ready; one AttnScratch serves
// one call at a time.
type AttnScratch struct {
	w []attnWorker
}

type attnWorker struct {
	sc []float32
	kt []float32 // tile path: K^T of the current head, hd x ceil16(N)
	vc []float32 // tile path: V of the current head, N x hd
	qc []float32 // tile path: Q of the current head, N x hd
	// kp, vp: full attention packs one K and one V per head; causal packs
	// them per block of attnBlock keys.
	kp, vp []*kern.Packed
}

// attnBlock is how many queries are scored at once (the score block,
// attnBlock x N floats, stays in L2), and the key block of causal
// attention.
const attnBlock = 64

// attnFullRows and attnScores bound full attention's query block: at most
// this many rows and this many scores.
const attnFullRows, attnScores = 256, 1 << 16

// MultiHeadAttention computes softmax(Q K^T / sqrt(hd)) V for nb images of
// N tokens and heads heads of width hd (W = heads*hd). qkv holds nb*N rows
// with row stride ldq: Q of head h in columns [h*hd, (h+1)*hd), K at W +
// h*hd, V at 2W + h*hd (timm's qkv layout). Head h of row r is written to
// dst[r*ldd+h*hd : r*ldd+(h+1)*hd]. Causal attention lets query i see keys
// j <= i only.
//
// Each (image, head) is one task on one worker. On the vector levels with
// hd a multiple of kern.TileCols it runs per tile of kern.TileRows queries
// on kern.Tile (headTiles). Otherwise on kern.Gemm: K and V packed
// straight from qkv (Q read in place), then per block of queries S = Q K^T,
// a row softmax of S / sqrt(hd) (kern.Softmax) and S V into dst; causal
// blocks compute only the key blocks up to their last query, with K and V
// packed once per head in blocks of keys. Every value is computed by one
// worker in a fixed order, so the result does not depend on threads. s may
// be nil (then scratch is allocated for this call).
func MultiHeadAttention(dst []float32, ldd int, qkv []float32, ldq int, nb, N, heads, hd int, causal bool, threads int, s *AttnScratch) {
	W := heads * hd
	if nb <= 0 || N <= 0 || W == 0 {
		return
	}
	if ldq < 3*W || ldd < W {
		panic(fmt.Sprintf("cpu: MultiHeadAttention: row strides %d (qkv) and %d (dst) for %d heads of %d", ldq, ldd, heads, hd))
	}
	_ = qkv[(nb*N-1)*ldq+3*W-1]
	_ = dst[(nb*N-1)*ldd+W-1]
	if s == nil {
		s = new(AttnScratch)
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	qb := min(attnBlock, N)
	if !causal {
		// Full attention: fewer, taller score blocks (up to 64K floats),
		// fewer GEMM calls and partial row tiles.
		nq := (N + attnFullRows - 1) / attnFullRows
		nq = max(nq, (N*N+attnScores-1)/attnScores)
		qb = (N + nq - 1) / nq
	}
	nkb := (N + attnBlock - 1) / attnBlock
	npk := 1
	if causal {
		npk = nkb
	}
	workers := max(1, min(threads, nb*heads))
	for len(s.w) < workers {
		s.w = append(s.w, attnWorker{})
	}
	if kern.TileFast() && hd%kern.TileCols == 0 {
		kern.ParallelFor(nb*heads, 1, workers, func(wk, lo, hi int) {
			ws := &s.w[wk]
			for item := lo; item < hi; item++ {
				img, h := item/heads, item%heads
				r0 := img * N
				ws.headTiles(dst[r0*ldd+h*hd:], ldd, qkv[r0*ldq+h*hd:], ldq, W, N, hd, scale, causal)
			}
		})
		return
	}
	kern.ParallelFor(nb*heads, 1, workers, func(wk, lo, hi int) {
		ws := &s.w[wk]
		if len(ws.sc) < qb*N {
			ws.sc = make([]float32, qb*N)
		}
		for len(ws.kp) < npk {
			ws.kp = append(ws.kp, nil)
			ws.vp = append(ws.vp, nil)
		}
		for item := lo; item < hi; item++ {
			img, h := item/heads, item%heads
			r0 := img * N
			q := qkv[r0*ldq+h*hd:]
			k := qkv[r0*ldq+W+h*hd:]
			v := qkv[r0*ldq+2*W+h*hd:]
			o := dst[r0*ldd+h*hd:]
			if !causal {
				ws.kp[0] = kern.PackStrided(ws.kp[0], k, N, hd, ldq, 1)
				ws.vp[0] = kern.PackStrided(ws.vp[0], v, hd, N, 1, ldq)
				for i0 := 0; i0 < N; i0 += qb {
					rows := min(qb, N-i0)
					S := ws.sc[:rows*N]
					kern.Gemm(S, N, q[i0*ldq:], ldq, rows, ws.kp[0], nil, false, 1)
					for r := 0; r < rows; r++ {
						kern.Softmax(S[r*N:(r+1)*N], scale)
					}
					kern.Gemm(o[i0*ldd:], ldd, S, N, rows, ws.vp[0], nil, false, 1)
				}
				continue
			}
			for j := 0; j < nkb; j++ {
				j0 := j * attnBlock
				nk := min(attnBlock, N-j0)
				ws.kp[j] = kern.PackStrided(ws.kp[j], k[j0*ldq:], nk, hd, ldq, 1)
				ws.vp[j] = kern.PackStrided(ws.vp[j], v[j0*ldq:], hd, nk, 1, ldq)
			}
			// Query block i sees key blocks 0..i (qb == attnBlock, or N
			// is a single block).
			for i, i0 := 0, 0; i0 < N; i, i0 = i+1, i0+qb {
				rows := min(qb, N-i0)
				L := i0 + rows
				S := ws.sc[:rows*L]
				for j := 0; j <= i; j++ {
					kern.Gemm(S[j*attnBlock:], L, q[i0*ldq:], ldq, rows, ws.kp[j], nil, false, 1)
				}
				for r := 0; r < rows; r++ {
					x := S[r*L : (r+1)*L]
					valid := i0 + r + 1
					kern.Softmax(x[:valid], scale)
					clear(x[valid:])
				}
				for j := 0; j <= i; j++ {
					kern.Gemm(o[i0*ldd:], ldd, S[j*attnBlock:], L, rows, ws.vp[j], nil, j > 0, 1)
				}
			}
		}
	})
}

// headTiles is one head's attention on kern.Tile, per tile of up to
// kern.TileRows queries: scores against K^T (transposed once per head,
// keys padded to a multiple of 16 with zeros), the row softmax, then the
// tile's output (Q and V copied out of qkv once per head). The score tile stays in L1; causal tiles stop at their last query's key
// (rounded up to 16 for the scores).
func (ws *attnWorker) headTiles(o []float32, ldd int, q []float32, ldq, W, N, hd int, scale float32, causal bool) {
	const tr, tc = kern.TileRows, kern.TileCols
	Np := (N + tc - 1) / tc * tc
	if len(ws.kt) < hd*Np {
		ws.kt = make([]float32, hd*Np)
	}
	if len(ws.sc) < tr*Np {
		ws.sc = make([]float32, tr*Np)
	}
	kt := ws.kt[:hd*Np]
	k := q[W:]
	transposeRows(kt, Np, k, ldq, N, hd)
	if Np > N {
		for d := 0; d < hd; d++ {
			clear(kt[d*Np+N : (d+1)*Np])
		}
	}
	// Q and V rows are ldq apart in qkv (each on its own page when ldq
	// is large, and in memory rather than cache for a large chunk):
	// contiguous copies, made with many loads in flight, keep the tiles'
	// operands streaming from L2.
	if len(ws.vc) < N*hd {
		ws.vc = make([]float32, N*hd)
		ws.qc = make([]float32, N*hd)
	}
	v, qc := ws.vc[:N*hd], ws.qc[:N*hd]
	for j := 0; j < N; j++ {
		copy(qc[j*hd:(j+1)*hd], q[j*ldq:])
		copy(v[j*hd:(j+1)*hd], q[2*W+j*ldq:])
	}
	S := ws.sc[:tr*Np]
	for i0 := 0; i0 < N; i0 += tr {
		rows := min(tr, N-i0)
		L := N
		if causal {
			L = i0 + rows
		}
		Lc := (L + tc - 1) / tc * tc
		kern.Tile(S, Np, qc[i0*hd:], hd, kt, Np, rows, hd, Lc)
		for r := 0; r < rows; r++ {
			x := S[r*Np : r*Np+L]
			valid := L
			if causal {
				valid = i0 + r + 1
			}
			kern.Softmax(x[:valid], scale)
			clear(x[valid:])
		}
		kern.Tile(o[i0*ldd:], ldd, S, Np, v, hd, rows, L, hd)
	}
}

// transposeRows writes dst[d*ldd+j] = src[j*lds+d] for j < n, d < m: 8
// source rows at a time, so each destination row gets 32 contiguous bytes
// per visit.
func transposeRows(dst []float32, ldd int, src []float32, lds, n, m int) {
	j := 0
	for ; j+8 <= n; j += 8 {
		r0, r1 := src[j*lds:j*lds+m], src[(j+1)*lds:(j+1)*lds+m]
		r2, r3 := src[(j+2)*lds:(j+2)*lds+m], src[(j+3)*lds:(j+3)*lds+m]
		r4, r5 := src[(j+4)*lds:(j+4)*lds+m], src[(j+5)*lds:(j+5)*lds+m]
		r6, r7 := src[(j+6)*lds:(j+6)*lds+m], src[(j+7)*lds:(j+7)*lds+m]
		for d := range r0 {
			o := dst[d*ldd+j : d*ldd+j+8]
			o[0], o[1], o[2], o[3] = r0[d], r1[d], r2[d], r3[d]
			o[4], o[5], o[6], o[7] = r4[d], r5[d], r6[d], r7[d]
		}
	}
	for ; j < n; j++ {
		for d, v := range src[j*lds : j*lds+m] {
			dst[d*ldd+j] = v
		}
	}
}
