package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/prep"
	"github.com/unitok/unitok/internal/wds"
)

// prepFlags are the data-prep flags of encode, decode, quantize and lookup:
// with a directory or glob in, or a directory out, the command runs over
// every shard (see internal/prep).
type prepFlags struct {
	tensor    string
	batch     int
	inflight  int
	histogram string
	verify    bool
	interval  time.Duration
	partition string
	keep      bool
	embed     bool
}

// tokenizeImages gives the image tokenizer that webdataset (.tar) shards go
// through, or an error naming what the checkpoint lacks (a core-only
// checkpoint has no encoder). Tests swap in a fake.
var tokenizeImages = func(t *unitok.Tokenizer) (wds.TokenizeFunc, error) {
	if err := t.ImageModel(); err != nil {
		return nil, err
	}
	return t.TokenizeImages, nil
}

// tokenizeEmbedImages is tokenizeImages for --embed: codes and CLIP
// embeddings in one encoder pass. Tests swap in a fake.
var tokenizeEmbedImages = func(t *unitok.Tokenizer) (wds.TokenizeEmbedFunc, error) {
	if err := t.ImageModel(); err != nil {
		return nil, err
	}
	if a, _ := t.ImageArch(); a.EmbedDim == 0 {
		return nil, fmt.Errorf("--embed: the checkpoint has no CLIP image head (fc_norm, projection)")
	}
	return t.TokenizeAndEmbedImages, nil
}

func (p *prepFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.tensor, "tensor", "", "tensor to read from .safetensors shards")
	fs.IntVar(&p.batch, "batch", 0, "images (encode, decode) or rows (quantize, lookup) per call (0: ~16K tokens, 64K rows)")
	fs.IntVar(&p.inflight, "inflight", 2, "batches computed at once (each on its own CUDA stream)")
	fs.StringVar(&p.histogram, "histogram", "", "write the per-codebook code histogram (K,V) int64 to this .npy")
	fs.BoolVar(&p.verify, "verify", false, "rehash outputs the manifest says are done (default: check their size)")
	fs.DurationVar(&p.interval, "progress-interval", 0, "time between progress lines (default 500ms on a terminal, 5s otherwise)")
	fs.BoolVar(&p.keep, "keep", false, "webdataset shards: also write each sample's image member (other members are always kept)")
	fs.BoolVar(&p.embed, "embed", false, "webdataset shards: also write each sample's CLIP image embedding as KEY.embed.npy ((E,) float32)")
	fs.StringVar(&p.partition, "partition", "", "do only partition I of N of the shards (I/N, or off; default from JOB_COMPLETION_INDEX+UNITOK_PARTITIONS or SLURM_ARRAY_TASK_ID/COUNT)")
}

// resolvePartition reads --partition, or the scheduler's environment when
// it is not given, and says on stderr where an environment value came from.
func (p *prepFlags) resolvePartition(getenv func(string) string, stderr io.Writer) (prep.Partition, error) {
	if p.partition != "" {
		part, err := prep.ParsePartition(p.partition)
		if err != nil {
			return part, fmt.Errorf("--%v", err)
		}
		return part, nil
	}
	part, src, err := prep.PartitionFromEnv(getenv)
	if err != nil {
		return part, fmt.Errorf("--partition: %v", err)
	}
	if part.Enabled() {
		fmt.Fprintf(stderr, "partition %s (from %s; --partition off to run every shard)\n", part, src)
	}
	return part, nil
}

// sharded reports whether a run is a data-prep job rather than one array:
// a directory or glob in, a directory (or a name without .npy) out, or a
// data-prep-only flag.
func sharded(in, out string, p *prepFlags) bool {
	if st, err := os.Stat(in); err == nil && st.IsDir() {
		return true
	} else if err != nil && strings.ContainsAny(in, "*?[") {
		return true
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return true
	}
	if strings.HasSuffix(out, "/") || !strings.EqualFold(filepath.Ext(out), ".npy") {
		return true
	}
	return p.tensor != "" || p.histogram != "" || p.partition != "" || p.keep || p.embed
}

// runShards runs cmd over every shard of in, writing mirrored outputs and a
// manifest under out; SIGINT/SIGTERM stop it cleanly and a rerun resumes.
func runShards(cmd, in, out string, ef *engineFlags, pf *prepFlags, stderr io.Writer) error {
	op, err := prep.ParseOp(cmd)
	if err != nil {
		return err
	}
	if pf.inflight <= 0 {
		return fmt.Errorf("--inflight %d: want a positive number", pf.inflight)
	}
	if pf.batch < 0 {
		return fmt.Errorf("--batch %d: want a positive number", pf.batch)
	}
	part, err := pf.resolvePartition(os.Getenv, stderr)
	if err != nil {
		return err
	}
	tars := prep.TarInputs([]string{in}, out)
	switch {
	case tars && op != prep.Encode:
		return fmt.Errorf("%s: --in %s holds webdataset shards (.tar), which only encode reads", cmd, in)
	case pf.keep && !tars:
		return fmt.Errorf("--keep applies to webdataset (.tar) shards only")
	case pf.embed && !tars:
		return fmt.Errorf("--embed applies to webdataset (.tar) shards only (for one image: unitok embed)")
	}
	opts, _, err := ef.options()
	if err != nil {
		return err
	}
	if pf.inflight > 2 {
		opts = append(opts, unitok.WithStreams(pf.inflight))
	}
	t, err := ef.openTokenizer(opts)
	if err != nil {
		return err
	}
	defer t.Close()
	ctx, stop := prep.NotifyContext(context.Background())
	defer stop()
	if tars {
		topt := prep.TarOptions{
			In: []string{in}, OutDir: out, Partition: part, Verify: pf.verify, Histogram: pf.histogram,
			Progress: stderr, K: t.Config().NumCodebooks, V: t.Config().CodebookSize,
			Device: t.Device(), Batch: pf.batch, Keep: pf.keep,
		}
		if pf.embed {
			topt.TokenizeEmbed, err = tokenizeEmbedImages(t)
		} else {
			topt.Tokenize, err = tokenizeImages(t)
		}
		if err != nil {
			return fmt.Errorf("encode: --in %s holds webdataset shards (.tar), whose images need the image model: %w", in, err)
		}
		topt.Fingerprint = prep.Fingerprint(t)
		sum, err := prep.RunTars(ctx, topt)
		if sum != nil {
			sum.Print(stderr)
		}
		return err
	}
	sum, err := prep.Run(ctx, t, op, prep.Options{
		In: []string{in}, Tensor: pf.tensor, OutDir: out, Batch: pf.batch, InFlight: pf.inflight,
		CodesDType: ef.codesDType, Histogram: pf.histogram, Verify: pf.verify,
		Progress: stderr, ProgressInterval: pf.interval, Partition: part,
	})
	if sum != nil {
		sum.Print(stderr)
	}
	return err
}
