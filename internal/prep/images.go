package prep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/imageio"
	"github.com/unitok/unitok/internal/npy"
)

// tokenizeImages names RunImages in progress lines; it is not an Op that
// Run accepts.
const tokenizeImages Op = -1

// ImageOptions configures RunImages: the data-prep job over image files
// (UniTok's img_to_idx on every image of a directory tree or glob), with
// the same output tree, manifest, resume and failure handling as Run.
type ImageOptions struct {
	// In lists image files, directories (walked recursively for .png,
	// .jpg, .jpeg, .gif, .bmp and .webp, case-insensitive) and globs.
	In []string
	// OutDir receives one codes .npy per image, (N, K) (or (K, N) with
	// the CodebookMajor layout), at the image's relative path with the
	// extension replaced by .npy, and the manifest.
	OutDir string
	// Manifest overrides the manifest path (default OutDir/manifest.jsonl).
	Manifest string
	// Batch is the number of images per Tokenizer call (default 8).
	Batch int
	// CodesDType is the dtype of written codes: uint16 (default), int32, int64.
	CodesDType string
	// MaxPixels refuses images with more pixels, from the header (default
	// imageio.DefaultMaxPixels).
	MaxPixels int64
	// Model identifies the weights beyond what the tokenizer exposes (for
	// example the checkpoint's size): it goes into the manifest's params,
	// so that outputs of another checkpoint are not taken as done.
	Model string
	// Verify rehashes outputs the manifest says are done.
	Verify bool
	// Progress and ProgressInterval as in Options.
	Progress         io.Writer
	ProgressInterval time.Duration
	Terminal         int
}

// ImageSummary describes a RunImages run.
type ImageSummary struct {
	Device   string
	Images   int // image files found
	Done     int // images tokenized by this run
	Skipped  int // images already done by an earlier run
	Failed   int
	Failures []ShardError
	Tokens   int64 // tokens written by this run
	Seconds  float64

	// Code statistics over this run's codes: Usage is the percentage of
	// codewords used per codebook.
	K, V   int
	Counts []int64
	Usage  []float64

	Interrupted bool
}

// Print writes the summary: counts, throughput, codebook usage and every
// failed image with its reason.
func (s *ImageSummary) Print(w io.Writer) {
	fmt.Fprintf(w, "tokenize on %s: %d images: %d done, %d already done, %d failed", s.Device, s.Images, s.Done, s.Skipped, s.Failed)
	if s.Interrupted {
		fmt.Fprint(w, " (interrupted)")
	}
	fmt.Fprintln(w)
	rate := 0.0
	if s.Seconds > 0 {
		rate = float64(s.Done) / s.Seconds
	}
	fmt.Fprintf(w, "  %d tokens in %.2fs: %.2f images/s\n", s.Tokens, s.Seconds, rate)
	if len(s.Usage) > 0 && s.Tokens > 0 {
		fmt.Fprintf(w, "  codebook usage %% (K=%d, V=%d): %s (mean %.1f)\n", s.K, s.V, floats(s.Usage, "%.1f"), mean(s.Usage))
	}
	for _, f := range s.Failures {
		fmt.Fprintf(w, "  failed: %s\n", oneLine(f.Error()))
	}
}

func (s *ImageSummary) fail(rel string, err error) {
	s.Failed++
	s.Failures = append(s.Failures, ShardError{Shard: rel, Err: err})
}

// IsImageFile reports whether name has one of the image extensions
// RunImages reads.
func IsImageFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp":
		return true
	}
	return false
}

// imageParams fingerprints what determines an image's codes.
func imageParams(tok *unitok.Tokenizer, opt *ImageOptions, dt npy.DType) string {
	p := params(Encode, tok, &Options{}, dt)
	a, _ := tok.ImageArch()
	return strings.Replace(p, "op=encode", fmt.Sprintf("op=tokenize-image image=%s/%d/%d/%d size=%d ratio=%g model=%s",
		a.Model, a.Width, a.Depth, a.Heads, a.ImageSize, imageio.DefaultResizeRatio, opt.Model), 1)
}

