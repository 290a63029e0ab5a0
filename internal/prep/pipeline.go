package prep

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/npy"
)

// slot holds one batch's buffers; InFlight+2 slots circulate between the
// reader (which takes a free one), a worker and the writer (which frees it),
// so memory is bounded by batch size times slots.
type slot struct {
	inF  []float32 // converted input (non-float32 or unaligned features)
	inI  []int32   // converted input codes
	outI []int32   // codes out
	outF []float32 // features or latents out
	outB []byte    // output bytes (codes in the output dtype)
	hist []int64   // (K, V) code counts of this batch
}

// job is one batch: units [u0, u0+n) of a shard.
type job struct {
	sh    *shard
	in    *input
	u0, n int
	slot  *slot
	data  []byte // output bytes, set by the worker
	err   error
	done  chan struct{}
}

// errSkipped marks a job not computed because its shard had already failed
// or the run was cancelled.
var errSkipped = errors.New("skipped")

// Test hooks: called after each manifest append, and before each batch.
var (
	testHookCommitted func(Record)
	testHookBatch     func()
)

// item is what the reader hands the writer, in output order.
type item struct {
	begin, end bool
	sh         *shard
	in         *input
	err        error // set on end when the shard could not be opened
	job        *job
}

func (r *runner) batchUnits(s *shard) int {
	if r.opt.Batch > 0 {
		return r.opt.Batch
	}
	if r.op.batched() {
		return max(1, 16384/s.N)
	}
	return 65536
}

func (r *runner) pipeline(ctx context.Context, cancel context.CancelCauseFunc, todo []*shard) error {
	if len(todo) == 0 {
		return nil
	}
	nslots := r.opt.InFlight + 2
	slots := make(chan *slot, nslots)
	for range nslots {
		slots <- &slot{}
	}
	order := make(chan item, nslots+2)
	jobs := make(chan *job, r.opt.InFlight)
	var wg sync.WaitGroup
	for range r.opt.InFlight {
		wg.Go(func() {
			for j := range jobs {
				if ctx.Err() == nil && !j.sh.failed.Load() {
					j.err = r.compute(j)
				} else {
					j.err = errSkipped
				}
				close(j.done)
			}
		})
	}
	go r.reader(ctx, todo, order, jobs, slots)
	err := r.writer(ctx, cancel, order, slots)
	wg.Wait()
	return err
}

// reader opens shards in order and cuts them into batches of whole images
// (or rows), waiting for a free slot before each batch.
func (r *runner) reader(ctx context.Context, todo []*shard, order chan<- item, jobs chan<- *job, slots <-chan *slot) {
	defer close(order)
	defer close(jobs)
	for _, s := range todo {
		if ctx.Err() != nil {
			return
		}
		s.start = time.Now()
		in, err := openInput(s.path, r.opt.Tensor)
		if err == nil {
			// Checked again: the file may have changed since planning.
			if err = r.geometry(s, in); err != nil {
				in.close()
			}
		}
		if err != nil {
			order <- item{end: true, sh: s, err: err}
			continue
		}
		order <- item{begin: true, sh: s}
		batch := r.batchUnits(s)
		for u := 0; u < s.units && !s.failed.Load() && ctx.Err() == nil; u += batch {
			var sl *slot
			select {
			case sl = <-slots:
			case <-ctx.Done():
			}
			if sl == nil {
				break
			}
			j := &job{sh: s, in: in, u0: u, n: min(batch, s.units-u), slot: sl, done: make(chan struct{})}
			sz := in.elem.size()
			prefetch(in.raw[u*s.unitIn*sz : (u+j.n)*s.unitIn*sz])
			order <- item{job: j}
			jobs <- j
		}
		order <- item{end: true, sh: s, in: in}
	}
}

// prefetchSink keeps the page touches of prefetch from being optimized away.
var prefetchSink atomic.Uint32

