package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/npy"
)

// optBool is a boolean flag that remembers whether it was given, so that
// --causal overrides the checkpoint only when present.
type optBool struct{ v *bool }

func (b *optBool) String() string {
	if b == nil || b.v == nil {
		return ""
	}
	return strconv.FormatBool(*b.v)
}

func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	b.v = &v
	return nil
}

func (b *optBool) IsBoolFlag() bool { return true }

// engineFlags are the flags every command that runs the model shares.
type engineFlags struct {
	checkpoint string
	device     string
	causal     optBool
	heads      int
	metric     string
	layout     string
	codesDType string
	threads    int
}

func (e *engineFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.checkpoint, "checkpoint", "", "checkpoint (safetensors or PyTorch zip)")
	fs.StringVar(&e.device, "device", "auto", "cpu, cuda or cuda:N")
	fs.Var(&e.causal, "causal", "override the attention mode")
	fs.IntVar(&e.heads, "heads", 0, "override the number of attention heads")
	fs.StringVar(&e.metric, "metric", "cosine", "cosine or l2")
	fs.StringVar(&e.layout, "layout", "bnk", "bnk or bkn")
	fs.StringVar(&e.codesDType, "codes-dtype", "uint16", "uint16, int32 or int64")
	fs.IntVar(&e.threads, "threads", 0, "CPU threads (0: all cores)")
}

// options validates the flags and turns them into unitok options. Checks
// happen before any file is opened, so a typo costs nothing.
func (e *engineFlags) options() ([]unitok.Option, unitok.Layout, error) {
	var opts []unitok.Option
	if e.device != "" && e.device != "auto" {
		opts = append(opts, unitok.WithDevice(e.device))
	}
	if e.causal.v != nil {
		opts = append(opts, unitok.WithCausal(*e.causal.v))
	}
	if e.heads < 0 {
		return nil, 0, fmt.Errorf("--heads %d: want a positive number", e.heads)
	}
	if e.heads > 0 {
		opts = append(opts, unitok.WithHeads(e.heads))
	}
	m, err := unitok.ParseMetric(e.metric)
	if err != nil {
		return nil, 0, fmt.Errorf("--metric: unknown metric %q (want cosine or l2)", e.metric)
	}
	opts = append(opts, unitok.WithMetric(m))
	var l unitok.Layout
	switch strings.ToLower(e.layout) {
	case "bnk", "":
		l = unitok.TokenMajor
	case "bkn":
		l = unitok.CodebookMajor
	default:
		return nil, 0, fmt.Errorf("--layout: unknown layout %q (want bnk or bkn)", e.layout)
	}
	opts = append(opts, unitok.WithLayout(l))
	switch e.codesDType {
	case "uint16", "int32", "int64":
	default:
		return nil, 0, fmt.Errorf("--codes-dtype: unsupported dtype %q (want uint16, int32 or int64)", e.codesDType)
	}
	if e.threads < 0 {
		return nil, 0, fmt.Errorf("--threads %d: want a positive number", e.threads)
	}
	if e.threads > 0 {
		opts = append(opts, unitok.WithThreads(e.threads))
	}
	return opts, l, nil
}

// openTokenizer opens the checkpoint; errors name the checkpoint file, or
// the flag at fault.
func (e *engineFlags) openTokenizer(opts []unitok.Option) (*unitok.Tokenizer, error) {
	t, err := unitok.Open(e.checkpoint, opts...)
	if err != nil {
		return nil, e.modelErr(err)
	}
	return t, nil
}

// modelErr attributes an error from Open/New to --device, --heads or the
// checkpoint file.
func (e *engineFlags) modelErr(err error) error {
	var ue *unitok.Error
	if errors.As(err, &ue) {
		switch {
		case ue.Op == "device" || errors.Is(err, unitok.ErrNoCUDA) || errors.Is(err, unitok.ErrNoDevice):
			return fmt.Errorf("--device %s: %s", e.device, ue.Msg)
		case ue.Op == "config" && e.heads > 0:
			return fmt.Errorf("--heads %d: %s", e.heads, ue.Msg)
		}
	}
	if e.checkpoint == "" {
		return err
	}
	return pathErr(e.checkpoint, err)
}

