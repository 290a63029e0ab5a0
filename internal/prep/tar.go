package prep

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/atomicfile"
	"github.com/unitok/unitok/internal/npy"
	"github.com/unitok/unitok/internal/wds"
)

// TarOptions configures RunTars: webdataset shards in, webdataset shards
// out, one output .tar per input .tar at the mirrored path.
type TarOptions struct {
	// In, OutDir, Manifest, Partition, Verify, Histogram and Progress are
	// as in Options (In lists .tar files, directories and globs).
	In        []string
	OutDir    string
	Manifest  string
	Partition Partition
	Verify    bool
	Histogram string
	Progress  io.Writer

	// Tokenize is the image tokenizer (the shape of
	// (*unitok.Tokenizer).TokenizeImages), K and V its codebooks.
	Tokenize wds.TokenizeFunc
	// TokenizeEmbed, when set, replaces Tokenize and also writes each
	// sample's embedding (KEY.embed.npy, (E,) float32; the shape of
	// (*unitok.Tokenizer).TokenizeAndEmbedImages). Whether it is set is
	// part of each record's params, so a rerun with the other choice redoes
	// the shards.
	TokenizeEmbed wds.TokenizeEmbedFunc
	K, V          int
	// Fingerprint identifies everything that determines the codes (model
	// weights, preprocessing); it goes into each record's params, so that a
	// rerun with another model does not take old outputs as done.
	Fingerprint string
	Device      string
	// Batch, Keep, Decode, ImageExts and Workers are passed to wds.Process.
	Batch     int
	Keep      bool
	Decode    wds.DecodeFunc
	ImageExts []string
	Workers   int
}

