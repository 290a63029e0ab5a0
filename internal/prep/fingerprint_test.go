package prep

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/pth"
	"github.com/unitok/unitok/internal/safetensors"
)

const tinyPth = "../../testdata/image/tiny_pth/unitok_tiny_bf16.pth"

// The tar outputs' fingerprint covers the image encoder: the same
// checkpoint as .safetensors gives the same fingerprint, one image weight
// changed (core untouched) a different one, and so does the core alone.
func TestFingerprintCoversImageWeights(t *testing.T) {
	pf, err := pth.Open(tinyPth)
	require.NoError(t, err)
	defer pf.Close()
	write := func(path, bump string) {
		var ts []safetensors.Tensor
		found := false
		for _, info := range pf.AllTensors() {
			v, err := pf.ReadFloat32(info.Name)
			if err != nil {
				continue // not a float tensor
			}
			if info.Name == bump {
				v[0] += 1.0 / 64
				found = true
			}
			ts = append(ts, safetensors.F32Tensor(info.Name, info.Shape, v))
		}
		require.True(t, bump == "" || found, bump)
		require.NoError(t, safetensors.Write(path, ts, pf.Metadata()))
	}
	open := func(path string) *unitok.Tokenizer {
		tok, err := unitok.Open(path, unitok.WithDevice("cpu"), unitok.WithHeads(4))
		require.NoError(t, err)
		t.Cleanup(func() { tok.Close() })
		require.NoError(t, tok.ImageModel())
		return tok
	}
	dir := t.TempDir()
	same, bumped := filepath.Join(dir, "same.safetensors"), filepath.Join(dir, "bumped.safetensors")
	var encName string
	for _, info := range pf.AllTensors() {
		if strings.HasPrefix(info.Name, "encoder.") && strings.HasSuffix(info.Name, ".weight") {
			encName = info.Name
			break
		}
	}
	require.NotEmpty(t, encName)
	write(same, "")
	write(bumped, encName)

	ref := open(tinyPth)
	fp := Fingerprint(ref)
	require.Equal(t, fp, Fingerprint(open(same)))
	require.NotEqual(t, fp, Fingerprint(open(bumped)), encName)
	core, err := unitok.New(ref.Model())
	require.NoError(t, err)
	defer core.Close()
	require.NotEqual(t, fp, Fingerprint(core))
	// The core part alone is unchanged by the image weight.
	require.Equal(t, params(Encode, ref, &Options{}, "<u2"), params(Encode, open(bumped), &Options{}, "<u2"))
}