// checkOut fails early, before any work, when the output cannot be
// written: a directory, or a parent directory that does not exist.
func checkOut(out string) error {
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return fmt.Errorf("--out %s is a directory", out)
	}
	dir := filepath.Dir(out)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("--out %s: %s is not a directory", out, dir)
	}
	return nil
}

func shapeStr(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = strconv.Itoa(d)
	}
	if len(s) == 1 {
		return "(" + parts[0] + ",)"
	}
	return "(" + strings.Join(parts, ",") + ")"
}

// runOp implements encode, decode, quantize and lookup.
func runOp(cmd string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(cmd)
	var ef engineFlags
	ef.register(fs)
	var in, out string
	fs.StringVar(&in, "in", "", "input .npy")
	fs.StringVar(&out, "out", "", "output .npy")
	var pf prepFlags
	pf.register(fs)
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%s: unexpected argument %q", cmd, pos[0])
	}
	for _, f := range []struct{ name, v string }{{"checkpoint", ef.checkpoint}, {"in", in}, {"out", out}} {
		if f.v == "" {
			return fmt.Errorf("%s: missing required flag --%s", cmd, f.name)
		}
	}
	if sharded(in, out, &pf) {
		return runShards(cmd, in, out, &ef, &pf, stderr)
	}
	opts, layout, err := ef.options()
	if err != nil {
		return err
	}
	a, err := npy.Open(in)
	if err != nil {
		return pathErr(in, err)
	}
	defer a.Close()
	// Cheap checks on the input's rank and dtype come before the
	// checkpoint is loaded.
	wantFloat := cmd == "encode" || cmd == "quantize"
	switch {
	case wantFloat && !a.DType.IsFloat():
		return fmt.Errorf("%s: dtype %s: %s needs float32 (or float64/float16) input", in, a.DType.Name(), cmd)
	case !wantFloat && !a.DType.IsInt():
		return fmt.Errorf("%s: dtype %s: %s needs integer codes", in, a.DType.Name(), cmd)
	}
	batched := cmd == "encode" || cmd == "decode"
	if batched && (len(a.Shape) < 2 || len(a.Shape) > 3) || !batched && len(a.Shape) != 2 {
		return fmt.Errorf("%s: shape %s: %s wants %s", in, shapeStr(a.Shape), cmd, wantShape(cmd, layout))
	}
	for _, d := range a.Shape {
		if d == 0 {
			return fmt.Errorf("%s: shape %s is empty", in, shapeStr(a.Shape))
		}
	}
	if err := checkOut(out); err != nil {
		return err
	}
	t, err := ef.openTokenizer(opts)
	if err != nil {
		return err
	}
	defer t.Close()
	c := t.Config()
	// B, N and the width from the shape; 2-D encode/decode input is B=1.
	sh := a.Shape
	B, N := 1, 0
	var width, wantWidth int
	var wname string
	switch cmd {
	case "encode":
		wantWidth, wname = c.InDim, "C"
	case "quantize":
		wantWidth, wname = c.LatentDim, "D"
	default:
		wantWidth, wname = c.NumCodebooks, "K"
	}
	if len(sh) == 3 {
		B, sh = sh[0], sh[1:]
	}
	if !wantFloat && layout == unitok.CodebookMajor {
		width, N = sh[0], sh[1]
	} else {
		N, width = sh[0], sh[1]
	}
	if width != wantWidth {
		return fmt.Errorf("%s: shape %s has %s=%d, but the checkpoint has %s=%d (%s wants %s)",
			in, shapeStr(a.Shape), wname, width, wname, wantWidth, cmd, wantShape(cmd, layout))
	}
	tokens := B * N
	start := time.Now()
	var outShape []int
	var summary string
	switch cmd {
	case "encode", "quantize":
		x, err := a.Float32()
		if err != nil {
			return pathErr(in, err)
		}
		var codes []int32
		if cmd == "encode" {
			codes, err = t.Encode(x, B, N)
		} else {
			codes, err = t.Quantize(x, N)
		}
		if err != nil {
			return inputErr(in, err)
		}
		elapsed := time.Since(start)
		K := c.NumCodebooks
		outShape = append(append([]int{}, a.Shape[:len(a.Shape)-2]...), N, K)
		if layout == unitok.CodebookMajor {
			outShape[len(outShape)-2], outShape[len(outShape)-1] = K, N
		}
		if err := npy.WriteInts(out, outShape, codes, ef.codesDType); err != nil {
			return pathErr(out, err)
		}
		verb := "encoded"
		if cmd == "quantize" {
			verb = "quantized"
		}
		summary = fmt.Sprintf("%s %dx%d tokens (%s=%d) -> codes %s %s in %s, %s tokens/s, codebook usage %.1f%% avg",
			verb, B, N, wname, width, shapeStr(outShape), ef.codesDType, secs(elapsed), rate(tokens, elapsed),
			codebookUsage(codes, N, K, c.CodebookSize, layout))
	default: // decode, lookup
		codes, err := a.Int32()
		if err != nil {
			return pathErr(in, err)
		}
		var y []float32
		W := c.InDim
		if cmd == "decode" {
			y, err = t.Decode(codes, B, N)
		} else {
			W = c.LatentDim
			y, err = t.Lookup(codes, N)
		}
		if err != nil {
			return inputErr(in, err)
		}
		elapsed := time.Since(start)
		outShape = append(append([]int{}, a.Shape[:len(a.Shape)-2]...), N, W)
		if err := npy.WriteFloat32(out, outShape, y); err != nil {
			return pathErr(out, err)
		}
		verb, what := "decoded", "features"
		if cmd == "lookup" {
			verb, what = "looked up", "latents"
		}
		summary = fmt.Sprintf("%s %dx%d tokens (K=%d) -> %s %s float32 in %s, %s tokens/s",
			verb, B, N, width, what, shapeStr(outShape), secs(elapsed), rate(tokens, elapsed))
	}
	fmt.Fprintln(stderr, summary)
	return nil
}

