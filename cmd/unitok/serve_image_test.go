package main

import (
	"context"
	"image"
	"math"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/api"
	"github.com/unitok/unitok/batch"
	"github.com/unitok/unitok/internal/imageio"
	"github.com/unitok/unitok/server"
)

// The image routes over the real image model (the tiny .pth in UniTok's
// released layout) and the server's real decoder: tokenize, detokenize and
// embed over HTTP equal the library's own calls, bit for bit.
func TestServeImageRoutesMatchLibrary(t *testing.T) {
	tok, err := unitok.Open("../../testdata/image/tiny_pth/unitok_tiny_bf16.pth", unitok.WithDevice("cpu"))
	require.NoError(t, err)
	defer tok.Close()
	require.NoError(t, tok.ImageModel())
	srv, err := server.New(server.Config{Engine: tok, DecodeImage: decodeImage, EncodePNG: encodePNG,
		Batch: batch.Options{MaxWait: time.Millisecond}})
	require.NoError(t, err)
	ts := httptest.NewServer(srv.Handler())
	defer func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	}()
	cl := api.NewClient(ts.URL)
	ctx := context.Background()

	var imgs []image.Image
	for _, p := range []string{"../../testdata/images/inputs/chelsea_full.png", "../../testdata/images/inputs/coffee.png"} {
		im, _, err := imageio.Load(p, 0)
		require.NoError(t, err)
		imgs = append(imgs, im)
	}

	want, err := tok.TokenizeImages(ctx, imgs)
	require.NoError(t, err)
	got, err := cl.TokenizeImages(ctx, imgs)
	require.NoError(t, err)
	require.Equal(t, want, got)

	B := len(imgs)
	wantD, err := tok.Detokenize(ctx, want, B)
	require.NoError(t, err)
	gotD, err := cl.Detokenize(ctx, want, B)
	require.NoError(t, err)
	require.Equal(t, len(wantD), len(gotD))
	for i := range wantD {
		if math.Float32bits(wantD[i]) != math.Float32bits(gotD[i]) {
			t.Fatalf("detokenize differs at %d: %g vs %g", i, gotD[i], wantD[i])
		}
	}

	wantE, err := tok.EmbedImages(ctx, imgs)
	require.NoError(t, err)
	gotE, err := cl.EmbedImages(ctx, imgs)
	require.NoError(t, err)
	require.Equal(t, wantE, gotE)
}
