package unitok

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/unitok/unitok/internal/ckpt"
	"github.com/unitok/unitok/internal/model/vitamin"
	"github.com/unitok/unitok/internal/pth"
	"github.com/unitok/unitok/internal/safetensors"
)

// PyTorch zip checkpoints (torch.save since 1.6, e.g. UniTok's released
// unitok_tokenizer.pth) are recognized by the zip magic and read by
// internal/pth, which never executes pickled code.
func init() {
	checkpointOpeners = append(checkpointOpeners, openPyTorchZip)
}

var zipMagic = []byte("PK\x03\x04")

func openPyTorchZip(path string, head []byte) (ckpt.Reader, bool, error) {
	if !bytes.HasPrefix(head, zipMagic) {
		return nil, false, nil
	}
	f, err := pth.OpenWith(path, pth.Options{Core: IsCoreTensor})
	if err != nil {
		return nil, true, err
	}
	return f, true, nil
}

// CheckpointInfo describes a checkpoint for `unitok inspect`: what the core
// needs, what the file holds, and what is missing. Nothing but headers (and
// for PyTorch checkpoints, the pickle) is read.
type CheckpointInfo struct {
	Path   string
	Format string // "safetensors" or "pytorch-zip"
	// Config is inferred from tensor shapes and metadata (NumHeads falls
	// back to C/D, Causal to false, as Open would). Valid only when
	// ConfigError is empty.
	Config      Config
	ConfigError string
	// HeadsKnown reports whether the checkpoint records num_heads.
	HeadsKnown bool
	// HeadsSource says where Config.NumHeads came from: HeadsFromMetadata
	// or HeadsFromWidths ("C/D, as UniTok's UniTok class builds it").
	HeadsSource string
	// Tensors lists the core tensors present, in file order.
	Tensors []ckpt.Info
	// Missing lists required core tensors absent from the file; Misshapen
	// lists core tensors whose shape does not fit Config ("name: have
	// [a b], want [c d]").
	Missing   []string
	Misshapen []string
	// Ignored counts non-core tensors per top-level group
	// ({"encoder": 402, "decoder": 220, ...}).
	Ignored  map[string]int
	Metadata map[string]string
}

