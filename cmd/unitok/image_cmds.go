package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"image"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/atomicfile"
	"github.com/unitok/unitok/internal/imageio"
	"github.com/unitok/unitok/internal/npy"
	"github.com/unitok/unitok/internal/prep"
)

// The image commands: tokenize, detokenize, reconstruct and embed, UniTok's
// inference.py on files (preprocess is in images.go).

// imageCmd holds the flags the image commands share.
type imageCmd struct {
	name      string
	fs        *flag.FlagSet
	ef        engineFlags
	in, out   string
	maxPixels int64
}

func newImageCmd(name string) *imageCmd {
	c := &imageCmd{name: name, fs: newFlagSet(name)}
	c.ef.register(c.fs)
	c.fs.StringVar(&c.in, "in", "", "input")
	c.fs.StringVar(&c.out, "out", "", "output")
	c.fs.Int64Var(&c.maxPixels, "max-pixels", imageio.DefaultMaxPixels, "refuse images with more pixels (read from the header)")
	return c
}

// parse reads the flags; up to maxPos positionals fill --in and --out.
func (c *imageCmd) parse(args []string, stdout io.Writer, maxPos int) error {
	pos, err := parseFlags(c.fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) > maxPos {
		return fmt.Errorf("%s: unexpected argument %q", c.name, pos[maxPos])
	}
	for _, p := range pos {
		switch {
		case c.in == "":
			c.in = p
		case c.out == "":
			c.out = p
		default:
			return fmt.Errorf("%s: unexpected argument %q (--in and --out are set)", c.name, p)
		}
	}
	for _, f := range []struct{ name, v string }{{"checkpoint", c.ef.checkpoint}, {"in", c.in}, {"out", c.out}} {
		if f.v == "" {
			return fmt.Errorf("%s: missing required flag --%s", c.name, f.name)
		}
	}
	if c.maxPixels <= 0 {
		return fmt.Errorf("%s: --max-pixels %d: want a positive number", c.name, c.maxPixels)
	}
	if a, _ := filepath.Abs(c.in); a != "" {
		if b, _ := filepath.Abs(c.out); a == b {
			return fmt.Errorf("%s: --out %s is the input", c.name, c.out)
		}
	}
	return nil
}

// wantExt checks the output's extension.
func (c *imageCmd) wantExt(exts ...string) (string, error) {
	ext := strings.ToLower(filepath.Ext(c.out))
	for _, e := range exts {
		if ext == e {
			return ext, nil
		}
	}
	return "", fmt.Errorf("%s: --out %s: want a %s file", c.name, c.out, strings.Join(exts, " or "))
}

// loadImage decodes --in (cheap, before the checkpoint is loaded).
func (c *imageCmd) loadImage() (image.Image, error) {
	img, _, err := imageio.Load(c.in, c.maxPixels)
	if err != nil {
		return nil, pathErr(c.in, err)
	}
	return img, nil
}

// open loads the checkpoint and checks that it has the image model; what is
// missing is named in one line.
func (c *imageCmd) open() (*unitok.Tokenizer, unitok.Layout, error) {
	opts, layout, err := c.ef.options()
	if err != nil {
		return nil, 0, err
	}
	opts = append(opts, unitok.WithMaxPixels(c.maxPixels))
	t, err := c.ef.openTokenizer(opts)
	if err != nil {
		return nil, 0, err
	}
	if err := t.ImageModel(); err != nil {
		t.Close()
		return nil, 0, fmt.Errorf("%s: %v", c.ef.checkpoint, err) // "image model: missing tensor ... (no ViTamin encoder ...)"
	}
	imageGC()
	return t, layout, nil
}

// imageGCPercent is the GOGC the image commands run with unless GOGC is
// set. Their live heap is almost all model weights (2.7 GB at
// vitamin_large), which Go's default GOGC=100 lets garbage (activations)
// match before a collection: peak RSS twice the weights. At 25 the garbage
// stays under a quarter of them (vitamin_large tokenize + detokenize: peak
// 5.3 GB -> 3.6 GB), and the cycles are cheap, the weights holding no
// pointers to scan (docs/notes/mmap.md).
const imageGCPercent = 25

func imageGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(imageGCPercent)
	}
}

// imageErr names the input in an error from the image calls.
func (c *imageCmd) imageErr(err error) error {
	if errors.Is(err, unitok.ErrBadInput) {
		return fmt.Errorf("%s: %w", c.in, err)
	}
	return err
}

func codesShape(N, K int, l unitok.Layout) []int {
	if l == unitok.CodebookMajor {
		return []int{K, N}
	}
	return []int{N, K}
}