// inputErr names the input file in an error about the input's values.
func inputErr(in string, err error) error {
	if errors.Is(err, unitok.ErrBadInput) {
		return fmt.Errorf("%s: %w", in, err)
	}
	return err
}

func wantShape(cmd string, l unitok.Layout) string {
	bkn := l == unitok.CodebookMajor
	switch cmd {
	case "encode":
		return "(B,N,C) or (N,C) features"
	case "decode":
		if bkn {
			return "(B,K,N) or (K,N) codes (--layout bkn)"
		}
		return "(B,N,K) or (N,K) codes"
	case "quantize":
		return "(M,D) latents"
	}
	if bkn {
		return "(K,M) codes (--layout bkn)"
	}
	return "(M,K) codes"
}

// codebookUsage is the percentage of codewords used, per codebook,
// averaged over the K codebooks.
func codebookUsage(codes []int32, N, K, V int, l unitok.Layout) float64 {
	seen := make([]bool, K*V)
	for i, c := range codes {
		var k int
		if l == unitok.TokenMajor {
			k = i % K
		} else {
			k = (i / N) % K
		}
		if c >= 0 && int(c) < V {
			seen[k*V+int(c)] = true
		}
	}
	used := 0
	for _, s := range seen {
		if s {
			used++
		}
	}
	return 100 * float64(used) / float64(K*V)
}

func secs(d time.Duration) string {
	s := d.Seconds()
	switch {
	case s < 0.01:
		return fmt.Sprintf("%.4fs", s)
	case s < 10:
		return fmt.Sprintf("%.2fs", s)
	}
	return fmt.Sprintf("%.1fs", s)
}

func rate(tokens int, d time.Duration) string {
	s := d.Seconds()
	if s <= 0 {
		return "inf"
	}
	return fmt.Sprintf("%.0f", float64(tokens)/s)
}
