package wds

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok/internal/npy"
)

const fakeN, fakeK, fakeV = 4, 3, 50

// fakeTokenize stands in for (*unitok.Tokenizer).TokenizeImages: codes
// (B, N, K) from the decoded pixels, so a test can recompute them.
func fakeTokenize(calls *atomic.Int32) TokenizeFunc {
	return func(ctx context.Context, imgs []image.Image) ([]int32, error) {
		if calls != nil {
			calls.Add(1)
		}
		out := make([]int32, 0, len(imgs)*fakeN*fakeK)
		for _, img := range imgs {
			out = append(out, fakeCodes(img)...)
		}
		return out, nil
	}
}

func fakeCodes(img image.Image) []int32 {
	b := img.Bounds()
	var out []int32
	for n := 0; n < fakeN; n++ {
		r, g, bl, _ := img.At(b.Min.X+n%b.Dx(), b.Min.Y).RGBA()
		for k, v := range []uint32{r, g, bl} {
			out = append(out, int32((v>>8+uint32(7*k))%fakeV))
		}
	}
	return out
}

func testImage(i int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, 8, 6))
	for y := 0; y < 6; y++ {
		for x := 0; x < 8; x++ {
			img.Set(x, y, color.RGBA{uint8(i*37 + x*11), uint8(i*5 + y*23), uint8(x * y * 3), 255})
		}
	}
	return img
}

func encodePNG(t *testing.T, img image.Image) []byte {
	var b bytes.Buffer
	require.NoError(t, png.Encode(&b, img))
	return b.Bytes()
}

func encodeJPEG(t *testing.T, img image.Image) []byte {
	var b bytes.Buffer
	require.NoError(t, jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}))
	return b.Bytes()
}

// parseCodes reads an (N, K) uint16 .npy member.
func parseCodes(t *testing.T, b []byte) ([]int, []int32) {
	t.Helper()
	h, err := npy.ParseHeader(b)
	require.NoError(t, err)
	require.Equal(t, npy.Uint16, h.DType)
	require.Equal(t, h.DataOffset+h.DataBytes(), len(b))
	var v []int32
	for i := h.DataOffset; i < len(b); i += 2 {
		v = append(v, int32(binary.LittleEndian.Uint16(b[i:])))
	}
	return h.Shape, v
}

// tokenizeInput is a shard of 11 samples: PNGs and JPEGs with captions
// and metadata, one sample without an image (s/004) and one whose JPEG is
// corrupt (s/007); images maps each good key to its decoded image.
func tokenizeInput(t *testing.T) ([]byte, map[string]image.Image) {
	var in bytes.Buffer
	w := NewWriter(&in)
	images := map[string]image.Image{}
	for i := 0; i < 11; i++ {
		key := fmt.Sprintf("s/%03d", i)
		s := &Sample{Key: key}
		s.Members = append(s.Members, Member{Ext: "txt", Data: []byte("caption " + key)})
		switch {
		case i == 4:
			// no image member
		case i == 7:
			s.Members = append(s.Members, Member{Ext: "jpg", Data: []byte("\xff\xd8 not really a jpeg")})
		case i%2 == 0:
			img := testImage(i)
			s.Members = append(s.Members, Member{Ext: "png", Data: encodePNG(t, img)})
			images[key] = img
		default:
			b := encodeJPEG(t, testImage(i))
			s.Members = append(s.Members, Member{Ext: "JPG", Data: b})
			dec, err := jpeg.Decode(bytes.NewReader(b))
			require.NoError(t, err)
			images[key] = dec
		}
		s.Members = append(s.Members, Member{Ext: "json", Data: []byte(fmt.Sprintf(`{"i":%d}`, i))})
		require.NoError(t, w.Write(s))
	}
	require.NoError(t, w.Close())
	src := in.Bytes()
	return src, images
}

func TestProcessWithFakeTokenizer(t *testing.T) {
	src, images := tokenizeInput(t)

	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprint("keep=", keep), func(t *testing.T) {
			var calls atomic.Int32
			var out bytes.Buffer
			res, err := Process(context.Background(), bytes.NewReader(src), &out, Options{
				Tokenize: fakeTokenize(&calls), K: fakeK, V: fakeV, Batch: 3, Keep: keep, Workers: 2})
			require.NoError(t, err)
			assert.Equal(t, 11, res.Samples)
			assert.Equal(t, 9, res.Written)
			assert.Equal(t, 9, res.Images)
			assert.Equal(t, fakeN, res.N)
			assert.Equal(t, int64(9*fakeN), res.Tokens)
			assert.Equal(t, int32(4), calls.Load(), "11 samples in batches of 3")
			require.Len(t, res.Bad, 2)
			assert.Equal(t, "s/004", res.Bad[0].Key)
			assert.Contains(t, res.Bad[0].Reason, "no image member")
			assert.Equal(t, "s/007", res.Bad[1].Key)
			assert.Contains(t, res.Bad[1].Reason, "cannot decode")

			got := readAll(t, bytes.NewReader(out.Bytes()))
			require.Len(t, got, 9)
			counts := make([]int64, fakeK*fakeV)
			for _, s := range got {
				img, ok := images[s.Key]
				require.True(t, ok, s.Key)
				var exts []string
				for _, m := range s.Members {
					exts = append(exts, m.Ext)
				}
				imgExt := "png"
				if strings.HasSuffix(s.Key, "1") || strings.HasSuffix(s.Key, "3") || strings.HasSuffix(s.Key, "5") || strings.HasSuffix(s.Key, "9") {
					imgExt = "JPG"
				}
				want := []string{"txt", "json", "codes.npy"}
				if keep {
					want = []string{"txt", imgExt, "json", "codes.npy"}
				}
				assert.Equal(t, want, exts, s.Key)
				cm, _ := s.Get("codes.npy")
				shape, codes := parseCodes(t, cm.Data)
				assert.Equal(t, []int{fakeN, fakeK}, shape)
				assert.Equal(t, fakeCodes(img), codes, s.Key)
				for i, c := range codes {
					counts[(i%fakeK)*fakeV+int(c)]++
				}
				txt, _ := s.Get("txt")
				assert.Equal(t, "caption "+s.Key, string(txt.Data))
			}
			assert.Equal(t, counts, res.Counts)
		})
	}
}

