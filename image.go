package unitok

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/unitok/unitok/internal/ckpt"
	"github.com/unitok/unitok/internal/cpu"
	"github.com/unitok/unitok/internal/engine"
	"github.com/unitok/unitok/internal/model/vitamin"
	"github.com/unitok/unitok/internal/pth"
	"github.com/unitok/unitok/internal/safetensors"
)

// imageModel is UniTok's image path around the core: the ViTamin encoder,
// the ViTaminDecoder and the CLIP image head, on the CPU engine (the only
// engine with the image ops today; on --device cuda the core still runs on
// the GPU).
type imageModel struct {
	cfg  vitamin.Config
	eng  engine.Engine
	enc  *vitamin.Encoder
	dec  *vitamin.Decoder
	head *vitamin.Head
	// digest covers every image tensor read (ImageWeightsDigest).
	digest uint64
	// views counts the tensors read as views of the file's mapping.
	views int
	// err says what is missing or wrong when enc or dec is nil; headErr
	// likewise for head.
	err, headErr error
}

// trim drops the activations the engine keeps for the next call (nil-safe).
func (im *imageModel) trim() {
	if im != nil && im.eng != nil {
		engine.Trim(im.eng)
	}
}

// imageSource serves a checkpoint's tensors to the model loaders.
//
// Where the reader can (ckpt.Viewer: a mapped .pth or safetensors file), Get
// returns views of the file's mapping rather than copies. That is safe
// because the engine never keeps a slice it is given (engine.Engine: Linear,
// Conv, Vector and FromHost copy or repack their arguments) and the model
// loaders use each tensor right after Get; the reader, and its mapping, is
// closed once the model is built (Tokenizer.img). The mapped pages of a
// view are released a few Gets later (releaseLag), so the resident file
// pages stay bounded while the engine's own copies grow: peak memory is
// the engine's weights plus a few tensors, not twice the checkpoint.
//
// A source is used by one loader at a time; fork gives another loader its
// own (when the reader allows concurrent reads) and join takes its record
// back, in order, so the digest does not depend on the interleaving.
type imageSource struct {
	r     ckpt.Reader
	v     ckpt.Viewer // r, when it serves views; else nil
	infos map[string]ckpt.Info
	// concurrent: r is safe for concurrent reads (pth.File, safetensors.File).
	concurrent bool
	// read records every tensor Get returned, in the loaders' order, for
	// the digest.
	read []readRecord
	// viewed lists the aliased tensors not yet released, oldest first.
	viewed []string
	views  int // aliased tensors served
}

// readRecord is what the weights digest needs of one tensor read.
type readRecord struct {
	name  string
	shape []int
	n     int
	lanes [4]uint64
}

// releaseLag is how many of the latest views stay resident: a loader uses
// at most a layer's weight and bias (two Gets) before uploading them, so a
// released view is never read again (if it were, it would only be read
// back from the file).
const releaseLag = 4

func newImageSource(r ckpt.Reader) *imageSource {
	if k, ok := r.(keepOpen); ok {
		r = k.Reader // views stay valid while the owner keeps it open
	}
	s := &imageSource{r: r, infos: map[string]ckpt.Info{}}
	s.v, _ = r.(ckpt.Viewer)
	switch r.(type) {
	case *pth.File, *safetensors.File:
		s.concurrent = true
	}
	list := r.Tensors()
	if pf, ok := r.(*pth.File); ok {
		list = pf.AllTensors()
	}
	for _, t := range list {
		s.infos[t.Name] = t
	}
	return s
}

func (s *imageSource) Shape(name string) ([]int, bool) {
	t, ok := s.infos[name]
	return t.Shape, ok
}

func (s *imageSource) Get(name string, shape ...int) ([]float32, error) {
	t, ok := s.infos[name]
	if !ok {
		return nil, fmt.Errorf("missing tensor %s", name)
	}
	if !equalShape(t.Shape, shape) {
		return nil, fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, shape)
	}
	var v []float32
	var err error
	aliased := false
	if s.v != nil {
		v, aliased, err = s.v.ViewFloat32(name)
	} else {
		v, err = s.r.ReadFloat32(name)
	}
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %v", name, err)
	}
	s.read = append(s.read, readRecord{name: name, shape: shape, n: len(v), lanes: digestLanes(v)})
	if aliased {
		s.views++
		s.viewed = append(s.viewed, name)
		if len(s.viewed) > releaseLag {
			s.v.Release(s.viewed[0])
			s.viewed = s.viewed[1:]
		}
	}
	return v, nil
}

