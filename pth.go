package unitok

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/unitok/unitok/internal/ckpt"
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

// ConvertToSafetensors writes the tokenizer core of the checkpoint at in
// (a PyTorch zip checkpoint such as unitok_tokenizer.pth, or safetensors) to
// a safetensors file at out: exactly the tensors the core uses, under
// UniTok's names and in the source's order, each in its stored dtype (F32, F16 or BF16; anything else
// becomes F32). The metadata records num_heads when the source knows it,
// causal, source (the input's base name) and the source's args.* values.
// The core is checked (every tensor present and well shaped) before
// anything is written; the output appears atomically or not at all.
// WithHeads and WithCausal record those values in the output's metadata,
// overriding what the source says (a .pth cannot tell causal from full).
func ConvertToSafetensors(in, out string, opts ...Option) error {
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
	needed := map[string]bool{}
	for _, want := range SynthTensorInfos(c) {
		needed[want.Name] = true
	}
	var tensors []safetensors.Tensor
	for _, info := range r.Tensors() { // file order
		if !needed[info.Name] {
			continue // other quantizer buffers (vocab_usage, ...)
		}
		t, err := coreTensorForWrite(r, info)
		if err != nil {
			return badInput(op, "%s: tensor %s: %v", in, info.Name, err)
		}
		tensors = append(tensors, t)
	}
	outMeta := map[string]string{"format": "pt", "source": filepath.Base(in)}
	for k, v := range meta {
		if k == "num_heads" || k == "causal" || strings.HasPrefix(k, "args.") {
			outMeta[k] = v
		}
	}
	if err := safetensors.Write(out, tensors, outMeta); err != nil {
		return badInput(op, "%s: %v", out, err)
	}
	return nil
}

// coreTensorForWrite returns a tensor's bytes in its stored dtype when that
// is a float type the core reads, else converted to F32.
func coreTensorForWrite(r ckpt.Reader, info ckpt.Info) (safetensors.Tensor, error) {
	switch info.DType {
	case "F32", "F16", "BF16":
		var raw []byte
		var err error
		switch x := r.(type) {
		case *pth.File:
			raw, _, err = x.ReadRaw(info.Name)
		case *safetensors.File:
			var b []byte
			if b, err = x.Raw(info.Name); err == nil {
				raw = append([]byte(nil), b...) // Raw may alias a mapping closed with r
			}
		}
		if err != nil {
			return safetensors.Tensor{}, err
		}
		if raw != nil {
			return safetensors.Tensor{Name: info.Name, DType: info.DType, Shape: append([]int(nil), info.Shape...), Data: raw}, nil
		}
	}
	v, err := r.ReadFloat32(info.Name)
	if err != nil {
		return safetensors.Tensor{}, err
	}
	return safetensors.F32Tensor(info.Name, info.Shape, v), nil
}
