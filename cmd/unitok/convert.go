package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/unitok/unitok"
)

// runConvert writes the whole model unitok uses from a checkpoint
// (typically UniTok's released .pth) to a safetensors file, atomically:
// the tokenizer core and the image path (ViTamin encoder, decoder, CLIP
// image head); --core writes the core only. The head count, causal and the
// image architecture are recorded in the output's metadata (--causal and
// --heads override them, since a .pth cannot tell causal from full
// attention).
func runConvert(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("convert")
	var causal optBool
	fs.Var(&causal, "causal", "record causal attention (the first UniTok release); default full")
	heads := fs.Int("heads", 0, "record the number of attention heads")
	coreOnly := fs.Bool("core", false, "write only the tokenizer core (quant_proj, quantizer, post_quant_proj), not the image path")
	pos, err := parseFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("convert: want two arguments, IN.pth OUT.safetensors (got %d)", len(pos))
	}
	in, out := pos[0], pos[1]
	if !strings.HasSuffix(out, ".safetensors") {
		return fmt.Errorf("convert: output %s must end in .safetensors", out)
	}
	if abs1, _ := filepath.Abs(in); abs1 != "" {
		if abs2, _ := filepath.Abs(out); abs1 == abs2 {
			return fmt.Errorf("convert: output %s is the input", out)
		}
	}
	var opts []unitok.Option
	if causal.v != nil {
		opts = append(opts, unitok.WithCausal(*causal.v))
	}
	if *heads < 0 {
		return fmt.Errorf("convert: --heads %d: want a positive number", *heads)
	}
	if *heads > 0 {
		opts = append(opts, unitok.WithHeads(*heads))
	}
	convert := unitok.ConvertToSafetensors
	if *coreOnly {
		convert = unitok.ConvertCoreToSafetensors
	}
	if err := convert(in, out, opts...); err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	info, err := unitok.InspectCheckpoint(out)
	if err != nil {
		return err
	}
	c := info.Config
	image := "image path: none (--core)"
	if !*coreOnly {
		image = "image path: none in the input, core only"
		if im, err := unitok.InspectImage(in); err == nil && im.Error != "" {
			image = fmt.Sprintf("image path: none in the input (%s), core only", im.Error)
		}
		if im, err := unitok.InspectImage(out); err == nil && im.Error == "" {
			a := im.Arch
			n := 0
			for _, k := range info.SortedIgnoredGroups() {
				n += info.Ignored[k]
			}
			image = fmt.Sprintf("image path: %d tensors, %s %dx%d, %d ViT heads", n, a.Model, a.ImageSize, a.ImageSize, a.Heads)
			if a.EmbedDim == 0 {
				image += ", no CLIP image head"
			}
		}
	}
	fmt.Fprintf(stderr, "converted %s -> %s: %d core tensors, %.1f MB, C=%d D=%d K=%d V=%d H=%d causal=%v; %s\n",
		in, out, len(info.Tensors), float64(st.Size())/1e6, c.InDim, c.LatentDim, c.NumCodebooks, c.CodebookSize, c.NumHeads, c.Causal, image)
	return nil
}
