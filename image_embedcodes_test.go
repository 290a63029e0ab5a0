package unitok

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// One encoder pass gives exactly the codes of TokenizeImages and the
// embeddings of EmbedImages; the weights digest is stable across loads and
// moves with any weight.
func TestTokenizeAndEmbedImages(t *testing.T) {
	tok := openTinyPth(t)
	ctx := context.Background()
	imgs := loadPhotos(t, "chelsea_full", "coffee")
	codes, embs, err := tok.TokenizeAndEmbedImages(ctx, imgs)
	require.NoError(t, err)
	wantCodes, err := tok.TokenizeImages(ctx, imgs)
	require.NoError(t, err)
	wantEmbs, err := tok.EmbedImages(ctx, imgs)
	require.NoError(t, err)
	require.Equal(t, wantCodes, codes)
	require.Len(t, embs, len(wantEmbs))
	for i := range embs {
		require.Equal(t, math.Float32bits(wantEmbs[i]), math.Float32bits(embs[i]), "embedding value %d", i)
	}
	_, _, err = tok.TokenizeAndEmbedImages(ctx, nil)
	require.ErrorIs(t, err, ErrBadInput)

	d := tok.ImageWeightsDigest()
	// Data-prep manifests record the digest, so its value is pinned: the
	// loader may read tensors in any order or concurrently (encoder beside
	// decoder), views or copies, but folds them in the same order.
	require.Equal(t, "17c15603d46427eb", d)
	require.Equal(t, d, openTinyPth(t).ImageWeightsDigest())
	core, err := New(tok.Model())
	require.NoError(t, err)
	defer core.Close()
	require.Equal(t, "", core.ImageWeightsDigest())

	v := []float32{1, 2, 3, 4, 5}
	base := digestTensor(0, "a", []int{5}, v)
	for i := range v {
		w := append([]float32(nil), v...)
		w[i] = math.Nextafter32(w[i], 10)
		require.NotEqual(t, base, digestTensor(0, "a", []int{5}, w), "value %d", i)
	}
	require.NotEqual(t, base, digestTensor(0, "b", []int{5}, v))
	require.NotEqual(t, base, digestTensor(0, "a", []int{1, 5}, v))
}