// prefetch faults a batch's pages of a memory-mapped input in, on the
// reader goroutine, so that disk reads overlap the workers' compute instead
// of stalling it.
func prefetch(b []byte) {
	const page = 4096
	var x byte
	for i := 0; i < len(b); i += page {
		x += b[i]
	}
	if len(b) > 0 {
		x += b[len(b)-1]
	}
	prefetchSink.Add(uint32(x))
}

func (r *runner) unitRange(j *job) string {
	what := "rows"
	if r.op.batched() {
		what = "images"
	}
	return fmt.Sprintf("%s %d-%d", what, j.u0, j.u0+j.n-1)
}

// compute runs one batch through the Tokenizer and prepares its output
// bytes and code histogram.
func (r *runner) compute(j *job) error {
	if testHookBatch != nil {
		testHookBatch()
	}
	s, sl, in := j.sh, j.slot, j.in
	c := r.cfg
	K, V := c.NumCodebooks, c.CodebookSize
	inN, off := j.n*s.unitIn, j.u0*s.unitIn
	outN := j.n * s.unitOut
	sz := in.elem.size()
	raw := in.raw[off*sz : (off+inN)*sz]
	sl.hist = grow(sl.hist, K*V)
	clear(sl.hist)
	var err error
	switch r.op {
	case Encode, Quantize:
		var x []float32
		if in.f32 != nil {
			x = in.f32[off : off+inN]
		} else {
			sl.inF = grow(sl.inF, inN)
			toFloat32(sl.inF, raw, in.elem)
			x = sl.inF
		}
		sl.outI = grow(sl.outI, outN)
		if r.op == Encode {
			err = r.tok.EncodeInto(sl.outI, x, j.n, s.N)
		} else {
			err = r.tok.QuantizeInto(sl.outI, x, j.n)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", r.unitRange(j), err)
		}
		countCodes(sl.hist, sl.outI, r.layout, s.N, K, V)
		sl.outB = grow(sl.outB, outN*r.dt.Size())
		if err := putCodes(sl.outB, sl.outI, r.dt); err != nil {
			return fmt.Errorf("%s: %w", r.unitRange(j), err)
		}
		j.data = sl.outB
	case Decode, Lookup:
		sl.inI = grow(sl.inI, inN)
		if err := toInt32(sl.inI, raw, in.elem); err != nil {
			return fmt.Errorf("%s: %w", r.unitRange(j), err)
		}
		sl.outF = grow(sl.outF, outN)
		if r.op == Decode {
			err = r.tok.DecodeInto(sl.outF, sl.inI, j.n, s.N)
		} else {
			err = r.tok.LookupInto(sl.outF, sl.inI, j.n)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", r.unitRange(j), err)
		}
		countCodes(sl.hist, sl.inI, r.layout, s.N, K, V)
		sl.outB = bytesOfFloat32(sl.outF, sl.outB)
		j.data = sl.outB
	}
	return nil
}

