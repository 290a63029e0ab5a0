package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/unitok/unitok"
)

// benchConfig is the synthetic model benched without --checkpoint:
// UniTok-Large's real widths.
var benchConfig = unitok.Config{InDim: 1024, LatentDim: 64, NumCodebooks: 8, CodebookSize: 4096, NumHeads: 16}

type benchResult struct {
	Op          string  `json:"op"`
	Tokens      int     `json:"tokens_per_iter"`
	Iters       int     `json:"iters"`
	MeanMs      float64 `json:"mean_ms"`
	BestMs      float64 `json:"best_ms"`
	TokensPerS  float64 `json:"tokens_per_s"`
	BestTokensS float64 `json:"best_tokens_per_s"`
	// The image ops (tokenize, detokenize, embed) also report images.
	Images      int     `json:"images_per_iter,omitempty"`
	ImagesPerS  float64 `json:"images_per_s,omitempty"`
	BestImagesS float64 `json:"best_images_per_s,omitempty"`
}

// imageOps are the bench ops that run the image path (B images of the
// model's size in, or out).
var imageOps = map[string]bool{"tokenize": true, "detokenize": true, "embed": true}

type benchReport struct {
	Device     string        `json:"device"`
	Model      string        `json:"model"`
	Config     unitok.Config `json:"config"`
	Metric     string        `json:"metric"`
	Batch      int           `json:"batch"`
	TokensPerB int           `json:"tokens"`
	Threads    int           `json:"threads"`
	GOMAXPROCS int           `json:"gomaxprocs"`
	Results    []benchResult `json:"results"`
}