// fork returns a source over the same reader with its own record, for a
// loader running beside s's.
func (s *imageSource) fork() *imageSource {
	return &imageSource{r: s.r, v: s.v, infos: s.infos, concurrent: s.concurrent}
}

// join appends what c read (after everything s read) and takes over its
// unreleased views.
func (s *imageSource) join(c *imageSource) {
	s.read = append(s.read, c.read...)
	s.viewed = append(s.viewed, c.viewed...)
	s.views += c.views
}

// digest folds every tensor read into ImageWeightsDigest's value, in order.
func (s *imageSource) digest() uint64 {
	var d uint64
	for _, r := range s.read {
		d = digestFold(d, r.name, r.shape, r.n, r.lanes)
	}
	return d
}

// releaseAll releases the pages of every view still resident (the model is
// built; the engine holds its own copies).
func (s *imageSource) releaseAll() {
	for _, name := range s.viewed {
		s.v.Release(name)
	}
	s.viewed = nil
}

// imageMeta reads the architecture hints of a checkpoint: the model name
// (args.model or metadata "model"), ViT heads ("vit_heads") and image size
// (args.img_size or "img_size").
func imageMeta(meta map[string]string) (model string, heads, imgSize int) {
	pick := func(keys ...string) string {
		for _, k := range keys {
			if v, ok := meta[k]; ok {
				return strings.Trim(strings.TrimSpace(v), `'"`)
			}
		}
		return ""
	}
	model = pick("args.model", "model")
	heads, _ = strconv.Atoi(pick("vit_heads"))
	imgSize, _ = strconv.Atoi(pick("args.img_size", "img_size"))
	return
}

// loadImageModel builds the image path from r; it never fails: what is
// missing is recorded and reported by ImageModel and the image calls.
func loadImageModel(r ckpt.Reader, core Config, threads int) *imageModel {
	src := newImageSource(r)
	model, heads, imgSize := imageMeta(r.Metadata())
	im := &imageModel{eng: cpu.New(threads)}
	c, err := vitamin.Infer(src, model, heads, imgSize)
	im.cfg = c
	if err != nil {
		im.err = badInput("image model", "%v", err)
		im.headErr = im.err
		return im
	}
	return im.load(src, core)
}

func (im *imageModel) load(src *imageSource, core Config) *imageModel {
	defer src.releaseAll()
	c := im.cfg
	fail := func(err error) *imageModel {
		im.enc, im.dec, im.head = nil, nil, nil
		im.err = badInput("image model", "%v", err)
		im.headErr = im.err
		return im
	}
	if c.Width != core.InDim {
		return fail(fmt.Errorf("the encoder is %d wide but quant_proj takes %d features", c.Width, core.InDim))
	}
	if c.Tokens() <= 0 {
		return fail(fmt.Errorf("image size %d gives no tokens", c.ImgSize))
	}
	// The encoder and the decoder are loaded side by side when the reader
	// allows it (the engine's uploads are safe for concurrent use): loading
	// is mostly packing, and the two halves are about the same size, so
	// two free cores can halve its wall time. The digest still folds the
	// encoder's tensors, then the decoder's, then the head's.
	encSrc, decSrc := src.fork(), src.fork()
	var err, decErr error
	var wg sync.WaitGroup
	loadDec := func() error {
		return guardFaults(func() (err error) { im.dec, err = vitamin.LoadDecoder(im.eng, decSrc, c); return })
	}
	if src.concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			decErr = loadDec()
		}()
	}
	err = guardFaults(func() (err error) { im.enc, err = vitamin.LoadEncoder(im.eng, encSrc, c); return })
	if src.concurrent {
		wg.Wait()
	} else if err == nil {
		decErr = loadDec()
	}
	src.join(encSrc)
	src.join(decSrc)
	if err == nil {
		err = decErr
	}
	if err != nil {
		missing, misshapen := imageTensorCheck(src, c, nil)
		var core []string // the head is optional here
		for _, m := range missing {
			if !strings.HasPrefix(m, "fc_norm.") && !strings.HasPrefix(m, "projection.") {
				core = append(core, m)
			}
		}
		if d := describeImageProblems(core, misshapen); d != "" {
			err = fmt.Errorf("%s (%s)", d, c.Name)
		}
		return fail(err)
	}
	if err = guardFaults(func() (err error) { im.head, err = vitamin.LoadHead(im.eng, src, c); return }); err != nil {
		im.headErr = badInput("image model", "%v", err)
	}
	im.digest, im.views = src.digest(), src.views
	return im
}

