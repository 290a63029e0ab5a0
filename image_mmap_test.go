package unitok

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/mmapfile"
	"github.com/unitok/unitok/internal/safetensors"
)

// writeTinySafetensors writes the tiny fixture's whole model (core and
// image path, F32) and returns its path and core config.
func writeTinySafetensors(t *testing.T) (string, Config) {
	t.Helper()
	f := readImageFixture(t, "testdata/image/tiny")
	c, vc := f.configs(t)
	r := newSynthImageReader(c, vc, f.Seed)
	var ts []safetensors.Tensor
	for _, info := range r.Tensors() {
		v, err := r.ReadFloat32(info.Name)
		require.NoError(t, err)
		ts = append(ts, safetensors.F32Tensor(info.Name, info.Shape, v))
	}
	path := filepath.Join(t.TempDir(), "tiny.safetensors")
	require.NoError(t, safetensors.Write(path, ts, map[string]string{"num_heads": "4", "vit_heads": "2", "img_size": "64"}))
	return path, c
}

// TestImageLoadTruncatedUnderneath: a checkpoint truncated after it was
// mapped (a trainer's torch.save rewriting it in place) fails the image
// load with an error, not a SIGBUS that kills the process.
func TestImageLoadTruncatedUnderneath(t *testing.T) {
	if !mmapfile.Supported {
		t.Skip("no mapping on this platform")
	}
	path, c := writeTinySafetensors(t)
	r, err := safetensors.Open(path)
	require.NoError(t, err)
	defer r.Close()
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, st.Size()/3))
	im := loadImageModel(r, c, 1)
	require.Error(t, im.err)
	require.Contains(t, im.err.Error(), "truncated or rewritten while it loaded")
	require.Nil(t, im.enc)
}
