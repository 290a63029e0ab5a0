package batch_test

import (
	"context"
	"errors"
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/batch"
	"github.com/unitok/unitok/batch/batchtest"
)

var testCfg = unitok.Config{InDim: 64, LatentDim: 32, NumCodebooks: 4, CodebookSize: 64, NumHeads: 4}

func newTok(t testing.TB, opts ...unitok.Option) *unitok.Tokenizer {
	t.Helper()
	m, err := unitok.SynthModel(testCfg, 11)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := unitok.New(m, append([]unitok.Option{unitok.WithDevice("cpu")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

func randF(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func randCodes(r *rand.Rand, n, V int) []int32 {
	x := make([]int32, n)
	for i := range x {
		x[i] = int32(r.IntN(V))
	}
	return x
}

type recorder struct {
	mu      sync.Mutex
	batches []batch.BatchInfo
}

func (r *recorder) observe(b batch.BatchInfo) {
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.mu.Unlock()
}

func (r *recorder) maxRequests(op string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := 0
	for _, b := range r.batches {
		if b.Op == op {
			m = max(m, b.Requests)
		}
	}
	return m
}

func closeB(t testing.TB, b *batch.Batcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestBitIdentical: many concurrent calls of mixed sizes, coalesced into
// batches, return exactly the bits of direct Tokenizer calls, in both code
// layouts. The test fails if no batch held more than one call.
func TestBitIdentical(t *testing.T) {
	for _, layout := range []unitok.Layout{unitok.TokenMajor, unitok.CodebookMajor} {
		tok := newTok(t, unitok.WithLayout(layout))
		var rec recorder
		b := batch.New(tok, batch.Options{MaxBatch: 16, MaxWait: 5 * time.Millisecond, Observer: rec.observe})
		c := tok.Config()
		const calls = 48
		var wg sync.WaitGroup
		errs := make(chan error, 4*calls)
		for i := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(i), 1))
				B, N := 1+r.IntN(3), []int{8, 3, 16, 5}[i%4] // 3 and 5: rows not a multiple of the GEMM's 4-row block
				ctx := context.Background()
				x := randF(r, B*N*c.InDim)
				want, _ := tok.Encode(x, B, N)
				got, err := b.Encode(ctx, x, B, N)
				if err != nil || !slices.Equal(got, want) {
					errs <- errorf("encode call %d (B=%d N=%d): err=%v, equal=%v", i, B, N, err, slices.Equal(got, want))
				}
				codes := randCodes(r, B*N*c.NumCodebooks, c.CodebookSize)
				wantF, _ := tok.Decode(codes, B, N)
				gotF, err := b.Decode(ctx, codes, B, N)
				if err != nil || !bitsEqual(gotF, wantF) {
					errs <- errorf("decode call %d: err=%v", i, err)
				}
				M := 1 + r.IntN(7)
				lat := randF(r, M*c.LatentDim)
				wantQ, _ := tok.Quantize(lat, M)
				gotQ, err := b.Quantize(ctx, lat, M)
				if err != nil || !slices.Equal(gotQ, wantQ) {
					errs <- errorf("quantize call %d (M=%d): err=%v got %v want %v", i, M, err, gotQ, wantQ)
				}
				lc := randCodes(r, M*c.NumCodebooks, c.CodebookSize)
				wantL, _ := tok.Lookup(lc, M)
				gotL, err := b.Lookup(ctx, lc, M)
				if err != nil || !bitsEqual(gotL, wantL) {
					errs <- errorf("lookup call %d: err=%v", i, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("layout %d: %v", layout, err)
		}
		for _, op := range []string{"encode", "decode", "quantize", "lookup"} {
			if m := rec.maxRequests(op); m < 2 {
				t.Errorf("layout %d: %s: largest batch held %d calls; nothing was coalesced", layout, op, m)
			}
		}
		closeB(t, b)
	}
}

func errorf(format string, args ...any) error { return errors.New(sprintf(format, args...)) }

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type result struct {
	codes []int32
	err   error
}

// TestRowAlignNeeded shows why Options.RowAlign exists: the CPU engine's
// float results for a sample depend on its rows' offset modulo 4 within the
// engine call. If the engine becomes row-invariant this test fails: then
// set RowAlign's default to 1 and delete it.
func TestRowAlignNeeded(t *testing.T) {
	tok := newTok(t)
	c := tok.Config()
	r := rand.New(rand.NewPCG(1, 1))
	const N = 3
	codes := randCodes(r, 2*N*c.NumCodebooks, c.CodebookSize)
	both, _ := tok.Decode(codes, 2, N)
	first, _ := tok.Decode(codes[:N*c.NumCodebooks], 1, N)
	if bitsEqual(first, both[:N*c.InDim]) {
		t.Skip("this engine (no SIMD GEMM?) is row-invariant here; RowAlign is not needed by it")
	}
	aligned := 8
	codes = randCodes(r, 2*aligned*c.NumCodebooks, c.CodebookSize)
	both, _ = tok.Decode(codes, 2, aligned)
	second, _ := tok.Decode(codes[aligned*c.NumCodebooks:], 1, aligned)
	if !bitsEqual(second, both[aligned*c.InDim:]) {
		t.Errorf("decode of a sample at a row offset of %d differs from a direct call: RowAlign=4 is not enough", aligned)
	}
}

// TestCancelMidBatch: with one batch running (held at a gate) and more
// calls queued, a queued call that is cancelled returns at once and is
// dropped from the next batch; a running call that is cancelled returns at
// once; the other calls of both batches get their exact results.
func TestCancelMidBatch(t *testing.T) {
	tok := newTok(t)
	gate := batchtest.NewGate(tok)
	var rec recorder
	b := batch.New(gate, batch.Options{MaxBatch: 64, MaxWait: -1, Observer: rec.observe})
	defer closeB(t, b)
	c := tok.Config()
	r := rand.New(rand.NewPCG(3, 3))
	const N = 8
	inputs := make([][]float32, 5)
	for i := range inputs {
		inputs[i] = randF(r, N*c.InDim)
	}
	ctxs := make([]context.Context, 5)
	cancels := make([]context.CancelFunc, 5)
	res := make([]chan result, 5)
	start := func(i int) {
		ctxs[i], cancels[i] = context.WithCancel(context.Background())
		res[i] = make(chan result, 1)
		go func() {
			got, err := b.Encode(ctxs[i], inputs[i], 1, N)
			res[i] <- result{got, err}
		}()
	}
	// Calls 0 and 1 run as the first batch (held at the gate).
	start(0)
	waitFor(t, "first batch to reach the engine", func() bool { return gate.Entered.Load() == 1 })
	// Calls 2, 3, 4 queue behind it.
	for i := 2; i < 5; i++ {
		start(i)
	}
	waitFor(t, "three queued calls", func() bool { return b.QueueDepth() == 3 })
	// Cancel queued call 3, and running call 0.
	cancels[3]()
	cancels[0]()
	for _, i := range []int{3, 0} {
		select {
		case rr := <-res[i]:
			if !errors.Is(rr.err, context.Canceled) {
				t.Errorf("call %d: err %v, want context.Canceled", i, rr.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("cancelled call %d did not return while the engine was held", i)
		}
	}
	if d := b.QueueDepth(); d != 2 {
		t.Errorf("queue depth %d after cancelling a queued call, want 2", d)
	}
	gate.Release()
	for _, i := range []int{2, 4} {
		rr := <-res[i]
		want, _ := tok.Encode(inputs[i], 1, N)
		if rr.err != nil || !slices.Equal(rr.codes, want) {
			t.Errorf("call %d: err %v, equal %v", i, rr.err, slices.Equal(rr.codes, want))
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.batches) != 2 || rec.batches[1].Requests != 2 {
		t.Errorf("batches %+v, want the second to hold exactly the 2 live calls", rec.batches)
	}
}

// TestOverloaded: a full queue fails the next call at once with
// ErrOverloaded; the accepted calls still succeed.
func TestOverloaded(t *testing.T) {
	tok := newTok(t)
	gate := batchtest.NewGate(tok)
	b := batch.New(gate, batch.Options{MaxBatch: 1, MaxWait: -1, QueueSize: 4})
	defer closeB(t, b)
	c := tok.Config()
	x := randF(rand.New(rand.NewPCG(1, 2)), c.LatentDim)
	want, _ := tok.Quantize(x, 1)
	var wg sync.WaitGroup
	var okN atomic.Int64
	for range 5 { // one running + four queued
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := b.Quantize(context.Background(), x, 1)
			if err == nil && slices.Equal(got, want) {
				okN.Add(1)
			} else {
				t.Errorf("accepted call: %v", err)
			}
		}()
	}
	waitFor(t, "one running and four queued", func() bool { return gate.Entered.Load() == 1 && b.QueueDepth() == 4 })
	t0 := time.Now()
	_, err := b.Quantize(context.Background(), x, 1)
	if !errors.Is(err, batch.ErrOverloaded) {
		t.Fatalf("sixth call: %v, want ErrOverloaded", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("overloaded call took %v; it must fail at once", d)
	}
	gate.Release()
	wg.Wait()
	if okN.Load() != 5 {
		t.Errorf("%d accepted calls succeeded, want 5", okN.Load())
	}
}

// TestBadCallAlone: a call with bad input fails alone with ErrBadInput and
// never reaches the engine; a call whose expiry passes while queued gets
// DeadlineExceeded.
func TestBadCallAlone(t *testing.T) {
	tok := newTok(t)
	b := batch.New(tok, batch.Options{})
	defer closeB(t, b)
	c := tok.Config()
	ctx := context.Background()
	x := randF(rand.New(rand.NewPCG(5, 5)), 2*c.InDim)
	x[c.InDim+3] = float32(math.NaN())
	cases := map[string]error{}
	_, cases["NaN"] = b.Encode(ctx, x, 1, 2)
	_, cases["short"] = b.Encode(ctx, x[:5], 1, 2)
	_, cases["B=0"] = b.Decode(ctx, nil, 0, 2)
	_, cases["code >= V"] = b.Lookup(ctx, []int32{0, 1, 2, int32(c.CodebookSize)}, 1)
	_, cases["code < 0"] = b.Decode(ctx, []int32{0, -1, 2, 3}, 1, 1)
	_, cases["no image model"] = b.TokenizeImages(ctx, []image.Image{image.NewRGBA(image.Rect(0, 0, 2, 2))})
	for name, err := range cases {
		want := unitok.ErrBadInput
		if name == "no image model" {
			want = batch.ErrNoImageModel
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	if msg := cases["NaN"].Error(); !contains(msg, "row 1, column 3") {
		t.Errorf("NaN error %q does not name the element", msg)
	}
	dctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if _, err := b.Quantize(dctx, make([]float32, c.LatentDim), 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired call: %v", err)
	}
}

// TestEnginePanic: a panicking engine fails that batch with ErrInternal
// and the Batcher keeps serving.
func TestEnginePanic(t *testing.T) {
	tok := newTok(t)
	gate := batchtest.NewGate(tok)
	gate.Release()
	gate.Panic.Store("boom")
	b := batch.New(gate, batch.Options{})
	defer closeB(t, b)
	x := make([]float32, tok.Config().LatentDim)
	if _, err := b.Quantize(context.Background(), x, 1); !errors.Is(err, batch.ErrInternal) || !contains(err.Error(), "boom") {
		t.Fatalf("panicking batch: %v", err)
	}
	if _, err := b.Quantize(context.Background(), x, 1); err != nil {
		t.Fatalf("call after a panic: %v", err)
	}
}

// TestCloseDrains: Close answers every queued call, then refuses new ones;
// with an expired drain context the queued calls fail with ErrClosed.
func TestCloseDrains(t *testing.T) {
	tok := newTok(t)
	gate := batchtest.NewGate(tok)
	b := batch.New(gate, batch.Options{MaxBatch: 2, MaxWait: time.Hour})
	x := make([]float32, tok.Config().LatentDim)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); _, err := b.Quantize(context.Background(), x, 1); errs <- err }()
	}
	waitFor(t, "a running batch and three queued", func() bool { return gate.Entered.Load() == 1 && b.QueueDepth() == 3 })
	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	waitFor(t, "Close to refuse new calls", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_, err := b.Quantize(ctx, x, 1)
		return errors.Is(err, unitok.ErrClosed)
	})
	gate.Release()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("queued call lost at Close: %v", err)
		}
	}

	// Drain deadline passes with calls still queued.
	gate2 := batchtest.NewGate(tok)
	b2 := batch.New(gate2, batch.Options{MaxBatch: 1, MaxWait: -1})
	errs2 := make(chan error, 3)
	for range 3 {
		go func() { _, err := b2.Quantize(context.Background(), x, 1); errs2 <- err }()
	}
	waitFor(t, "one running and two queued", func() bool { return gate2.Entered.Load() == 1 && b2.QueueDepth() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	go func() { time.Sleep(100 * time.Millisecond); gate2.Release() }()
	if err := b2.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close past its deadline: %v", err)
	}
	var closedN, okN int
	for range 3 {
		err := <-errs2
		switch {
		case err == nil:
			okN++
		case errors.Is(err, unitok.ErrClosed):
			closedN++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if okN != 1 || closedN != 2 {
		t.Errorf("%d succeeded and %d closed; want the running one to finish and the 2 queued to fail", okN, closedN)
	}
}

// TestFullBatchRunsAtOnce: with a long MaxWait, MaxBatch calls run as
// soon as they are queued.
func TestFullBatchRunsAtOnce(t *testing.T) {
	tok := newTok(t)
	gate := batchtest.NewGate(tok)
	var rec recorder
	b := batch.New(gate, batch.Options{MaxBatch: 4, MaxWait: time.Hour, Observer: rec.observe})
	defer closeB(t, b)
	x := make([]float32, tok.Config().LatentDim)
	gate.Release()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); b.Quantize(context.Background(), x, 1) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a full batch waited for MaxWait")
	}
	if m := rec.maxRequests("quantize"); m != 4 {
		t.Errorf("largest batch %d, want 4", m)
	}
}

func solid(w, h int, red uint8) image.Image {
	im := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			im.Set(x, y, color.RGBA{red, 0, 0, 255})
		}
	}
	return im
}

// TestImageOps: the image operations batch and split like the feature
// ones (against a fake image engine).
func TestImageOps(t *testing.T) {
	tok := newTok(t)
	fake := &batchtest.Images{FeatureEngine: tok, S: 8, N: 4, E: 3}
	var rec recorder
	b := batch.New(fake, batch.Options{MaxWait: 20 * time.Millisecond, Observer: rec.observe})
	defer closeB(t, b)
	direct := &batchtest.Images{FeatureEngine: tok, S: 8, N: 4, E: 3}
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			imgs := []image.Image{solid(3+i, 5, uint8(i*7))}
			if i%3 == 0 {
				imgs = append(imgs, solid(4, 4+i, uint8(i)))
			}
			want, _ := direct.TokenizeImages(ctx, imgs)
			got, err := b.TokenizeImages(ctx, imgs)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("tokenize %d: %v", i, err)
			}
			wantE, _ := direct.EmbedImages(ctx, imgs)
			gotE, err := b.EmbedImages(ctx, imgs)
			if err != nil || !bitsEqual(gotE, wantE) {
				t.Errorf("embed %d: %v", i, err)
			}
			wantD, _ := direct.Detokenize(ctx, want, len(imgs))
			gotD, err := b.Detokenize(ctx, want, len(imgs))
			if err != nil || !bitsEqual(gotD, wantD) {
				t.Errorf("detokenize %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for _, op := range []string{"tokenize", "embed", "detokenize"} {
		if m := rec.maxRequests(op); m < 2 {
			t.Errorf("%s: largest batch held %d calls", op, m)
		}
	}
	if _, err := b.Detokenize(ctx, []int32{1, 2, 3}, 1); !errors.Is(err, unitok.ErrBadInput) {
		t.Errorf("detokenize with a partial token: %v", err)
	}
	if _, err := b.TokenizeImages(ctx, []image.Image{nil}); !errors.Is(err, unitok.ErrBadInput) {
		t.Errorf("nil image: %v", err)
	}
}