// decoded is one image read and preprocessed by a loader goroutine.
type decoded struct {
	src source
	x   []float32
	err error
}

// RunImages tokenizes every image of opt.In into opt.OutDir. Images already
// done (manifest record with the same params, output present with its
// size) are skipped; an image that cannot be read (missing, truncated, not
// an image, over the pixel limit) is named and skipped while the others are
// done, and RunImages then returns an error wrapping ErrShardsFailed. On
// ctx cancellation it stops between batches and returns the cause; what
// was published stays consistent and a rerun resumes. The summary is
// non-nil whenever the run started.
func RunImages(ctx context.Context, tok *unitok.Tokenizer, opt ImageOptions) (*ImageSummary, error) {
	if tok == nil {
		return nil, errors.New("prep: nil tokenizer")
	}
	if err := tok.ImageModel(); err != nil {
		return nil, err
	}
	if opt.OutDir == "" {
		return nil, errors.New("prep: no output directory")
	}
	if len(opt.In) == 0 {
		return nil, errors.New("prep: no inputs")
	}
	if opt.CodesDType == "" {
		opt.CodesDType = "uint16"
	}
	dt, err := npy.ParseDType(opt.CodesDType)
	if err != nil || (dt != npy.Uint16 && dt != npy.Int32 && dt != npy.Int64) {
		return nil, fmt.Errorf("prep: codes dtype %q: want uint16, int32 or int64", opt.CodesDType)
	}
	if opt.Batch < 0 {
		return nil, fmt.Errorf("prep: batch %d: want a positive number", opt.Batch)
	}
	if opt.Batch == 0 {
		opt.Batch = 8
	}
	if opt.MaxPixels <= 0 {
		opt.MaxPixels = imageio.DefaultMaxPixels
	}
	if opt.Manifest == "" {
		opt.Manifest = filepath.Join(opt.OutDir, "manifest.jsonl")
	}
	start := time.Now()
	c := tok.Config()
	sum := &ImageSummary{Device: tok.Device(), K: c.NumCodebooks, V: c.CodebookSize,
		Counts: make([]int64, c.NumCodebooks*c.CodebookSize)}
	srcs, err := findFiles(opt.In, IsImageFile, ".npy", opt.OutDir)
	if err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("prep: no images (.png, .jpg, .jpeg, .gif, .bmp, .webp) found in %s", strings.Join(opt.In, ", "))
	}
	sum.Images = len(srcs)
	if err := os.MkdirAll(opt.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	unlock, err := lockImageDir(opt.OutDir)
	if err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	defer unlock()
	par := imageParams(tok, &opt, dt)
	recs, _, err := readManifest(opt.Manifest)
	if err != nil {
		return nil, fmt.Errorf("prep: manifest: %w", err)
	}
	outs := map[string]bool{}
	for _, s := range srcs {
		outs[s.out] = true
	}
	if _, err := removeStaleTemps(opt.OutDir, outs); err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	r := &runner{opt: Options{Verify: opt.Verify}}
	var todo []source
	for _, s := range srcs {
		if rec, ok := recs[s.outRel]; ok && rec.Params == par && r.isDone(s.out, rec) {
			sum.Skipped++
			continue
		}
		todo = append(todo, s)
	}
	N := tok.ImageSize() / 16
	N *= N
	prog := newProgress(Encode, Options{Progress: opt.Progress, ProgressInterval: opt.ProgressInterval, Terminal: opt.Terminal},
		len(todo), int64(len(todo))*int64(N))
	if prog != nil {
		prog.op = tokenizeImages
	}
	defer prog.stop()
	var man *manifest
	if len(todo) > 0 {
		if man, err = openManifest(opt.Manifest); err != nil {
			return sum, fmt.Errorf("prep: manifest: %w", err)
		}
		defer man.close()
	}

	// Loaders decode and preprocess ahead of the tokenizer (bounded).
	S := tok.ImageSize()
	ldctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	idx := make(chan source)
	ready := make(chan decoded, 2*opt.Batch)
	var wg sync.WaitGroup
	for range min(4, max(1, runtime.GOMAXPROCS(0)/2)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range idx {
				d := decoded{src: s}
				img, _, err := imageio.Load(s.path, opt.MaxPixels)
				if err == nil {
					d.x, err = imageio.Preprocess(img, S, imageio.DefaultResizeRatio)
				}
				if err != nil {
					// Load names the file; the shard name comes first anyway.
					err = errors.New(strings.TrimPrefix(oneLine(err.Error()), s.path+": "))
				}
				d.err = err
				select {
				case ready <- d:
				case <-ldctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(idx)
		for _, s := range todo {
			select {
			case idx <- s:
			case <-ldctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(ready) }()

	K := c.NumCodebooks
	per := 3 * S * S
	var batch []decoded
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		B := len(batch)
		x := make([]float32, B*per)
		for i, d := range batch {
			copy(x[i*per:], d.x)
		}
		t0 := time.Now()
		codes, err := tok.TokenizePixels(ctx, x, B)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			for _, d := range batch {
				sum.fail(d.src.rel, err)
				prog.logf("%s: skipped: %v", d.src.rel, err)
			}
			batch = batch[:0]
			return nil
		}
		secs := time.Since(t0).Seconds() / float64(B)
		shape := []int{N, K}
		if tok.Layout() == unitok.CodebookMajor {
			shape = []int{K, N}
		}
		for i, d := range batch {
			cs := codes[i*N*K : (i+1)*N*K]
			if err := os.MkdirAll(filepath.Dir(d.src.out), 0o755); err != nil {
				return fmt.Errorf("prep: %w", err)
			}
			if err := npy.WriteInts(d.src.out, shape, cs, opt.CodesDType); err != nil {
				return fmt.Errorf("prep: %s: %w", d.src.out, err)
			}
			hash, size, err := fileSHA256(d.src.out)
			if err != nil {
				return fmt.Errorf("prep: %s: %w", d.src.out, err)
			}
			rec := Record{Shard: d.src.rel, Output: d.src.outRel, Rows: 1, Tokens: int64(N), Bytes: size, SHA256: hash,
				Seconds: secs, Params: par}
			if err := man.append(rec); err != nil {
				return fmt.Errorf("prep: %w", err)
			}
			countCodes(sum.Counts, cs, tok.Layout(), N, K, sum.V)
			sum.Done++
			sum.Tokens += int64(N)
			prog.add(int64(N))
			prog.shardDone()
		}
		batch = batch[:0]
		return nil
	}
	var runErr error
	for d := range ready {
		if ctx.Err() != nil {
			break
		}
		if d.err != nil {
			sum.fail(d.src.rel, d.err)
			prog.logf("%s: skipped: %v", d.src.rel, d.err)
			continue
		}
		batch = append(batch, d)
		if len(batch) == opt.Batch {
			if runErr = flush(); runErr != nil {
				break
			}
		}
	}
	if runErr == nil && ctx.Err() == nil {
		runErr = flush()
	}
	stopLoad()
	for range ready { // let the loaders finish
	}
	sum.Seconds = time.Since(start).Seconds()
	sum.Usage = make([]float64, K)
	for k := range K {
		used := 0
		for _, n := range sum.Counts[k*sum.V : (k+1)*sum.V] {
			if n > 0 {
				used++
			}
		}
		sum.Usage[k] = 100 * float64(used) / float64(sum.V)
	}
	if ctx.Err() != nil && sum.Done+sum.Skipped+sum.Failed < sum.Images {
		sum.Interrupted = true
		return sum, fmt.Errorf("prep: interrupted after %d of %d images: %w", sum.Done+sum.Skipped, sum.Images, context.Cause(ctx))
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return sum, runErr
	}
	if sum.Failed > 0 {
		return sum, fmt.Errorf("prep: %d of %d images failed (first: %v): %w", sum.Failed, sum.Images, sum.Failures[0], ErrShardsFailed)
	}
	return sum, nil
}

// lockImageDir takes the output directory's lock as Run does.
func lockImageDir(dir string) (func(), error) { return lockDir(dir, Partition{}) }