// runBench times quantize, encode and decode (and lookup on request) on a
// checkpoint or on a synthetic real-width model.
func runBench(args []string, stdout io.Writer) error {
	fs := newFlagSet("bench")
	var ef engineFlags
	ef.register(fs)
	batch := fs.Int("batch", 4, "images per call (B)")
	tokens := fs.Int("tokens", 256, "tokens per image (N)")
	iters := fs.Int("iters", 5, "timed calls per op (after one warm-up call)")
	ops := fs.String("op", "quantize,encode,decode", "comma-separated ops: quantize, encode, decode, lookup, or all (the core); tokenize, detokenize, embed (images)")
	imgModel := fs.String("model", "vitamin_large", "without --checkpoint, the synthetic image model of the image ops: vitamin_base or vitamin_large")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("bench: unexpected argument %q", pos[0])
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"batch", *batch}, {"tokens", *tokens}, {"iters", *iters}} {
		if f.v <= 0 {
			return fmt.Errorf("--%s %d: want a positive number", f.name, f.v)
		}
	}
	var opList []string
	for _, o := range strings.Split(*ops, ",") {
		switch o = strings.TrimSpace(o); o {
		case "all":
			opList = append(opList, "quantize", "encode", "decode", "lookup")
		case "quantize", "encode", "decode", "lookup", "tokenize", "detokenize", "embed":
			opList = append(opList, o)
		default:
			return fmt.Errorf("--op: unknown op %q (want quantize, encode, decode, lookup, all, tokenize, detokenize or embed)", o)
		}
	}
	withImages := false
	for _, o := range opList {
		withImages = withImages || imageOps[o]
	}
	opts, _, err := ef.options()
	if err != nil {
		return err
	}
	var t *unitok.Tokenizer
	model := ef.checkpoint
	if ef.checkpoint != "" {
		if t, err = ef.openTokenizer(opts); err != nil {
			return err
		}
	} else if withImages {
		if t, err = unitok.SynthImageTokenizer(*imgModel, 1, opts...); err != nil {
			return fmt.Errorf("--model: %w", err)
		}
		model = "synthetic " + *imgModel
	} else {
		c := benchConfig
		if ef.heads > 0 {
			c.NumHeads = ef.heads
		}
		m, err := unitok.SynthModel(c, 1)
		if err != nil {
			return fmt.Errorf("synthetic model: %w", err)
		}
		// --heads went into the config above, so New sees no change.
		if t, err = unitok.New(m, opts...); err != nil {
			return ef.modelErr(err)
		}
		model = "synthetic"
	}
	defer t.Close()
	c := t.Config()
	B, N := *batch, *tokens
	var pixels []float32
	var imgCodes []int32
	if withImages {
		if err := t.ImageModel(); err != nil {
			return fmt.Errorf("%s: %w", model, err)
		}
		S := t.ImageSize()
		arch, _ := t.ImageArch()
		rng := splitmix(777)
		pixels = make([]float32, B*3*S*S)
		for i := range pixels {
			pixels[i] = 2*rng.uniform() - 1
		}
		imgCodes = make([]int32, B*arch.Tokens*c.NumCodebooks)
		for i := range imgCodes {
			imgCodes[i] = int32(rng.next() % uint64(c.CodebookSize))
		}
	}
	ctx := context.Background()
	M := B * N
	rng := splitmix(12345)
	features := make([]float32, M*c.InDim)
	for i := range features {
		features[i] = rng.uniform()
	}
	latents := make([]float32, M*c.LatentDim)
	for i := range latents {
		latents[i] = rng.uniform()
	}
	codes := make([]int32, M*c.NumCodebooks)
	for i := range codes {
		codes[i] = int32(rng.next() % uint64(c.CodebookSize))
	}
	threads := ef.threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	rep := benchReport{Device: t.Device(), Model: model, Config: c, Metric: t.Metric().String(),
		Batch: B, TokensPerB: N, Threads: threads, GOMAXPROCS: runtime.GOMAXPROCS(0)}
	for _, op := range opList {
		call := func() error {
			var err error
			switch op {
			case "quantize":
				_, err = t.Quantize(latents, M)
			case "encode":
				_, err = t.Encode(features, B, N)
			case "decode":
				_, err = t.Decode(codes, B, N)
			case "lookup":
				_, err = t.Lookup(codes, M)
			case "tokenize":
				_, err = t.TokenizePixels(ctx, pixels, B)
			case "detokenize":
				_, err = t.Detokenize(ctx, imgCodes, B)
			case "embed":
				_, err = t.EmbedPixels(ctx, pixels, B)
			}
			return err
		}
		if err := call(); err != nil { // warm-up
			return fmt.Errorf("bench %s: %w", op, err)
		}
		var total, best time.Duration
		for i := 0; i < *iters; i++ {
			start := time.Now()
			if err := call(); err != nil {
				return fmt.Errorf("bench %s: %w", op, err)
			}
			d := time.Since(start)
			total += d
			if i == 0 || d < best {
				best = d
			}
		}
		mean := total / time.Duration(*iters)
		r := benchResult{
			Op: op, Tokens: M, Iters: *iters,
			MeanMs: ms(mean), BestMs: ms(best),
			TokensPerS: perSec(M, mean), BestTokensS: perSec(M, best),
		}
		if imageOps[op] {
			arch, _ := t.ImageArch()
			r.Tokens, r.TokensPerS, r.BestTokensS = B*arch.Tokens, perSec(B*arch.Tokens, mean), perSec(B*arch.Tokens, best)
			r.Images, r.ImagesPerS, r.BestImagesS = B, perSec(B, mean), perSec(B, best)
		}
		rep.Results = append(rep.Results, r)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	attn := "full"
	if c.Causal {
		attn = "causal"
	}
	fmt.Fprintf(stdout, "device %s, model %s: C=%d D=%d K=%d V=%d H=%d %s attention, metric %s\n",
		rep.Device, model, c.InDim, c.LatentDim, c.NumCodebooks, c.CodebookSize, c.NumHeads, attn, rep.Metric)
	fmt.Fprintf(stdout, "batch %d x %d tokens, %d iters (after 1 warm-up), %d threads\n", B, N, *iters, threads)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\ttokens/call\tmean ms\tbest ms\ttokens/s\tbest tokens/s\timages/s\tbest images/s\t")
	for _, r := range rep.Results {
		im, bim := "", ""
		if r.Images > 0 {
			im, bim = fmt.Sprintf("%.3f", r.ImagesPerS), fmt.Sprintf("%.3f", r.BestImagesS)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t\n", r.Op, r.Tokens, r.MeanMs, r.BestMs, human(r.TokensPerS), human(r.BestTokensS), im, bim)
	}
	return tw.Flush()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func perSec(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func human(x float64) string {
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.2fG", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

// splitmix is a tiny deterministic generator for bench inputs.
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9E3779B97F4A7C15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// uniform returns a value in [-1, 1).
func (s *splitmix) uniform() float32 {
	return float32(int64(s.next()>>40)-(1<<23)) / (1 << 23)
}