// RunTars tokenizes the images of webdataset shards, one shard at a time,
// streaming each through wds.Process into its output tar (written to a
// temporary name and renamed when complete). Partitions, manifests, locks,
// resume and failure records work as in Run; each record also lists the
// shard's bad samples (key and reason: no image member, undecodable image),
// which are left out of the output while the shard completes. A shard
// whose tar is corrupt, or whose tokenization fails, is recorded as failed
// and the others are done; RunTars then returns an error wrapping
// ErrShardsFailed.
func RunTars(ctx context.Context, opt TarOptions) (*Summary, error) {
	if opt.Tokenize == nil && opt.TokenizeEmbed == nil || opt.K <= 0 || opt.V <= 0 {
		return nil, errors.New("prep: RunTars needs Tokenize (or TokenizeEmbed), K and V")
	}
	if opt.OutDir == "" || len(opt.In) == 0 {
		return nil, errors.New("prep: RunTars needs inputs and an output directory")
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
	start := time.Now()
	sum := &Summary{Op: Encode, Device: opt.Device, K: opt.K, V: opt.V, Counts: make([]int64, opt.K*opt.V), Partition: opt.Partition}
	srcs, err := findTarShards(opt.In, opt.OutDir)
	if err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	if len(srcs) == 0 {
		return nil, fmt.Errorf("prep: no .tar shards found in %s", strings.Join(opt.In, ", "))
	}
	sum.AllShards = len(srcs)
	if opt.Partition.Enabled() {
		mine := srcs[:0:0]
		for _, s := range srcs {
			if opt.Partition.Owns(s.rel) {
				mine = append(mine, s)
			}
		}
		srcs = mine
	}
	sum.Shards = len(srcs)
	if err := os.MkdirAll(opt.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	unlock, err := lockDir(opt.OutDir, opt.Partition)
	if err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	defer unlock()
	embed := "none"
	if opt.TokenizeEmbed != nil {
		embed = "embed.npy"
	}
	params := fmt.Sprintf("op=tokenize-images K=%d V=%d layout=bnk dtype=uint16 keep=%t codes=codes.npy embed=%s model=%s", opt.K, opt.V, opt.Keep, embed, opt.Fingerprint)
	recs, _, err := readManifest(opt.Manifest)
	if err != nil {
		return nil, fmt.Errorf("prep: manifest: %w", err)
	}
	if err := otherManifests(opt.OutDir, opt.Manifest, opt.Partition, recs); err != nil {
		return nil, fmt.Errorf("prep: manifest: %w", err)
	}
	outs := map[string]bool{}
	for _, s := range srcs {
		outs[s.out] = true
	}
	if _, err := removeStaleTemps(opt.OutDir, outs); err != nil {
		return nil, fmt.Errorf("prep: %w", err)
	}
	man, err := openManifest(opt.Manifest)
	if err != nil {
		return nil, fmt.Errorf("prep: manifest: %w", err)
	}
	defer man.close()
	tag := ""
	if opt.Partition.Enabled() {
		tag = opt.Partition.String()
	}
	logf := func(format string, args ...any) {
		if opt.Progress != nil {
			fmt.Fprintf(opt.Progress, format+"\n", args...)
		}
	}
	for _, s := range srcs {
		if err := ctx.Err(); err != nil {
			sum.Interrupted = true
			sum.Seconds = time.Since(start).Seconds()
			return sum, fmt.Errorf("prep: interrupted after %d of %d shards: %w", sum.Done+sum.Skipped+sum.Failed, sum.Shards, context.Cause(ctx))
		}
		if rec, ok := recs[s.outRel]; ok && rec.Params == params && tarDone(s.out, rec, opt.Verify) {
			sum.Skipped++
			n, err := countTarCodes(sum.Counts, s.out, opt.K, opt.V)
			if err != nil {
				logf("%s: statistics skipped: %v", s.rel, err)
			}
			sum.CodeTokens += n
			continue
		}
		t0 := time.Now()
		rec, res, err := processTar(ctx, s, opt)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported at the top of the loop
			}
			sum.fail(s.rel, err)
			logf("%s: skipped: %v", s.rel, err)
			if err := man.append(Record{Shard: s.rel, Output: s.outRel, Params: params, Partition: tag, Finished: unixNow(), Error: oneLine(err.Error())}); err != nil {
				return sum, fmt.Errorf("prep: %w", err)
			}
			continue
		}
		rec.Params, rec.Partition, rec.Seconds, rec.Finished = params, tag, time.Since(t0).Seconds(), unixNow()
		if err := man.append(rec); err != nil {
			return sum, fmt.Errorf("prep: %w", err)
		}
		if testHookCommitted != nil {
			testHookCommitted(rec)
		}
		sum.Done++
		sum.Rows += int64(rec.Rows)
		sum.Tokens += rec.Tokens
		sum.CodeTokens += rec.Tokens
		sum.BytesOut += rec.Bytes
		if st, err := os.Stat(s.path); err == nil {
			sum.BytesIn += st.Size()
		}
		for i, c := range res.Counts {
			sum.Counts[i] += c
		}
		if len(rec.Bad) > 0 {
			logf("%s: %d bad samples left out (first: %s: %s)", s.rel, len(rec.Bad), rec.Bad[0].Key, rec.Bad[0].Reason)
		}
	}
	if ctx.Err() != nil {
		sum.Interrupted = true
		sum.Seconds = time.Since(start).Seconds()
		return sum, fmt.Errorf("prep: interrupted: %w", context.Cause(ctx))
	}
	sum.Seconds = time.Since(start).Seconds()
	sum.finishStats()
	if opt.Partition.Enabled() {
		if err := writeHistogram(filepath.Join(opt.OutDir, histogramName(opt.Partition)), sum.Counts, sum.K, sum.V); err != nil {
			return sum, fmt.Errorf("prep: histogram: %w", err)
		}
	}
	if opt.Histogram != "" {
		if err := writeHistogram(opt.Histogram, sum.Counts, sum.K, sum.V); err != nil {
			return sum, fmt.Errorf("prep: histogram %s: %w", opt.Histogram, err)
		}
	}
	if sum.Failed > 0 {
		return sum, fmt.Errorf("prep: %d of %d shards failed (first: %v): %w", sum.Failed, sum.Shards, sum.Failures[0], ErrShardsFailed)
	}
	return sum, nil
}