// writer consumes items in order: it creates each shard's output, writes
// its batches as they complete, and commits it and appends its manifest
// record at the end. A manifest write error is fatal to the run.
func (r *runner) writer(ctx context.Context, cancel context.CancelCauseFunc, order <-chan item, slots chan<- *slot) error {
	var (
		w       *npy.Writer
		h       hash.Hash
		written int64
		hist    = make([]int64, r.cfg.NumCodebooks*r.cfg.CodebookSize)
		fatal   error
	)
	fail := func(s *shard, err error) {
		if s.failedErr != nil {
			return
		}
		s.failedErr = err
		s.failed.Store(true)
		r.sum.fail(s.rel, err)
		r.logf("%s: skipped: %v", s.rel, err)
		if err := r.recordFailure(s.rel, err); err != nil && fatal == nil {
			fatal = fmt.Errorf("prep: %w", err)
			cancel(fatal)
		}
		if w != nil {
			w.Abort()
			w = nil
		}
	}
	for it := range order {
		switch {
		case it.begin:
			s := it.sh
			if ctx.Err() != nil {
				continue
			}
			if err := os.MkdirAll(filepath.Dir(s.out), 0o755); err != nil {
				fail(s, err)
				continue
			}
			dt := r.dt.Name()
			if r.op.codesIn() {
				dt = "float32"
			}
			nw, err := npy.Create(s.out, dt, s.outShape)
			if err != nil {
				fail(s, fmt.Errorf("output %s: %w", s.out, err))
				continue
			}
			hdr, _ := npy.EncodeHeader(nw.DType(), s.outShape)
			w, h, written = nw, sha256.New(), int64(len(hdr))
			h.Write(hdr)
			clear(hist)
		case it.job != nil:
			j := it.job
			<-j.done
			s := j.sh
			switch {
			case s.failedErr != nil || ctx.Err() != nil || w == nil:
			case j.err != nil && j.err != errSkipped:
				fail(s, j.err)
			case j.err == nil:
				if _, err := w.Write(j.data); err != nil {
					fail(s, fmt.Errorf("output %s: %w", s.out, err))
					break
				}
				h.Write(j.data)
				written += int64(len(j.data))
				for i, v := range j.slot.hist {
					hist[i] += v
				}
				r.prog.add(int64(j.n) * int64(s.unitTok))
			}
			j.data = nil
			slots <- j.slot
		case it.end:
			s := it.sh
			if it.err != nil {
				fail(s, it.err)
			}
			if w != nil {
				if ctx.Err() != nil || s.failedErr != nil {
					w.Abort()
				} else if err := w.Commit(); err != nil {
					w = nil
					fail(s, fmt.Errorf("output %s: %w", s.out, err))
				} else {
					rec := Record{Shard: s.rel, Output: s.outRel, Rows: s.outShape[0], Tokens: int64(s.units) * int64(s.unitTok),
						Bytes: written, SHA256: fmt.Sprintf("%x", h.Sum(nil)), Seconds: time.Since(s.start).Seconds(), Params: r.params,
						Partition: r.partitionTag(), Finished: unixNow()}
					if err := r.man.append(rec); err != nil {
						if fatal == nil {
							fatal = fmt.Errorf("prep: %w", err)
							cancel(fatal)
						}
					} else {
						r.shardDone(s, rec, hist)
						if testHookCommitted != nil {
							testHookCommitted(rec)
						}
					}
				}
				w = nil
			}
			if it.in != nil {
				it.in.close()
			}
		}
	}
	if w != nil {
		w.Abort()
	}
	return fatal
}

func (r *runner) shardDone(s *shard, rec Record, hist []int64) {
	sum := r.sum
	sum.Done++
	sum.Rows += int64(s.units)
	sum.Tokens += rec.Tokens
	sum.BytesIn += s.inBytes
	sum.BytesOut += rec.Bytes
	sum.CodeTokens += rec.Tokens
	for i, v := range hist {
		sum.Counts[i] += v
	}
	r.prog.shardDone()
}

// countCodes adds codes to a (K, V) histogram; codes is whole tokens
// (TokenMajor) or whole images of N tokens (CodebookMajor). Out-of-range
// values are ignored.
func countCodes(hist []int64, codes []int32, l unitok.Layout, N, K, V int) {
	if l == unitok.TokenMajor || N <= 1 {
		for t := 0; t+K <= len(codes); t += K {
			for k, c := range codes[t : t+K] {
				if uint32(c) < uint32(V) {
					hist[k*V+int(c)]++
				}
			}
		}
		return
	}
	for b := 0; b+K*N <= len(codes); b += K * N {
		for k := 0; k < K; k++ {
			h := hist[k*V : (k+1)*V]
			for _, c := range codes[b+k*N : b+(k+1)*N] {
				if uint32(c) < uint32(V) {
					h[c]++
				}
			}
		}
	}
}
