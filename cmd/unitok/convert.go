package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/unitok/unitok"
)

// runConvert writes the tokenizer core of a checkpoint (typically UniTok's
// released unitok_tokenizer.pth) to a safetensors file, atomically.
// --causal and --heads are recorded in the output's metadata, since a .pth
// cannot tell causal from full attention.
func runConvert(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("convert")
	var causal optBool
	fs.Var(&causal, "causal", "record causal attention (the first UniTok release); default full")
	heads := fs.Int("heads", 0, "record the number of attention heads")
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
	if err := unitok.ConvertToSafetensors(in, out, opts...); err != nil {
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
	fmt.Fprintf(stderr, "converted %s -> %s: %d core tensors, %.1f MB, C=%d D=%d K=%d V=%d H=%d causal=%v\n",
		in, out, len(info.Tensors), float64(st.Size())/1e6, c.InDim, c.LatentDim, c.NumCodebooks, c.CodebookSize, c.NumHeads, c.Causal)
	return nil
}