// guardFaults runs load with memory faults turned into an error: the
// weights are views of the checkpoint's mapping, and a file truncated or
// rewritten underneath while it loads (torch.save overwrites in place)
// would otherwise kill the process with SIGBUS. Other panics go on.
func guardFaults(load func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(interface{ Addr() uintptr }); ok && f.Addr() >= 4096 {
				err = fmt.Errorf("reading the checkpoint faulted at address %#x: was the file truncated or rewritten while it loaded?", f.Addr())
				return
			}
			panic(r)
		}
	}()
	return load()
}

var cudaImageNotice sync.Once

// imageState says how a Tokenizer loads its image path (once, on first
// use).
type imageState struct {
	once sync.Once
	open func() (ckpt.Reader, error) // nil: a core-only model (New)
}

// keepOpen is a reader whose Close does nothing (its owner closes it).
type keepOpen struct{ ckpt.Reader }

func (keepOpen) Close() error { return nil }

// img returns the image path, loading it into t.image on the first call;
// nil for a tokenizer built from a core Model, and after Close.
func (t *Tokenizer) img() *imageModel {
	t.imgLoad.once.Do(func() {
		if t.imgLoad.open == nil || t.closed.Load() {
			return
		}
		r, err := t.imgLoad.open()
		if err != nil {
			e := badInput("image model", "%v", err)
			t.image.Store(&imageModel{err: e, headErr: e})
			return
		}
		defer r.Close()
		im := loadImageModel(r, t.model.Config, t.opts.threads)
		if im.enc != nil && t.be.Name() != "cpu" {
			cudaImageNotice.Do(func() {
				fmt.Fprintf(os.Stderr, "unitok: the ViTamin encoder/decoder run on the CPU engine (no CUDA kernels yet); the tokenizer core runs on %s\n", t.be.Name())
			})
		}
		t.image.Store(im)
		if t.closed.Load() { // Close ran while loading: it may have stored nil before us
			t.image.Store(nil)
		}
	})
	return t.image.Load()
}

// ImageModel loads the image path (ViTamin encoder and decoder) if it is
// not loaded yet, and reports whether it is: nil if so, else an ErrBadInput error saying exactly what is
// missing or misshapen in the checkpoint (a core-only checkpoint still
// serves features <-> codes). EmbedPixels also needs the CLIP head
// (fc_norm, projection) and says so when it is absent.
func (t *Tokenizer) ImageModel() error {
	const op = "image model"
	if err := t.check(op); err != nil {
		return err
	}
	im := t.img()
	if im == nil {
		if t.closed.Load() {
			return closedErr(op)
		}
		return badInput(op, "no image model loaded (the tokenizer was built from a core model)")
	}
	if im.err != nil {
		return im.err
	}
	return nil
}

// ImageSize is the side of the square images the image path takes and
// returns (256 for UniTok), or 0 without an image model.
func (t *Tokenizer) ImageSize() int {
	if t == nil || t.closed.Load() {
		return 0
	}
	if im := t.img(); im != nil && im.enc != nil {
		return im.cfg.ImgSize
	}
	return 0
}

// ImageArch is the architecture of a checkpoint's image path (UniTok's
// ViTamin encoder, ViTaminDecoder and CLIP head).
type ImageArch struct {
	Model         string `json:"model"`      // "vitamin_large", "vitamin_base" or "custom"
	ImageSize     int    `json:"image_size"` // input side in pixels
	Tokens        int    `json:"tokens"`     // tokens per image, (ImageSize/16)^2
	StemWidth     int    `json:"stem_width"`
	StageWidths   []int  `json:"stage_widths"` // MbConvLNBlock stages
	StageDepths   []int  `json:"stage_depths"`
	Width         int    `json:"width"` // ViT width C
	Depth         int    `json:"depth"` // encoder ViT blocks
	Heads         int    `json:"heads"`
	MLPHidden     int    `json:"mlp_hidden"`
	DecoderDepth  int    `json:"decoder_depth"`  // decoder ViT blocks
	DecoderWidths []int  `json:"decoder_widths"` // after up_conv1 and up_conv3
	DecoderDepths []int  `json:"decoder_depths"` // InvMbConvLNBlocks in up_conv2, up_conv3
	EmbedDim      int    `json:"embed_dim"`      // CLIP projection width, 0 without a head
}