func imgSize(img image.Image) string {
	b := img.Bounds()
	return fmt.Sprintf("%dx%d", b.Dx(), b.Dy())
}

// runTokenize: one image -> (N, K) codes; a directory or glob -> the
// data-prep job (prep.RunImages).
func runTokenize(args []string, stdout, stderr io.Writer) error {
	c := newImageCmd("tokenize")
	var pf prepFlags
	pf.register(c.fs)
	if err := c.parse(args, stdout, 0); err != nil {
		return err
	}
	if sharded(c.in, c.out, &pf) {
		return c.runImageShards(&pf, stderr)
	}
	img, err := c.imageToNpy()
	if err != nil {
		return err
	}
	t, layout, err := c.open()
	if err != nil {
		return err
	}
	defer t.Close()
	start := time.Now()
	codes, err := t.TokenizeImages(context.Background(), []image.Image{img})
	if err != nil {
		return c.imageErr(err)
	}
	el := time.Since(start)
	K := t.Config().NumCodebooks
	N := len(codes) / K
	shape := codesShape(N, K, layout)
	if err := npy.WriteInts(c.out, shape, codes, c.ef.codesDType); err != nil {
		return pathErr(c.out, err)
	}
	fmt.Fprintf(stderr, "tokenized %s (%s) -> codes %s %s in %s (%s, %dx%d input, %d tokens)\n",
		c.in, imgSize(img), shapeStr(shape), c.ef.codesDType, secs(el), t.Device(), t.ImageSize(), t.ImageSize(), N)
	return nil
}

// runImageShards runs tokenize over a directory or glob.
func (c *imageCmd) runImageShards(pf *prepFlags, stderr io.Writer) error {
	if pf.tensor != "" || pf.histogram != "" {
		return fmt.Errorf("tokenize: --tensor and --histogram do not apply to images")
	}
	if pf.keep || pf.embed {
		return fmt.Errorf("tokenize: --keep and --embed apply to webdataset (.tar) shards (unitok encode --in DIR_OF_TARS)")
	}
	if pf.batch < 0 {
		return fmt.Errorf("--batch %d: want a positive number", pf.batch)
	}
	if _, _, err := c.ef.options(); err != nil {
		return err
	}
	t, _, err := c.open()
	if err != nil {
		return err
	}
	defer t.Close()
	model := ""
	if st, err := os.Stat(c.ef.checkpoint); err == nil {
		model = fmt.Sprintf("%d", st.Size())
	}
	ctx, stop := prep.NotifyContext(context.Background())
	defer stop()
	sum, err := prep.RunImages(ctx, t, prep.ImageOptions{
		In: []string{c.in}, OutDir: c.out, Batch: pf.batch, CodesDType: c.ef.codesDType, MaxPixels: c.maxPixels,
		Model: model, Verify: pf.verify, Progress: stderr, ProgressInterval: pf.interval,
	})
	if sum != nil {
		sum.Print(stderr)
	}
	return err
}

// readCodes opens a codes .npy for detokenize: integer, (N, K) or
// (B, N, K) (with --layout bkn (K, N) or (B, K, N)).
func readCodes(in string, layout unitok.Layout) (codes []int32, shape []int, err error) {
	a, err := npy.Open(in)
	if err != nil {
		return nil, nil, pathErr(in, err)
	}
	defer a.Close()
	want := "(N,K) or (B,N,K) codes"
	if layout == unitok.CodebookMajor {
		want = "(K,N) or (B,K,N) codes (--layout bkn)"
	}
	if !a.DType.IsInt() {
		return nil, nil, fmt.Errorf("%s: dtype %s: detokenize needs integer codes, %s", in, a.DType.Name(), strings.TrimSuffix(want, " codes"))
	}
	if len(a.Shape) < 2 || len(a.Shape) > 3 {
		return nil, nil, fmt.Errorf("%s: shape %s: detokenize wants %s", in, shapeStr(a.Shape), want)
	}
	for _, d := range a.Shape {
		if d == 0 {
			return nil, nil, fmt.Errorf("%s: shape %s is empty", in, shapeStr(a.Shape))
		}
	}
	codes, err = a.Int32()
	if err != nil {
		return nil, nil, pathErr(in, err)
	}
	return codes, append([]int{}, a.Shape...), nil
}

