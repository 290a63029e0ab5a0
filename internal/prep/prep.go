// Package prep runs a Tokenizer over a data set of shards: the data-prep
// job that tokenizes millions of images' features for MLLM training.
//
// Shards in, shards out: inputs are .npy files (or one named tensor of
// safetensors files) given as files, directories or globs; each gets one
// output .npy under the output directory at its mirrored relative path.
// A manifest (JSON lines, manifest.jsonl in the output directory) records
// every published output with its size and SHA-256.
//
// Resumable: an output is written to a temporary file, fsynced and renamed
// (npy.Create/Commit), and only then is its manifest record appended and
// fsynced. A shard counts as done on a later run iff the manifest has a
// record for its output with the same parameters (op, dtype, layout, model
// config and weights fingerprint) and the output file exists with the
// recorded size; Options.Verify rehashes it against the recorded SHA-256
// as well. A torn last manifest line (kill -9 mid-append) is ignored and cut
// off; temporaries left by a killed run are removed. So a run stopped at
// any point (context cancel, SIGINT/SIGTERM, kill -9) and restarted does
// only what is missing, and outputs are byte-identical to an uninterrupted
// run. A run holds an advisory lock on OutDir/.prep.lock (unix), so two
// runs never share an output directory. A shard that fails is recorded in
// the manifest too (a record with "error"), and retried by the next run.
//
// Across machines: Options.Partition runs one partition of the shards (see
// Partition: a hash of each shard's relative path picks its owner), with
// its own manifest, lock and code histogram in the shared output directory,
// so N independent processes (a Kubernetes Indexed Job, a Slurm array) do
// the set between them, each resuming on its own after a retry, and never
// write the same file. Status merges the manifests. RunTars does the same
// for webdataset shards through an image tokenizer.
//
// Pipelined and bounded: one reader goroutine streams whole images (or rows)
// from the memory-mapped inputs in batches; InFlight workers call the
// Tokenizer concurrently (each call on its own CUDA stream on the GPU; on
// the CPU each call already uses every core); one writer goroutine writes
// the results in order, hashing as it goes. At most InFlight+2 batches
// exist at once, whatever the data set's size, and the reader runs ahead
// into the next shards while earlier ones are still computing.
package prep

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/npy"
)

// Op is the Tokenizer call applied to every shard.
type Op int

const (
	// Encode: features (B, N, C) or (N, C), float -> codes (B, N, K).
	Encode Op = iota
	// Decode: codes (B, N, K) or (N, K), any integer dtype -> features (B, N, C) float32.
	Decode
	// Quantize: latents (M, D), float -> codes (M, K).
	Quantize
	// Lookup: codes (M, K), any integer dtype -> latents (M, D) float32.
	Lookup
)

