package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/internal/prep"
	"github.com/unitok/unitok/internal/wds"
)

// Webdataset shards through `unitok encode` with the real tiny UniTok
// checkpoint: the codes in the output tars equal TokenizeImages and the
// embeddings EmbedImages on the images decoded from the kept members (the
// same batch), the photos' embeddings are within 1e-3 of PyTorch's
// encode_image, bad samples are listed in the manifest, --embed off writes
// no embed member, and switching --embed redoes the shards.
func TestEncodeWebdatasetTinyCheckpoint(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "wds")
	require.NoError(t, os.MkdirAll(in, 0o755))
	file := func(name string) []byte {
		b, err := os.ReadFile(photo(name))
		require.NoError(t, err)
		return b
	}
	jpg := func(name string) []byte {
		img, err := unitok.LoadImage(photo(name), 0)
		require.NoError(t, err)
		var b bytes.Buffer
		require.NoError(t, jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}))
		return b.Bytes()
	}
	shards := map[string][]*wds.Sample{
		"a.tar": {
			{Key: "chelsea_full", Members: []wds.Member{{Ext: "txt", Data: []byte("a cat")}, {Ext: "png", Data: file("chelsea_full")}}},
			{Key: "nocap", Members: []wds.Member{{Ext: "txt", Data: []byte("no image")}}},
			{Key: "coffee", Members: []wds.Member{{Ext: "png", Data: file("coffee")}, {Ext: "json", Data: []byte(`{"i":2}`)}}},
			{Key: "broken", Members: []wds.Member{{Ext: "jpg", Data: []byte("\xff\xd8\xff not a jpeg")}}},
			{Key: "astro", Members: []wds.Member{{Ext: "jpg", Data: jpg("astronaut")}}},
		},
		"b.tar": {
			{Key: "camera", Members: []wds.Member{{Ext: "png", Data: file("camera_gray")}, {Ext: "cls", Data: []byte("7")}}},
			{Key: "coffee_jpg", Members: []wds.Member{{Ext: "jpg", Data: jpg("coffee")}}},
		},
	}
	for name, samples := range shards {
		var buf bytes.Buffer
		w := wds.NewWriter(&buf)
		for _, s := range samples {
			require.NoError(t, w.Write(s))
		}
		require.NoError(t, w.Close())
		require.NoError(t, os.WriteFile(filepath.Join(in, name), buf.Bytes(), 0o644))
	}

	tok := openLib(t, tinyPth, unitok.WithHeads(4), unitok.WithThreads(2))
	ctx := context.Background()
	_, wantEmb := readFloats(t, filepath.Join(cliFix, "emb.npy"))
	const N, K, E = 16, 4, 48
	npyFile := func(data []byte) string {
		p := filepath.Join(t.TempDir(), "m.npy")
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}
	// check reads one output shard and compares it with the library.
	check := func(out, shard string, embed bool) {
		f, err := os.Open(filepath.Join(out, shard))
		require.NoError(t, err)
		defer f.Close()
		rd := wds.NewReader(f)
		var imgs []image.Image
		var codes []int32
		var embs []float32
		var keys []string
		for {
			s, err := rd.Next()
			if err != nil {
				break
			}
			keys = append(keys, s.Key)
			var exts []string
			for _, m := range s.Members {
				exts = append(exts, m.Ext)
			}
			require.Equal(t, "codes.npy", exts[len(exts)-1-map[bool]int{false: 0, true: 1}[embed]], s.Key)
			if embed {
				require.Equal(t, "embed.npy", exts[len(exts)-1], s.Key)
			} else {
				require.NotContains(t, exts, "embed.npy", s.Key)
			}
			var img image.Image
			for _, m := range s.Members {
				if m.Ext == "png" || m.Ext == "jpg" {
					img, err = unitok.DecodeImage(bytes.NewReader(m.Data), 0)
					require.NoError(t, err)
				}
			}
			require.NotNil(t, img, "--keep writes the image member")
			imgs = append(imgs, img)
			cm, _ := s.Get("codes.npy")
			shape, dt, c := readInts(t, npyFile(cm.Data))
			require.Equal(t, []int{N, K}, shape)
			require.Equal(t, "<u2", string(dt))
			codes = append(codes, c...)
			if embed {
				em, _ := s.Get("embed.npy")
				shape, e := readFloats(t, npyFile(em.Data))
				require.Equal(t, []int{E}, shape)
				embs = append(embs, e...)
				if s.Key == "chelsea_full" || s.Key == "coffee" {
					i := map[string]int{"chelsea_full": 0, "coffee": 1}[s.Key]
					for j, v := range wantEmb[i*E : (i+1)*E] {
						assert.InDelta(t, v, e[j], 1e-3, "%s vs PyTorch", s.Key)
					}
				}
			}
		}
		want, err := tok.TokenizeImages(ctx, imgs)
		require.NoError(t, err)
		require.Equal(t, want, codes, "%s: codes vs TokenizeImages (keys %v)", shard, keys)
		if embed {
			wantE, err := tok.EmbedImages(ctx, imgs)
			require.NoError(t, err)
			require.Len(t, embs, len(wantE))
			for i := range wantE {
				require.InDelta(t, wantE[i], embs[i], 1e-6, "%s: embedding value %d", shard, i)
			}
			for b := 0; b < len(imgs); b++ {
				var n float64
				for _, v := range embs[b*E : (b+1)*E] {
					n += float64(v) * float64(v)
				}
				assert.InDelta(t, 1, math.Sqrt(n), 1e-5)
			}
		}
		switch shard {
		case "a.tar":
			require.Equal(t, []string{"chelsea_full", "coffee", "astro"}, keys)
		case "b.tar":
			require.Equal(t, []string{"camera", "coffee_jpg"}, keys)
		}
	}
	bad := func(out string) map[string]string {
		b, err := os.ReadFile(filepath.Join(out, "manifest.jsonl"))
		require.NoError(t, err)
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var rec prep.Record
			require.NoError(t, json.Unmarshal([]byte(line), &rec))
			for _, s := range rec.Bad {
				got[rec.Shard+":"+s.Key] = s.Reason
			}
		}
		return got
	}

	run := func(out string, extra ...string) result {
		args := append([]string{"--in", in, "--out", out, "--keep", "--partition", "off"}, extra...)
		r := imgCLI("encode", args...)
		require.Equal(t, 0, r.code, r.stderr)
		return r
	}
	withEmbed, without := filepath.Join(dir, "embed"), filepath.Join(dir, "plain")
	run(withEmbed, "--embed")
	check(withEmbed, "a.tar", true)
	check(withEmbed, "b.tar", true)
	b := bad(withEmbed)
	require.Len(t, b, 2, "%v", b)
	assert.Contains(t, b["a.tar:nocap"], "no image member")
	assert.Contains(t, b["a.tar:broken"], "cannot decode")

	r := run(without)
	assert.Contains(t, r.stderr, "2 bad samples left out")
	check(without, "a.tar", false)
	check(without, "b.tar", false)
	// The same codes with and without --embed.
	for _, shard := range []string{"a.tar", "b.tar"} {
		x, y := readSampleMember(t, filepath.Join(withEmbed, shard), "codes.npy"), readSampleMember(t, filepath.Join(without, shard), "codes.npy")
		require.Equal(t, x, y, shard)
	}
	// The embed choice is in the params: turning it on redoes both shards,
	// rerunning the same command skips them.
	manifest := func() string {
		b, err := os.ReadFile(filepath.Join(without, "manifest.jsonl"))
		require.NoError(t, err)
		return string(b)
	}
	require.Contains(t, manifest(), "embed=none")
	run(without, "--embed")
	check(without, "a.tar", true)
	require.Equal(t, 4, strings.Count(manifest(), "\n"))
	require.Contains(t, manifest(), "embed=embed.npy")
	run(without, "--embed")
	require.Equal(t, 4, strings.Count(manifest(), "\n"), "nothing redone")

	// --embed on .npy inputs or with image tokenize is refused.
	r = imgCLI("encode", "--in", filepath.Join(dir, "x.npy"), "--out", filepath.Join(dir, "o"), "--embed")
	require.Equal(t, 1, r.code)
	r = imgCLI("tokenize", "--in", in, "--out", filepath.Join(dir, "o2"), "--embed")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "--embed apply to webdataset")
}

// readSampleMember returns one member of every sample of a tar, in order.
func readSampleMember(t *testing.T, path, ext string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rd := wds.NewReader(f)
	var out [][]byte
	for {
		s, err := rd.Next()
		if err != nil {
			return out
		}
		m, ok := s.Get(ext)
		require.True(t, ok, fmt.Sprintf("%s: %s", s.Key, ext))
		out = append(out, m.Data)
	}
}