// runDetokenize: codes -> images (.png) or pixels (.npy).
func runDetokenize(args []string, stdout, stderr io.Writer) error {
	c := newImageCmd("detokenize")
	if err := c.parse(args, stdout, 0); err != nil {
		return err
	}
	ext, err := c.wantExt(".png", ".npy")
	if err != nil {
		return err
	}
	_, layout, err := c.ef.options()
	if err != nil {
		return err
	}
	if err := checkOut(c.out); err != nil {
		return err
	}
	codes, shape, err := readCodes(c.in, layout)
	if err != nil {
		return err
	}
	t, _, err := c.open()
	if err != nil {
		return err
	}
	defer t.Close()
	K := t.Config().NumCodebooks
	S := t.ImageSize()
	N := (S / 16) * (S / 16)
	B, sh := 1, shape
	if len(sh) == 3 {
		B, sh = sh[0], sh[1:]
	}
	gotN, gotK := sh[0], sh[1]
	if layout == unitok.CodebookMajor {
		gotN, gotK = sh[1], sh[0]
	}
	if gotK != K || gotN != N {
		return fmt.Errorf("%s: shape %s has N=%d, K=%d, but the checkpoint takes N=%d tokens (%dx%d image) and K=%d codebooks",
			c.in, shapeStr(shape), gotN, gotK, N, S, S, K)
	}
	start := time.Now()
	rec, err := t.Detokenize(context.Background(), codes, B)
	if err != nil {
		return c.imageErr(err)
	}
	el := time.Since(start)
	if ext == ".npy" {
		oshape := []int{3, S, S}
		if len(shape) == 3 {
			oshape = []int{B, 3, S, S}
		}
		if err := npy.WriteFloat32(c.out, oshape, rec); err != nil {
			return pathErr(c.out, err)
		}
		fmt.Fprintf(stderr, "detokenized codes %s -> %s float32 %s in %s (%s)\n", shapeStr(shape), c.out, shapeStr(oshape), secs(el), t.Device())
		return nil
	}
	imgs, err := unitok.PixelsToImages(rec, B, S)
	if err != nil {
		return err
	}
	names := pngNames(c.out, B)
	if err := writePNGs(names, imgs); err != nil {
		return err
	}
	what := names[0]
	if B > 1 {
		what = fmt.Sprintf("%s ... %s (%d images)", names[0], names[B-1], B)
	}
	fmt.Fprintf(stderr, "detokenized codes %s -> %s (%dx%d) in %s (%s)\n", shapeStr(shape), what, S, S, secs(el), t.Device())
	return nil
}

// pngNames is OUT for one image, else OUT-000.png, OUT-001.png, ... (the
// extension of OUT removed first).
func pngNames(out string, B int) []string {
	if B == 1 {
		return []string{out}
	}
	base := strings.TrimSuffix(out, filepath.Ext(out))
	width := max(3, len(fmt.Sprint(B-1)))
	names := make([]string, B)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%0*d.png", base, width, i)
	}
	return names
}

// writePNGs writes every image to a temporary file first and publishes
// them only when all are written, so a failure leaves none of them.
func writePNGs(names []string, imgs []*image.NRGBA) error {
	p, err := preparePNGs(names, imgs)
	if err != nil {
		return err
	}
	return p.commit()
}

// pendingPNGs are encoded images in temporary files beside their names.
type pendingPNGs struct {
	names []string
	files []*atomicfile.File
}

func preparePNGs(names []string, imgs []*image.NRGBA) (*pendingPNGs, error) {
	p := &pendingPNGs{names: names}
	for i, name := range names {
		f, err := atomicfile.Create(name, 0o644)
		if err != nil {
			p.abort()
			return nil, pathErr(name, err)
		}
		p.files = append(p.files, f)
		if err := imageio.EncodePNG(f, imgs[i]); err != nil {
			p.abort()
			return nil, pathErr(name, err)
		}
	}
	return p, nil
}

func (p *pendingPNGs) abort() {
	for _, f := range p.files {
		f.Abort()
	}
}

// commit publishes the files (renames); on a failure the rest are dropped.
func (p *pendingPNGs) commit() error {
	for i, f := range p.files {
		if err := f.Commit(); err != nil {
			for _, g := range p.files[i+1:] {
				g.Abort()
			}
			return pathErr(p.names[i], err)
		}
	}
	return nil
}