// InspectCheckpoint opens the checkpoint at path and reports its config,
// core tensors, missing tensors, ignored groups and metadata. A file that
// cannot be opened is an error; an incomplete core is reported in the info.
func InspectCheckpoint(path string) (*CheckpointInfo, error) {
	r, err := openCheckpoint(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	info := &CheckpointInfo{Path: path, Format: "safetensors", Ignored: map[string]int{}, Metadata: r.Metadata()}
	if pf, ok := r.(*pth.File); ok {
		info.Format = "pytorch-zip"
		info.Ignored = pf.Ignored()
	}
	s := &tensorSet{r: r, infos: map[string]ckpt.Info{}}
	for _, t := range r.Tensors() {
		if !IsCoreTensor(t.Name) {
			g, _, _ := strings.Cut(t.Name, ".")
			info.Ignored[g]++
			continue
		}
		info.Tensors = append(info.Tensors, t)
		s.infos[t.Name] = t
	}
	_, info.HeadsKnown = info.Metadata["num_heads"]
	c, src, err := inferConfig(s, info.Metadata, 0)
	if err != nil {
		info.ConfigError = err.Error()
		for _, name := range []string{keyQuantProj + ".proj.weight", fmt.Sprintf(keyCodebookFmt, 0)} {
			if _, ok := s.infos[name]; !ok {
				info.Missing = append(info.Missing, name)
			}
		}
		return info, nil
	}
	info.Config, info.HeadsSource = c, src
	if err := c.Validate(); err != nil {
		info.ConfigError = err.Error()
	}
	info.Missing, info.Misshapen = checkCoreTensors(s, c)
	return info, nil
}

// checkCoreTensors compares the file's core tensors with what config c
// needs. Shapes do not depend on the head count.
func checkCoreTensors(s *tensorSet, c Config) (missing, misshapen []string) {
	for _, want := range SynthTensorInfos(c) {
		have, ok := s.infos[want.Name]
		if !ok {
			if !strings.HasSuffix(want.Name, ".zero_k_bias") { // optional buffer
				missing = append(missing, want.Name)
			}
			continue
		}
		if !equalShape(have.Shape, want.Shape) {
			misshapen = append(misshapen, fmt.Sprintf("%s: have %v, want %v", want.Name, have.Shape, want.Shape))
		}
	}
	return missing, misshapen
}

// SortedIgnoredGroups returns the group names of CheckpointInfo.Ignored in
// order, for printing.
func (ci *CheckpointInfo) SortedIgnoredGroups() []string {
	out := make([]string, 0, len(ci.Ignored))
	for k := range ci.Ignored {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ConvertToSafetensors writes the whole model unitok uses from the
// checkpoint at in (a PyTorch zip checkpoint such as UniTok's released .pth,
// or safetensors) to a safetensors file at out: the tokenizer core
// (quant_proj, quantizer codebooks, post_quant_proj) and, when the input
// has one, the image path (the ViTamin encoder and decoder, and the CLIP
// image head fc_norm and projection when present). The text tower,
// logit_scale and training buffers are left out. Tensors keep UniTok's
// names, the source's order and their stored dtype (F32, F16 or BF16;
// anything else becomes F32, as the loaders would read it), so the output
// loads to exactly the model the input loads to.
//
// The metadata records what the loaders would otherwise take from the
// input or from defaults: num_heads (the head count the input gives, or
// WithHeads), causal (the input's, or WithCausal; a .pth cannot tell causal
// from full attention), and for the image path model, vit_heads and
// img_size; plus source (the input's base name) and the input's args.*
// values. The image groups (encoder.*, decoder.*, fc_norm.*, projection.*)
// are written whole, encoder.pos_embed (unused) included. An input without
// a ViTamin encoder (no encoder.patch_embed.backbone.stem.conv1.weight)
// gives a core-only file; an image path that is present but incomplete or
// misshapen is refused
// (ConvertCoreToSafetensors writes the core alone). Everything is checked
// before anything is written, and tensors are streamed one at a time; the
// output appears atomically or not at all.
func ConvertToSafetensors(in, out string, opts ...Option) error {
	return convertCheckpoint(in, out, false, opts)
}

// ConvertCoreToSafetensors is ConvertToSafetensors writing only the
// tokenizer core: quant_proj, the quantizer codebooks and post_quant_proj.
// Such a file serves features <-> codes; Tokenizer.ImageModel says what
// it lacks for images.
func ConvertCoreToSafetensors(in, out string, opts ...Option) error {
	return convertCheckpoint(in, out, true, opts)
}

// vitaminStem is the first tensor of UniTok's ViTamin encoder.
const vitaminStem = "encoder.patch_embed.backbone.stem.conv1.weight"

// imageGroups are the top-level state-dict groups of UniTok's image path.
var imageGroups = []string{"encoder.", "decoder.", "fc_norm.", "projection."}

func isImageTensor(name string) bool {
	for _, g := range imageGroups {
		if strings.HasPrefix(name, g) {
			return true
		}
	}
	return false
}

func convertCheckpoint(in, out string, coreOnly bool, opts []Option) error {
	const op = "convert"
	r, err := openCheckpoint(in)
	if err != nil {
		return err
	}
	defer r.Close()
	s := &tensorSet{r: r, infos: map[string]ckpt.Info{}}
	for _, t := range r.Tensors() {
		if IsCoreTensor(t.Name) {
			s.infos[t.Name] = t
		}
	}
	meta := map[string]string{}
	for k, v := range r.Metadata() {
		meta[k] = v
	}
	o := buildOptions(opts)
	if o.heads > 0 {
		meta["num_heads"] = fmt.Sprint(o.heads)
	}
	if o.causal != nil {
		meta["causal"] = fmt.Sprint(*o.causal)
	}
	c, _, err := inferConfig(s, meta, 0)
	if err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	missing, misshapen := checkCoreTensors(s, c)
	if len(missing) > 0 {
		return badInput(op, "%s: missing core tensor %s (and %d more)", in, missing[0], len(missing)-1)
	}
	if len(misshapen) > 0 {
		return badInput(op, "%s: tensor %s", in, misshapen[0])
	}
	// needed: the tensors to write, true for those unitok reads.
	needed := map[string]bool{}
	for _, want := range SynthTensorInfos(c) {
		needed[want.Name] = true
	}
	outMeta := map[string]string{"format": "pt", "source": filepath.Base(in)}
	for k, v := range meta {
		if strings.HasPrefix(k, "args.") {
			outMeta[k] = v
		}
	}
	outMeta["num_heads"] = fmt.Sprint(c.NumHeads)
	outMeta["causal"] = fmt.Sprint(c.Causal)

	src := newImageSource(r) // every tensor, core or not, in file order below
	all := r.Tensors()
	if pf, ok := r.(*pth.File); ok {
		all = pf.AllTensors()
	}
	if !coreOnly {
		// The ViTamin stem marks an image path; without it (a core-only
		// file, or a stand-in encoder) there is none to write, as there is
		// none to load.
		if _, ok := src.infos[vitaminStem]; ok {
			names, err := convertImageTensors(src, meta, c, outMeta)
			if err != nil {
				return badInput(op, "%s: image path: %v (--core writes the tokenizer core alone)", in, err)
			}
			for _, n := range names {
				needed[n] = true
			}
			// The rest of UniTok's image groups (encoder.pos_embed, which
			// UniTok keeps at zero and unitok does not read) go along, so
			// the file holds those groups whole.
			for _, t := range all {
				if _, ok := needed[t.Name]; !ok && isImageTensor(t.Name) {
					needed[t.Name] = false
				}
			}
		}
	}
	var heads []safetensors.Tensor
	for _, info := range all { // file order
		read, ok := needed[info.Name]
		if !ok {
			continue // other quantizer buffers (vocab_usage, ...), text tower, logit_scale
		}
		dt := info.DType
		switch {
		case dt == "F32" || dt == "F16" || dt == "BF16":
		case !read && safetensors.DTypeSize(dt) > 0: // not read by unitok: kept as stored
		default:
			dt = "F32" // as the loaders read it
		}
		heads = append(heads, safetensors.Tensor{Name: info.Name, DType: dt, Shape: append([]int(nil), info.Shape...)})
	}
	err = safetensors.WriteStream(out, heads, outMeta, func(i int) ([]byte, error) {
		t, err := tensorForWrite(r, heads[i])
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %v", in, heads[i].Name, err)
		}
		return t, nil
	})
	if err != nil {
		return badInput(op, "%s: %v", out, err)
	}
	return nil
}

// convertImageTensors checks the image path of src as the loader would
// (architecture from shapes and meta, width equal to the core's C, every
// encoder and decoder tensor present and well shaped; the CLIP head is
// optional), records its architecture in outMeta, and returns the names of
// the image tensors to write.
func convertImageTensors(src *imageSource, meta map[string]string, core Config, outMeta map[string]string) ([]string, error) {
	model, heads, imgSize := imageMeta(meta)
	vc, err := vitamin.Infer(src, model, heads, imgSize)
	if err != nil {
		return nil, err
	}
	if vc.Width != core.InDim {
		return nil, fmt.Errorf("the encoder is %d wide but quant_proj takes %d features", vc.Width, core.InDim)
	}
	if vc.Tokens() <= 0 {
		return nil, fmt.Errorf("image size %d gives no tokens", vc.ImgSize)
	}
	missing, misshapen := imageTensorCheck(src, vc, nil)
	var body []string // the head is optional, as for the loader
	for _, m := range missing {
		if !strings.HasPrefix(m, "fc_norm.") && !strings.HasPrefix(m, "projection.") {
			body = append(body, m)
		}
	}
	if d := describeImageProblems(body, misshapen); d != "" {
		return nil, fmt.Errorf("%s (%s)", d, vc.Name)
	}
	var names []string
	for _, part := range [][]vitamin.Tensor{vc.EncoderTensors(), vc.DecoderTensors(), vc.HeadTensors()} {
		for _, t := range part {
			if _, ok := src.infos[t.Name]; ok {
				names = append(names, t.Name)
			}
		}
	}
	outMeta["model"] = vc.Name
	outMeta["vit_heads"] = fmt.Sprint(vc.Heads)
	outMeta["img_size"] = fmt.Sprint(vc.ImgSize)
	return names, nil
}

// tensorForWrite returns the bytes of tensor want.Name in dtype want.DType:
// the stored bytes when that is the stored dtype, else float32 as the
// loaders read it.
func tensorForWrite(r ckpt.Reader, want safetensors.Tensor) ([]byte, error) {
	switch x := r.(type) {
	case *pth.File:
		raw, info, err := x.ReadRaw(want.Name)
		if err != nil {
			return nil, err
		}
		if info.DType == want.DType {
			return raw, nil
		}
	case *safetensors.File:
		if info, ok := x.Info(want.Name); ok && info.DType == want.DType {
			return x.Raw(want.Name) // valid until r is closed, after the write
		}
	}
	v, err := r.ReadFloat32(want.Name)
	if err != nil {
		return nil, err
	}
	return safetensors.F32Tensor(want.Name, want.Shape, v).Data, nil
}