func TestProcessErrors(t *testing.T) {
	var in bytes.Buffer
	w := NewWriter(&in)
	require.NoError(t, w.Write(&Sample{Key: "a", Members: []Member{{Ext: "png", Data: encodePNG(t, testImage(1))}}}))
	require.NoError(t, w.Close())
	boom := errors.New("device lost")
	_, err := Process(context.Background(), bytes.NewReader(in.Bytes()), io.Discard, Options{
		Tokenize: func(context.Context, []image.Image) ([]int32, error) { return nil, boom }, K: 2})
	require.ErrorIs(t, err, boom)
	_, err = Process(context.Background(), bytes.NewReader(in.Bytes()), io.Discard, Options{
		Tokenize: func(context.Context, []image.Image) ([]int32, error) { return []int32{1, 2, 3}, nil }, K: 2})
	require.ErrorContains(t, err, "want B*N*K")
	_, err = Process(context.Background(), bytes.NewReader(in.Bytes()), io.Discard, Options{
		Tokenize: func(context.Context, []image.Image) ([]int32, error) { return []int32{1, 70000}, nil }, K: 2})
	require.ErrorContains(t, err, "out of range")
	_, err = Process(context.Background(), bytes.NewReader(in.Bytes()[:600]), io.Discard, Options{Tokenize: fakeTokenize(nil), K: fakeK})
	require.Error(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Process(ctx, bytes.NewReader(in.Bytes()), io.Discard, Options{Tokenize: fakeTokenize(nil), K: fakeK})
	require.ErrorIs(t, err, context.Canceled)
}

// fakeEmbed is an embedding (E=5) computed from the pixels, as fakeCodes.
func fakeEmbed(img image.Image) []float32 {
	c := fakeCodes(img)
	out := make([]float32, 5)
	for i := range out {
		out[i] = float32(c[i])/7 - 1.5 + float32(i)*1e-3
	}
	return out
}

// With TokenizeEmbed each sample also carries KEY.embed.npy, (E,) float32,
// right after its codes; bad samples are still left out and listed.
func TestProcessWithEmbeddings(t *testing.T) {
	src, images := tokenizeInput(t)
	var out bytes.Buffer
	res, err := Process(context.Background(), bytes.NewReader(src), &out, Options{
		TokenizeEmbed: func(ctx context.Context, imgs []image.Image) ([]int32, []float32, error) {
			codes, _ := fakeTokenize(nil)(ctx, imgs)
			var embs []float32
			for _, img := range imgs {
				embs = append(embs, fakeEmbed(img)...)
			}
			return codes, embs, nil
		}, K: fakeK, V: fakeV, Batch: 4, Workers: 2})
	require.NoError(t, err)
	assert.Equal(t, 9, res.Written)
	assert.Equal(t, 5, res.E)
	require.Len(t, res.Bad, 2)
	got := readAll(t, bytes.NewReader(out.Bytes()))
	require.Len(t, got, 9)
	for _, s := range got {
		var exts []string
		for _, m := range s.Members {
			exts = append(exts, m.Ext)
		}
		assert.Equal(t, []string{"txt", "json", "codes.npy", "embed.npy"}, exts, s.Key)
		cm, _ := s.Get("codes.npy")
		_, codes := parseCodes(t, cm.Data)
		assert.Equal(t, fakeCodes(images[s.Key]), codes, s.Key)
		em, _ := s.Get("embed.npy")
		h, err := npy.ParseHeader(em.Data)
		require.NoError(t, err)
		require.Equal(t, npy.Float32, h.DType)
		require.Equal(t, []int{5}, h.Shape)
		require.Equal(t, h.DataOffset+20, len(em.Data))
		var e []float32
		for i := h.DataOffset; i < len(em.Data); i += 4 {
			e = append(e, math.Float32frombits(binary.LittleEndian.Uint32(em.Data[i:])))
		}
		assert.Equal(t, fakeEmbed(images[s.Key]), e, s.Key)
	}

	_, err = Process(context.Background(), bytes.NewReader(src), io.Discard, Options{
		TokenizeEmbed: func(ctx context.Context, imgs []image.Image) ([]int32, []float32, error) {
			codes, _ := fakeTokenize(nil)(ctx, imgs)
			return codes, make([]float32, 5*len(imgs)+1), nil
		}, K: fakeK})
	require.ErrorContains(t, err, "want B*E")
}