// runReconstruct: image -> codes -> image, with the PSNR against the
// preprocessed input; --side-by-side writes input | reconstruction as
// inference.py does.
func runReconstruct(args []string, stdout, stderr io.Writer) error {
	c := newImageCmd("reconstruct")
	side := c.fs.Bool("side-by-side", false, "write the preprocessed input and the reconstruction side by side")
	codesOut := c.fs.String("codes", "", "also write the codes to this .npy")
	if err := c.parse(args, stdout, 2); err != nil {
		return err
	}
	if _, err := c.wantExt(".png"); err != nil {
		return err
	}
	if *codesOut != "" && !strings.EqualFold(filepath.Ext(*codesOut), ".npy") {
		return fmt.Errorf("reconstruct: --codes %s: want a .npy file", *codesOut)
	}
	if _, _, err := c.ef.options(); err != nil {
		return err
	}
	for _, o := range []string{c.out, *codesOut} {
		if o == "" {
			continue
		}
		if err := checkOut(o); err != nil {
			return err
		}
	}
	img, err := c.loadImage()
	if err != nil {
		return err
	}
	t, layout, err := c.open()
	if err != nil {
		return err
	}
	defer t.Close()
	S := t.ImageSize()
	ctx := context.Background()
	x, err := t.PreprocessImages([]image.Image{img})
	if err != nil {
		return c.imageErr(err)
	}
	t0 := time.Now()
	codes, err := t.TokenizePixels(ctx, x, 1)
	if err != nil {
		return c.imageErr(err)
	}
	t1 := time.Now()
	recs, err := t.DetokenizeImages(ctx, codes, 1)
	if err != nil {
		return c.imageErr(err)
	}
	t2 := time.Now()
	orig, err := unitok.PixelsToImage(x, S)
	if err != nil {
		return err
	}
	psnr, err := unitok.PSNR(orig, recs[0])
	if err != nil {
		return err
	}
	outImg := recs[0]
	if *side {
		if outImg, err = unitok.SideBySide(orig, recs[0]); err != nil {
			return err
		}
	}
	K := t.Config().NumCodebooks
	shape := codesShape(len(codes)/K, K, layout)
	// The PNG is encoded first, the codes published, then the PNG (a
	// rename): a failure leaves neither.
	png, err := preparePNGs([]string{c.out}, []*image.NRGBA{outImg})
	if err != nil {
		return err
	}
	if *codesOut != "" {
		if err := npy.WriteInts(*codesOut, shape, codes, c.ef.codesDType); err != nil {
			png.abort()
			return pathErr(*codesOut, err)
		}
	}
	if err := png.commit(); err != nil {
		return err
	}
	layoutNote := ""
	if *side {
		layoutNote = " (left: input after resize+crop, right: reconstruction)"
	}
	fmt.Fprintf(stderr, "reconstructed %s (%s -> %dx%d) through codes %s in %s (tokenize %s, detokenize %s, %s): PSNR %s vs the preprocessed input -> %s%s\n",
		c.in, imgSize(img), S, S, shapeStr(shape), secs(t2.Sub(t0)), secs(t1.Sub(t0)), secs(t2.Sub(t1)), t.Device(),
		psnrStr(psnr), c.out, layoutNote)
	return nil
}

func psnrStr(p float64) string {
	if math.IsInf(p, 1) {
		return "inf dB (identical)"
	}
	return fmt.Sprintf("%.2f dB", p)
}

// imageToNpy checks a one-image command that writes a .npy (--out's
// extension, the engine flags, that --out can be written) and loads its
// image.
func (c *imageCmd) imageToNpy() (image.Image, error) {
	if _, err := c.wantExt(".npy"); err != nil {
		return nil, err
	}
	if _, _, err := c.ef.options(); err != nil {
		return nil, err
	}
	if err := checkOut(c.out); err != nil {
		return nil, err
	}
	return c.loadImage()
}

// runEmbed: one image -> its CLIP embedding (E,) float32, L2-normalized.
func runEmbed(args []string, stdout, stderr io.Writer) error {
	c := newImageCmd("embed")
	if err := c.parse(args, stdout, 0); err != nil {
		return err
	}
	img, err := c.imageToNpy()
	if err != nil {
		return err
	}
	t, _, err := c.open()
	if err != nil {
		return err
	}
	defer t.Close()
	start := time.Now()
	emb, err := t.EmbedImages(context.Background(), []image.Image{img})
	if err != nil {
		if strings.Contains(err.Error(), "missing tensor") {
			// "embed: image model: missing tensor projection.weight (no CLIP image head ...)"
			return fmt.Errorf("%s: %s", c.ef.checkpoint, strings.TrimPrefix(err.Error(), "embed: "))
		}
		return c.imageErr(err)
	}
	el := time.Since(start)
	if err := npy.WriteFloat32(c.out, []int{len(emb)}, emb); err != nil {
		return pathErr(c.out, err)
	}
	fmt.Fprintf(stderr, "embedded %s (%s) -> %s float32 (%d,) in %s (%s)\n", c.in, imgSize(img), c.out, len(emb), secs(el), t.Device())
	return nil
}