func (o Op) String() string {
	switch o {
	case Encode:
		return "encode"
	case Decode:
		return "decode"
	case Quantize:
		return "quantize"
	case Lookup:
		return "lookup"
	case tokenizeImages:
		return "tokenize"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// ParseOp reads "encode", "decode", "quantize" or "lookup".
func ParseOp(s string) (Op, error) {
	for _, o := range []Op{Encode, Decode, Quantize, Lookup} {
		if o.String() == s {
			return o, nil
		}
	}
	return 0, fmt.Errorf("unknown op %q (want encode, decode, quantize or lookup)", s)
}

// codesIn reports whether the op reads codes; codesOut whether it writes them.
func (o Op) codesIn() bool  { return o == Decode || o == Lookup }
func (o Op) codesOut() bool { return o == Encode || o == Quantize }
func (o Op) batched() bool  { return o == Encode || o == Decode }

// Options configures Run.
type Options struct {
	// In lists input files, directories (walked recursively for .npy, and
	// .safetensors when Tensor is set) and globs. Outputs keep each shard's
	// path relative to the directory, or the glob's directory before its
	// first wildcard, or (for a plain file) its own directory.
	In []string
	// Tensor names the tensor to read from safetensors shards.
	Tensor string
	// OutDir receives the outputs (extension .npy) and the manifest.
	OutDir string
	// Manifest overrides the manifest path (default OutDir/manifest.jsonl,
	// or OutDir/manifest-IIIII-of-NNNNN.jsonl for a partition).
	Manifest string
	// Partition restricts the run to the shards partition Index of Count
	// owns (see Partition); the zero value runs every shard.
	Partition Partition
	// Batch is the number of images (encode, decode) or rows (quantize,
	// lookup) per Tokenizer call; 0 picks about 16384 tokens for
	// encode/decode and 65536 rows for quantize/lookup.
	Batch int
	// InFlight is the number of concurrent Tokenizer calls (default 2).
	InFlight int
	// CodesDType is the dtype of written codes: uint16 (default), int32, int64.
	CodesDType string
	// Histogram, if set, receives the per-codebook code histogram (K, V)
	// int64 as .npy, over every completed shard.
	Histogram string
	// Verify rehashes the outputs of shards the manifest says are done and
	// redoes any whose SHA-256 differs; without it a done shard is checked
	// by existence and size.
	Verify bool
	// Progress receives a progress line (\r-updated on a terminal, plain
	// lines otherwise) and one line per failed shard; nil is silent.
	Progress io.Writer
	// ProgressInterval is the time between progress updates (default 500ms
	// on a terminal, 5s otherwise).
	ProgressInterval time.Duration
	// Terminal forces (1) or disables (-1) terminal-style progress; 0
	// detects a character device.
	Terminal int
}

// ShardError is a shard that was skipped, and why.
type ShardError struct {
	Shard string // input path relative to its root
	Err   error
}

func (e ShardError) Error() string { return e.Shard + ": " + e.Err.Error() }

// ErrShardsFailed is returned (wrapped) when some shards failed validation
// or computation while the others were done.
var ErrShardsFailed = errors.New("some shards failed")

// Summary describes a run.
type Summary struct {
	Op     Op
	Device string
	Shards int // inputs found (in this run's partition)
	// AllShards counts the inputs found before partitioning; Partition is
	// the run's partition (zero: the whole set).
	AllShards int
	Partition Partition
	Done      int // shards completed by this run
	Skipped   int // shards already done by an earlier run
	Failed    int
	Failures  []ShardError

	Rows     int64 // images or rows processed by this run
	Tokens   int64 // tokens processed by this run
	BytesIn  int64 // input data bytes processed by this run
	BytesOut int64 // output file bytes written by this run
	Seconds  float64

	// Code statistics over every completed shard (this run's and earlier
	// runs'): the codes written (encode, quantize) or read (decode,
	// lookup). Counts is (K, V) row-major; Usage is the percentage of
	// codewords used per codebook; Perplexity is exp of the entropy (nats)
	// of each codebook's code distribution (V at most).
	K, V       int
	CodeTokens int64
	Counts     []int64
	Usage      []float64
	Perplexity []float64

	Interrupted bool // the context was cancelled before all shards were done
}

// TokensPerSecond is this run's end-to-end throughput.
func (s *Summary) TokensPerSecond() float64 {
	if s.Seconds <= 0 {
		return 0
	}
	return float64(s.Tokens) / s.Seconds
}

// shard is a source with its validated geometry.
type shard struct {
	source
	units     int   // images (encode, decode) or rows
	unitIn    int   // input elements per unit
	unitOut   int   // output elements per unit
	unitTok   int   // tokens per unit
	N         int   // tokens per image (1 for rows)
	outShape  []int // output array shape
	inBytes   int64 // input data bytes
	failedErr error // set by the writer stage (single goroutine)
	failed    atomic.Bool
	start     time.Time
}

// plan checks a shard's header against the op and the model, without
// reading its data.
func (r *runner) plan(s *shard) error {
	in, err := openInput(s.path, r.opt.Tensor)
	if err != nil {
		return err
	}
	defer in.close()
	return r.geometry(s, in)
}

func (r *runner) geometry(s *shard, in *input) error {
	c := r.cfg
	op := r.op
	switch {
	case op.codesIn() && !in.elem.isInt():
		return fmt.Errorf("dtype %s: %s needs integer codes", in.elem.name(), op)
	case !op.codesIn() && !in.elem.isFloat():
		return fmt.Errorf("dtype %s: %s needs float features", in.elem.name(), op)
	}
	sh := in.shape
	if op.batched() && (len(sh) < 2 || len(sh) > 3) || !op.batched() && len(sh) != 2 {
		return fmt.Errorf("shape %v: %s wants %s", sh, op, r.wantShape())
	}
	for _, d := range sh {
		if d == 0 {
			return fmt.Errorf("shape %v is empty", sh)
		}
	}
	B := 1
	if len(sh) == 3 {
		B, sh = sh[0], sh[1:]
	}
	bkn := r.layout == unitok.CodebookMajor
	var N, width int
	if op.codesIn() && bkn {
		width, N = sh[0], sh[1]
	} else {
		N, width = sh[0], sh[1]
	}
	var want int
	var wname string
	switch op {
	case Encode:
		want, wname = c.InDim, "C"
	case Quantize:
		want, wname = c.LatentDim, "D"
	default:
		want, wname = c.NumCodebooks, "K"
	}
	if width != want {
		return fmt.Errorf("shape %v has %s=%d, but the model has %s=%d (%s wants %s)", in.shape, wname, width, wname, want, op, r.wantShape())
	}
	lead := in.shape[:len(in.shape)-2]
	K := c.NumCodebooks
	switch op {
	case Encode, Decode:
		s.units, s.N, s.unitTok = B, N, N
		s.unitIn = N * width
		outW := K
		if op == Decode {
			outW = c.InDim
		}
		s.unitOut = N * outW
		s.outShape = append(append([]int{}, lead...), N, outW)
		if op == Encode && bkn {
			s.outShape[len(s.outShape)-2], s.outShape[len(s.outShape)-1] = K, N
		}
	case Quantize, Lookup:
		s.units, s.N, s.unitTok = N, 1, 1
		s.unitIn = width
		s.unitOut = K
		if op == Lookup {
			s.unitOut = c.LatentDim
		}
		s.outShape = []int{N, s.unitOut}
	}
	s.inBytes = int64(len(in.raw))
	return nil
}

func (r *runner) wantShape() string {
	bkn := r.layout == unitok.CodebookMajor
	switch r.op {
	case Encode:
		return "(B,N,C) or (N,C) features"
	case Decode:
		if bkn {
			return "(B,K,N) or (K,N) codes"
		}
		return "(B,N,K) or (N,K) codes"
	case Quantize:
		return "(M,D) latents"
	}
	return "(M,K) codes"
}

// params fingerprints everything that determines an output's bytes, so a
// rerun with another model, op or dtype does not take old outputs as done.
func params(op Op, tok *unitok.Tokenizer, opt *Options, dt npy.DType) string {
	c := tok.Config()
	h := sha256.New()
	put := func(v []float32) {
		var b [4]byte
		for _, x := range v {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
			h.Write(b[:])
		}
	}
	m := tok.Model()
	proj := func(p *unitok.AttnProjection) {
		for _, ln := range []unitok.LayerNorm{p.Norm1, p.Norm2, p.Norm3, p.MLPNorm} {
			put(ln.Weight)
			put(ln.Bias)
		}
		for _, l := range []unitok.Linear{p.QKV, p.AttnProj, p.Proj, p.W0, p.W1, p.W2} {
			put(l.Weight)
			put(l.Bias)
		}
	}
	switch op {
	case Encode:
		proj(&m.QuantProj)
	case Decode:
		proj(&m.PostQuantProj)
	}
	for _, cb := range m.Codebooks {
		put(cb)
	}
	layout := "bnk"
	if tok.Layout() == unitok.CodebookMajor {
		layout = "bkn"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "op=%s C=%d D=%d K=%d V=%d H=%d causal=%t metric=%s layout=%s", op, c.InDim, c.LatentDim,
		c.NumCodebooks, c.CodebookSize, c.NumHeads, c.Causal, tok.Metric(), layout)
	if op.codesOut() {
		fmt.Fprintf(&sb, " dtype=%s", dt.Name())
	}
	if opt.Tensor != "" {
		fmt.Fprintf(&sb, " tensor=%s", opt.Tensor)
	}
	fmt.Fprintf(&sb, " weights=%s", hex.EncodeToString(h.Sum(nil))[:16])
	return sb.String()
}

// Run applies op to every shard of opt.In, writing outputs and the manifest
// under opt.OutDir, and returns the run's summary. Shards already done (see
// the package comment) are skipped; a shard that fails (bad header, NaN or
// Inf, codes out of range, truncated file) is reported by name and skipped
// while the others are done, and Run then returns an error wrapping
// ErrShardsFailed. When ctx is cancelled, shards not yet published are
// abandoned (their temporaries removed) and Run returns the context's cause;
// the manifest and the published outputs stay consistent. The Summary is
// non-nil whenever the run started.
func Run(ctx context.Context, tok *unitok.Tokenizer, op Op, opt Options) (*Summary, error) {
	if tok == nil {
		return nil, errors.New("prep: nil tokenizer")
	}
	if op < Encode || op > Lookup {
		return nil, fmt.Errorf("prep: unknown op %d", int(op))
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
	if opt.InFlight <= 0 {
		opt.InFlight = 2
	}
	if opt.Batch < 0 {
		return nil, fmt.Errorf("prep: batch %d: want a positive number", opt.Batch)
	}
	if !op.batched() && tok.Layout() == unitok.CodebookMajor {
		return nil, fmt.Errorf("prep: %s with the (K, M) code layout cannot be streamed by rows; use the (M, K) layout", op)
	}
	if err := opt.Partition.Validate(); err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	if opt.Partition.Enabled() && opt.Histogram != "" {
		// Every partition would write the same file.
		return nil, fmt.Errorf("prep: a histogram file with partitions: each partition writes its own (histogram-IIIII-of-NNNNN.npy in the output directory); prep status merges them")
	}
	if opt.Manifest == "" {
		opt.Manifest = filepath.Join(opt.OutDir, manifestName(opt.Partition))
	}
	r := &runner{tok: tok, op: op, opt: opt, cfg: tok.Config(), layout: tok.Layout(), dt: dt}
	return r.run(ctx)
}

type runner struct {
	tok    *unitok.Tokenizer
	op     Op
	opt    Options
	cfg    unitok.Config
	layout unitok.Layout
	dt     npy.DType
	params string

	man  *manifest
	sum  *Summary
	prog *progress
}

func (r *runner) logf(format string, args ...any) {
	if r.prog != nil {
		r.prog.logf(format, args...)
	}
}

func (r *runner) run(ctx context.Context) (*Summary, error) {
	start := time.Now()
	c := r.cfg
	sum := &Summary{Op: r.op, Device: r.tok.Device(), K: c.NumCodebooks, V: c.CodebookSize,
		Counts: make([]int64, c.NumCodebooks*c.CodebookSize)}
	r.sum = sum
	srcs, err := findShards(r.opt.In, r.opt.Tensor, r.opt.OutDir)
	if err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("prep: no shards found in %s", strings.Join(r.opt.In, ", "))
	}
	sum.AllShards, sum.Partition = len(srcs), r.opt.Partition
	if p := r.opt.Partition; p.Enabled() {
		mine := srcs[:0:0]
		for _, s := range srcs {
			if p.Owns(s.rel) {
				mine = append(mine, s)
			}
		}
		srcs = mine
	}
	sum.Shards = len(srcs)
	if err := os.MkdirAll(r.opt.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	unlock, err := lockDir(r.opt.OutDir, r.opt.Partition)
	if err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	defer unlock()
	r.params = params(r.op, r.tok, &r.opt, r.dt)
	recs, _, err := readManifest(r.opt.Manifest)
	if err != nil {
		return nil, fmt.Errorf("prep: manifest: %w", err)
	}
	if err := r.otherManifests(recs); err != nil {
		return nil, fmt.Errorf("prep: manifest: %w", err)
	}
	outs := map[string]bool{}
	for _, s := range srcs {
		outs[s.out] = true
	}
	if _, err := removeStaleTemps(r.opt.OutDir, outs); err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}

	// Plan: skip what is done, validate headers of the rest.
	var todo, done []*shard
	var todoTokens int64
	for _, src := range srcs {
		s := &shard{source: src}
		if rec, ok := recs[src.outRel]; ok && rec.Params == r.params && r.isDone(src.out, rec) {
			done = append(done, s)
			continue
		}
		if err := r.plan(s); err != nil {
			sum.fail(s.rel, err)
			continue
		}
		todo = append(todo, s)
		todoTokens += int64(s.units) * int64(s.unitTok)
	}
	sum.Skipped = len(done)

	r.prog = newProgress(r.op, r.opt, len(todo), todoTokens)
	for _, f := range sum.Failures {
		r.logf("%s: skipped: %v", f.Shard, f.Err)
	}
	if len(todo) > 0 || sum.Failed > 0 || r.opt.Partition.Enabled() {
		// A partition leaves a manifest even when it owns no shard, so that
		// `unitok prep status` sees it ran.
		r.man, err = openManifest(r.opt.Manifest)
		if err != nil {
			r.prog.stop()
			return sum, fmt.Errorf("prep: manifest: %w", err)
		}
		defer r.man.close()
		for _, f := range sum.Failures {
			if err := r.recordFailure(f.Shard, f.Err); err != nil {
				r.prog.stop()
				return sum, fmt.Errorf("prep: %w", err)
			}
		}
	}
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := r.pipeline(pctx, cancel, todo); err != nil {
		r.prog.stop()
		sum.Seconds = time.Since(start).Seconds()
		return sum, err
	}
	r.prog.stop()
	sum.Seconds = time.Since(start).Seconds()
	if ctx.Err() != nil && sum.Done+sum.Skipped+sum.Failed < sum.Shards {
		sum.Interrupted = true
		return sum, fmt.Errorf("prep: interrupted after %d of %d shards: %w", sum.Done+sum.Skipped, sum.Shards, context.Cause(ctx))
	}

	// Statistics cover shards done by earlier runs too.
	for _, s := range done {
		if err := r.countDone(s); err != nil {
			r.logf("%s: statistics skipped: %v", s.rel, err)
		}
	}
	sum.finishStats()
	if p := r.opt.Partition; p.Enabled() {
		// The partition's share of the whole set's code statistics, for
		// `unitok prep status`.
		if err := writeHistogram(filepath.Join(r.opt.OutDir, histogramName(p)), sum.Counts, sum.K, sum.V); err != nil {
			return sum, fmt.Errorf("prep: histogram: %w", err)
		}
	}
	if r.opt.Histogram != "" {
		if err := writeHistogram(r.opt.Histogram, sum.Counts, sum.K, sum.V); err != nil {
			return sum, fmt.Errorf("prep: histogram %s: %w", r.opt.Histogram, err)
		}
	}
	if sum.Failed > 0 {
		return sum, fmt.Errorf("prep: %d of %d shards failed (first: %v): %w", sum.Failed, sum.Shards, sum.Failures[0], ErrShardsFailed)
	}
	return sum, nil
}

// otherManifests adds to recs the outputs that other manifests in the
// output directory (other partitions, another partition count, a run over
// the whole set) record as published: a shard done by any run is not done
// again. Those files may be being appended to; they are only read, and a
// torn last line is ignored.
func (r *runner) otherManifests(recs map[string]Record) error {
	return otherManifests(r.opt.OutDir, r.opt.Manifest, r.opt.Partition, recs)
}

// otherManifests reads the manifests other than our own; those of the
// other partitions of our own count are skipped, since their shards are
// never ours (so a partition reads one manifest in the usual case).
func otherManifests(outDir, manifest string, part Partition, recs map[string]Record) error {
	mfs, err := listManifests(outDir)
	if err != nil {
		return err
	}
	own, _ := filepath.Abs(manifest)
	for _, mf := range mfs {
		if a, _ := filepath.Abs(mf.path); a == own || part.Enabled() && mf.part.Count == part.Count {
			continue
		}
		b, err := os.ReadFile(mf.path)
		if err != nil {
			return err
		}
		for k, rec := range parseManifest(b).done {
			if _, ok := recs[k]; !ok {
				recs[k] = rec
			}
		}
	}
	return nil
}

// recordFailure appends a failure record for the shard at rel.
func (r *runner) recordFailure(rel string, err error) error {
	if r.man == nil {
		return nil
	}
	outRel := strings.TrimSuffix(rel, filepath.Ext(rel)) + ".npy"
	return r.man.append(Record{Shard: rel, Output: outRel, Params: r.params, Partition: r.partitionTag(),
		Finished: unixNow(), Error: oneLine(err.Error())})
}

func (r *runner) partitionTag() string {
	if !r.opt.Partition.Enabled() {
		return ""
	}
	return r.opt.Partition.String()
}

func unixNow() float64 { return float64(time.Now().UnixNano()) / 1e9 }

// isDone checks a manifest record against the output on disk.
func (r *runner) isDone(path string, rec Record) bool {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Size() != rec.Bytes {
		return false
	}
	if !r.opt.Verify {
		return true
	}
	sum, _, err := fileSHA256(path)
	return err == nil && sum == rec.SHA256
}

func (s *Summary) fail(shard string, err error) {
	s.Failed++
	s.Failures = append(s.Failures, ShardError{Shard: shard, Err: err})
}

// countDone adds the codes of a shard finished by an earlier run to the
// statistics: its output codes (encode, quantize) or its input codes
// (decode, lookup), read in bounded chunks.
func (r *runner) countDone(s *shard) error {
	path, tensor := s.out, ""
	if r.op.codesIn() {
		path, tensor = s.path, r.opt.Tensor
	}
	n, err := countCodesFile(r.sum.Counts, path, tensor, r.layout, r.cfg.NumCodebooks, r.cfg.CodebookSize)
	r.sum.CodeTokens += n
	return err
}

// countCodesFile adds the codes of a code array file ((.., N, K), or
// (.., K, N) for CodebookMajor) to counts (K, V), read in bounded chunks,
// and returns the number of tokens counted.
func countCodesFile(counts []int64, path, tensor string, layout unitok.Layout, K, V int) (int64, error) {
	in, err := openInput(path, tensor)
	if err != nil {
		return 0, err
	}
	defer in.close()
	if !in.elem.isInt() || len(in.shape) < 2 {
		return 0, fmt.Errorf("%s: not a code array", path)
	}
	N := in.shape[len(in.shape)-1] // bkn: (.., K, N)
	if layout == unitok.TokenMajor {
		N = 1
	}
	unit := N * K // elements per image (bkn) or per token
	per := max(1, (1<<16)/unit) * unit
	buf := make([]int32, per)
	sz := in.elem.size()
	total := len(in.raw) / sz
	for off := 0; off < total; off += per {
		n := min(per, total-off)
		if err := toInt32(buf[:n], in.raw[off*sz:(off+n)*sz], in.elem); err != nil {
			return 0, err
		}
		countCodes(counts, buf[:n], layout, N, K, V)
	}
	return int64(total / K), nil
}