func archOf(c vitamin.Config) ImageArch {
	return ImageArch{Model: c.Name, ImageSize: c.ImgSize, Tokens: c.Tokens(), StemWidth: c.StemWidth,
		StageWidths: c.StageDims, StageDepths: c.StageDepths, Width: c.Width, Depth: c.Depth, Heads: c.Heads,
		MLPHidden: c.MLPHidden, DecoderDepth: c.DecDepth, DecoderWidths: c.DecDims, DecoderDepths: c.DecDepths, EmbedDim: c.EmbedDim}
}

// ImageArch returns the loaded image architecture; false without one.
func (t *Tokenizer) ImageArch() (ImageArch, bool) {
	if t == nil || t.closed.Load() {
		return ImageArch{}, false
	}
	if im := t.img(); im != nil && im.enc != nil {
		return archOf(im.cfg), true
	}
	return ImageArch{}, false
}

// ImageInfo describes a checkpoint's image path for `unitok inspect`.
type ImageInfo struct {
	// Arch is valid when Error is empty or names only missing tensors.
	Arch ImageArch `json:"arch"`
	// Error says why the image path cannot be inferred ("" when it can).
	Error string `json:"error,omitempty"`
	// Params counts the parameters of each part ("encoder", "decoder",
	// "head") that the architecture needs.
	Params map[string]int `json:"params"`
	// Missing and Misshapen list the image tensors absent from the file or
	// of the wrong shape ("name: have [..], want [..]").
	Missing   []string `json:"missing"`
	Misshapen []string `json:"misshapen"`
}

// InspectImage reports the image path of the checkpoint at path: its
// architecture, parameter counts, and what is missing. Only headers (and
// for PyTorch checkpoints, the pickle) are read.
func InspectImage(path string) (*ImageInfo, error) {
	r, err := openCheckpoint(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	src := newImageSource(r)
	model, heads, imgSize := imageMeta(r.Metadata())
	info := &ImageInfo{Params: map[string]int{}}
	c, err := vitamin.Infer(src, model, heads, imgSize)
	if err != nil {
		info.Error = err.Error()
		return info, nil
	}
	info.Arch = archOf(c)
	info.Missing, info.Misshapen = imageTensorCheck(src, c, info.Params)
	if info.Missing == nil {
		info.Missing = []string{}
	}
	if info.Misshapen == nil {
		info.Misshapen = []string{}
	}
	return info, nil
}

// imageTensorCheck compares the checkpoint's tensors with what config c
// needs, counting parameters per part into params (may be nil).
func imageTensorCheck(src *imageSource, c vitamin.Config, params map[string]int) (missing, misshapen []string) {
	for part, list := range map[string][]vitamin.Tensor{"encoder": c.EncoderTensors(), "decoder": c.DecoderTensors(), "head": c.HeadTensors()} {
		if part == "decoder" && c.DecDepth == 0 {
			missing = append(missing, "decoder.blocks.0.norm1.weight (no decoder)")
			continue
		}
		if part == "head" && c.EmbedDim == 0 {
			missing = append(missing, "projection.weight (no CLIP image head)")
			continue
		}
		for _, want := range list {
			n := 1
			for _, d := range want.Shape {
				n *= d
			}
			if params != nil {
				params[part] += n
			}
			have, ok := src.infos[want.Name]
			switch {
			case !ok:
				missing = append(missing, want.Name)
			case !equalShape(have.Shape, want.Shape):
				misshapen = append(misshapen, fmt.Sprintf("%s: have %v, want %v", want.Name, have.Shape, want.Shape))
			}
		}
	}
	sort.Strings(missing)
	sort.Strings(misshapen)
	return missing, misshapen
}

// describeImageProblems summarizes missing/misshapen image tensors in one
// line (the first few named).
func describeImageProblems(missing, misshapen []string) string {
	var parts []string
	name := func(s []string) string {
		if len(s) <= 3 {
			return strings.Join(s, ", ")
		}
		return strings.Join(s[:3], ", ") + fmt.Sprintf(", and %d more", len(s)-3)
	}
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("%d image tensors missing (%s)", len(missing), name(missing)))
	}
	if len(misshapen) > 0 {
		parts = append(parts, fmt.Sprintf("%d with the wrong shape (%s)", len(misshapen), name(misshapen)))
	}
	return strings.Join(parts, "; ")
}