// processTar streams one shard into its output, published atomically.
func processTar(ctx context.Context, s source, opt TarOptions) (Record, *wds.Result, error) {
	in, err := os.Open(s.path)
	if err != nil {
		return Record{}, nil, err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(s.out), 0o755); err != nil {
		return Record{}, nil, err
	}
	f, err := atomicfile.Create(s.out, 0o644)
	if err != nil {
		return Record{}, nil, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	res, err := wds.Process(ctx, bufio.NewReaderSize(in, 1<<20), cw, wds.Options{
		Tokenize: opt.Tokenize, TokenizeEmbed: opt.TokenizeEmbed, K: opt.K, V: opt.V, Decode: opt.Decode, Batch: opt.Batch,
		ImageExts: opt.ImageExts, Keep: opt.Keep, Workers: opt.Workers})
	if err != nil {
		f.Abort()
		return Record{}, nil, err
	}
	if err := f.Commit(); err != nil {
		return Record{}, nil, err
	}
	return Record{Shard: s.rel, Output: s.outRel, Rows: res.Written, Tokens: res.Tokens, Bytes: cw.n,
		SHA256: fmt.Sprintf("%x", h.Sum(nil)), Bad: res.Bad}, res, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func tarDone(path string, rec Record, verify bool) bool {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Size() != rec.Bytes {
		return false
	}
	if !verify {
		return true
	}
	sum, _, err := fileSHA256(path)
	return err == nil && sum == rec.SHA256
}

// countTarCodes adds the codes.npy members of an output tar to counts and
// returns the tokens counted.
func countTarCodes(counts []int64, path string, K, V int) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	rd := wds.NewReader(bufio.NewReaderSize(f, 1<<20))
	var tokens int64
	for {
		s, err := rd.Next()
		if err == io.EOF {
			return tokens, nil
		}
		if err != nil {
			return tokens, err
		}
		m, ok := s.Get("codes.npy")
		if !ok {
			continue
		}
		n, err := countNpyCodes(counts, m.Data, K, V)
		if err != nil {
			return tokens, fmt.Errorf("%s: %w", s.Key, err)
		}
		tokens += n
	}
}

// countNpyCodes adds an (N, K) integer .npy held in memory to counts.
func countNpyCodes(counts []int64, b []byte, K, V int) (int64, error) {
	h, err := npy.ParseHeader(b)
	if err != nil {
		return 0, err
	}
	if len(h.Shape) != 2 || h.Shape[1] != K || !h.DType.IsInt() || h.DataOffset+h.DataBytes() > len(b) {
		return 0, fmt.Errorf("codes: shape %v dtype %s, want (N, %d) integers", h.Shape, h.DType.Name(), K)
	}
	codes := make([]int32, h.Elems())
	if err := toInt32(codes, b[h.DataOffset:h.DataOffset+h.DataBytes()], elem(h.DType)); err != nil {
		return 0, err
	}
	countCodes(counts, codes, unitok.TokenMajor, 1, K, V)
	return int64(h.Shape[0]), nil
}

// Fingerprint identifies a tokenizer for TarOptions.Fingerprint: a hash of
// its config, of the weights the encode path uses (quant_proj and the
// codebooks) and, when it has an image model, of the image architecture,
// the preprocessing and the image weights (encoder, decoder, CLIP head:
// (*unitok.Tokenizer).ImageWeightsDigest).
func Fingerprint(tok *unitok.Tokenizer) string {
	p := params(Encode, tok, &Options{}, npy.Uint16)
	if a, ok := tok.ImageArch(); ok {
		p += fmt.Sprintf(" image=%s/%d/%d/%d size=%d ratio=%g image_weights=%s",
			a.Model, a.Width, a.Depth, a.Heads, a.ImageSize, unitok.ImageResizeRatio, tok.ImageWeightsDigest())
	}
	h := sha256.Sum256([]byte(p))
	return fmt.Sprintf("%x", h[:8])
}

// TarInputs reports whether in holds webdataset shards (.tar) and no .npy
// shards: the inputs RunTars, rather than Run, is for.
func TarInputs(in []string, outDir string) bool {
	npys, err := findShards(in, "", outDir)
	if err != nil || len(npys) > 0 {
		return false // Run reports the error
	}
	tars, err := findTarShards(in, outDir)
	if err != nil || len(tars) == 0 {
		return false
	}
	for _, s := range tars { // files named explicitly are listed whatever their extension
		if !strings.EqualFold(filepath.Ext(s.path), ".tar") {
			return false
		}
	}
	return true
}
