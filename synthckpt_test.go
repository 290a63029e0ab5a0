package unitok

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/model/vitamin"
	"github.com/unitok/unitok/internal/safetensors"
)

// TestWriteSynthImageCheckpoint writes a whole synthetic UniTok model (the
// real core widths, the image path of UNITOK_SYNTH_MODEL: vitamin_base or
// vitamin_large, CLIP head included) as F32 safetensors to
// UNITOK_SYNTH_OUT, streaming one tensor at a time. It is a tool, not a
// check: the peak-RSS measurements of docs/notes/mmap.md start from this
// file (and bench/synth_pth.py turns it into a torch.save checkpoint).
func TestWriteSynthImageCheckpoint(t *testing.T) {
	out := os.Getenv("UNITOK_SYNTH_OUT")
	if out == "" {
		t.Skip("set UNITOK_SYNTH_OUT=/path/model.safetensors (and UNITOK_SYNTH_MODEL) to write a synthetic checkpoint")
	}
	model := os.Getenv("UNITOK_SYNTH_MODEL")
	if model == "" {
		model = "vitamin_base"
	}
	vc, ok := vitamin.Preset(model, 0)
	require.True(t, ok, "unknown UNITOK_SYNTH_MODEL %q", model)
	vc.EmbedDim = vc.Width
	c := realConfig
	c.InDim, c.NumHeads = vc.Width, vc.Width/c.LatentDim
	r := newSynthImageReader(c, vc, 7)
	var heads []safetensors.Tensor
	for _, info := range r.Tensors() {
		heads = append(heads, safetensors.Tensor{Name: info.Name, DType: "F32", Shape: info.Shape})
	}
	meta := map[string]string{"args.model": vc.Name}
	for k, v := range r.Metadata() {
		meta[k] = v
	}
	err := safetensors.WriteStream(out, heads, meta, func(i int) ([]byte, error) {
		v, err := r.ReadFloat32(heads[i].Name)
		if err != nil {
			return nil, err
		}
		return safetensors.F32Tensor(heads[i].Name, heads[i].Shape, v).Data, nil
	})
	require.NoError(t, err)
}