func (t *Tokenizer) imageReady(op string, ctx context.Context) (*imageModel, error) {
	if err := t.check(op); err != nil {
		return nil, err
	}
	if err := t.ImageModel(); err != nil {
		if errors.Is(err, ErrClosed) { // closed since the check above
			return nil, closedErr(op)
		}
		return nil, &Error{Op: op, Msg: err.Error(), Kind: ErrBadInput}
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: op, Msg: err.Error(), Kind: err}
	}
	im := t.img()
	if im == nil { // closed since the check above
		return nil, closedErr(op)
	}
	return im, nil
}

func (im *imageModel) checkPixels(op string, x []float32, B int) error {
	S := im.cfg.ImgSize
	if B <= 0 {
		return badInput(op, "batch must be positive, got B=%d", B)
	}
	if len(x) != B*3*S*S {
		return badInput(op, "pixels: have %d values, want %d x 3 x %d x %d = %d", len(x), B, S, S, B*3*S*S)
	}
	return checkFinite(op, "pixels", x, S*S)
}

// encodeTokens runs the ViTamin encoder: x (B, 3, S, S) -> features (B, N, C).
func (t *Tokenizer) encodeTokens(ctx context.Context, op string, x []float32, B int) ([]float32, error) {
	im, err := t.imageReady(op, ctx)
	if err != nil {
		return nil, err
	}
	if err := im.checkPixels(op, x, B); err != nil {
		return nil, err
	}
	feats, err := im.enc.Encode(ctx, im.eng, x, B)
	if err != nil {
		return nil, &Error{Op: op, Msg: err.Error(), Kind: err}
	}
	return feats, nil
}

// TokenizePixels is UniTok's img_to_idx on preprocessed images: x is
// (B, 3, S, S) float32 in [-1, 1] (S = ImageSize), the result is codes
// (B, N, K) (or (B, K, N) with CodebookMajor), N = (S/16)^2. The encoder
// runs on the CPU engine, quant_proj and the quantizer on the tokenizer's
// device. ctx is checked between stages.
func (t *Tokenizer) TokenizePixels(ctx context.Context, x []float32, B int) ([]int32, error) {
	const op = "tokenize"
	feats, err := t.encodeTokens(ctx, op, x, B)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: op, Msg: err.Error(), Kind: err}
	}
	return t.Encode(feats, B, len(feats)/(B*t.model.InDim))
}

// Detokenize is UniTok's idx_to_img: codes (B, N, K) (or (B, K, N) with
// CodebookMajor) -> images (B, 3, S, S) float32 clamped to [-1, 1].
func (t *Tokenizer) Detokenize(ctx context.Context, codes []int32, B int) ([]float32, error) {
	const op = "detokenize"
	im, err := t.imageReady(op, ctx)
	if err != nil {
		return nil, err
	}
	feats, err := t.Decode(codes, B, im.cfg.Tokens())
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{Op: op, Msg: err.Error(), Kind: err}
	}
	img, err := im.dec.Decode(ctx, im.eng, feats, B, true)
	if err != nil {
		return nil, &Error{Op: op, Msg: err.Error(), Kind: err}
	}
	return img, nil
}

// EmbedPixels is UniTok's encode_image(normalize=True) on preprocessed
// images x (B, 3, S, S): the quantized tokens, mean over tokens, fc_norm,
// projection, L2-normalized; returns (B, E).
func (t *Tokenizer) EmbedPixels(ctx context.Context, x []float32, B int) ([]float32, error) {
	const op = "embed"
	im, err := t.imageReady(op, ctx)
	if err != nil {
		return nil, err
	}
	if im.head == nil {
		return nil, &Error{Op: op, Msg: im.headErr.Error(), Kind: ErrBadInput}
	}
	feats, err := t.encodeTokens(ctx, op, x, B)
	if err != nil {
		return nil, err
	}
	N := im.cfg.Tokens()
	codes, err := t.Encode(feats, B, N)
	if err != nil {
		return nil, err
	}
	tokens, err := t.Decode(codes, B, N)
	if err != nil {
		return nil, err
	}
	return im.head.Embed(im.eng, tokens, B, N, t.model.InDim), nil
}
