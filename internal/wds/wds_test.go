package wds

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The round trips are checked against the webdataset Python package
// (testdata/webdataset_ref.py):
//
//   - testdata/py.tar is written by webdataset.TarWriter (plus corner cases
//     added with tarfile); testdata/py.json is what webdataset reads from it.
//   - testdata/go.tar is written by this package from py.json's samples plus
//     a few more (TestWriteGolden, UNITOK_WDS_UPDATE=1 rewrites it);
//     testdata/go.json is what webdataset reads from go.tar.
//
// With a Python that has webdataset (UNITOK_PYTHON, default
// /work/venv/bin/python), TestPythonReadsGoTar re-reads a freshly written tar
// with webdataset instead of trusting the committed go.json.

type refSample struct {
	Key     string      `json:"key"`
	Members [][2]string `json:"members"` // [ext, base64]
}

func loadRef(t *testing.T, name string) []refSample {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	var out []refSample
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// asRef renders samples as webdataset gives them (extensions lowercased).
func asRef(samples []*Sample) []refSample {
	var out []refSample
	for _, s := range samples {
		r := refSample{Key: s.Key, Members: [][2]string{}}
		for _, m := range s.Members {
			r.Members = append(r.Members, [2]string{strings.ToLower(m.Ext), base64.StdEncoding.EncodeToString(m.Data)})
		}
		out = append(out, r)
	}
	return out
}

func readAll(t *testing.T, r io.Reader) []*Sample {
	t.Helper()
	rd := NewReader(r)
	var out []*Sample
	for {
		s, err := rd.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		out = append(out, s)
	}
}

func TestReadWebdatasetTar(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "py.tar"))
	require.NoError(t, err)
	defer f.Close()
	rd := NewReader(f)
	var got []*Sample
	for {
		s, err := rd.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got = append(got, s)
	}
	want := loadRef(t, "py.json")
	require.Equal(t, want, asRef(got))
	// The directory, __meta__, README (no extension) and the symlink.
	assert.Equal(t, 4, rd.Skipped)
	// Case is kept on our side: webdataset lowercases "JPG".
	b := got[5]
	require.Equal(t, "shard1/b", b.Key)
	assert.Equal(t, []string{"txt", "JPG", "meta.json"}, []string{b.Members[0].Ext, b.Members[1].Ext, b.Members[2].Ext})
	m, ok := b.Get("jpg")
	assert.True(t, ok)
	assert.Len(t, m.Data, 10)
}

// goSamples is what TestWriteGolden writes: py.json's samples in their
// member order, then samples webdataset's TarWriter would not produce
// (unsorted members, upper-case extension, a codes.npy member).
func goSamples(t *testing.T) []*Sample {
	var out []*Sample
	for _, r := range loadRef(t, "py.json") {
		s := &Sample{Key: r.Key}
		for _, m := range r.Members {
			d, err := base64.StdEncoding.DecodeString(m[1])
			require.NoError(t, err)
			s.Members = append(s.Members, Member{Ext: m[0], Data: d})
		}
		out = append(out, s)
	}
	out = append(out,
		&Sample{Key: "extra/z1", Members: []Member{{Ext: "txt", Data: []byte("z")}, {Ext: "codes.npy", Data: []byte("\x93NUMPY fake")}, {Ext: "PNG", Data: []byte{1, 2, 3}}}},
		&Sample{Key: "extra/a0", Members: []Member{{Ext: "json", Data: []byte("{}")}}},
	)
	return out
}

func writeTar(t *testing.T, samples []*Sample) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, s := range samples {
		require.NoError(t, w.Write(s))
	}
	require.NoError(t, w.Close())
	assert.Equal(t, len(samples), w.Samples())
	return buf.Bytes()
}

func TestWriteGolden(t *testing.T) {
	samples := goSamples(t)
	b := writeTar(t, samples)
	golden := filepath.Join("testdata", "go.tar")
	if os.Getenv("UNITOK_WDS_UPDATE") != "" {
		require.NoError(t, os.WriteFile(golden, b, 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, want, b, "writer output changed: check it with webdataset and rerun with UNITOK_WDS_UPDATE=1")
	// webdataset read go.tar as these samples (go.json, made by
	// webdataset_ref.py read go.tar).
	assert.Equal(t, loadRef(t, "go.json"), asRef(samples))
	// and so do we.
	assert.Equal(t, asRef(samples), asRef(readAll(t, bytes.NewReader(b))))
	// Deterministic: the same samples, the same bytes.
	assert.Equal(t, b, writeTar(t, samples))
}

func pythonWithWebdataset(t *testing.T) string {
	if testing.Short() {
		t.Skip("starts Python (about 20 s to import webdataset)")
	}
	py := os.Getenv("UNITOK_PYTHON")
	if py == "" {
		py = "/work/venv/bin/python"
	}
	if err := exec.Command(py, "-c", "import webdataset").Run(); err != nil {
		t.Skipf("no Python with webdataset (%s): %v", py, err)
	}
	return py
}

func TestPythonReadsGoTar(t *testing.T) {
	py := pythonWithWebdataset(t)
	samples := goSamples(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "go.tar")
	require.NoError(t, os.WriteFile(p, writeTar(t, samples), 0o644))
	// py.tar through our reader and writer must read back in webdataset
	// exactly as py.tar itself does.
	f, err := os.Open(filepath.Join("testdata", "py.tar"))
	require.NoError(t, err)
	defer f.Close()
	q := filepath.Join(dir, "py_again.tar")
	require.NoError(t, os.WriteFile(q, writeTar(t, readAll(t, f)), 0o644))

	// A tokenized shard with embeddings (Process with the fake tokenizer):
	// webdataset finds the keys and members, numpy reads codes.npy as
	// (N, K) uint16 and embed.npy as (E,) float32.
	src, images := tokenizeInput(t)
	var tok bytes.Buffer
	res, err := Process(context.Background(), bytes.NewReader(src), &tok, Options{
		TokenizeEmbed: func(ctx context.Context, imgs []image.Image) ([]int32, []float32, error) {
			codes, _ := fakeTokenize(nil)(ctx, imgs)
			var embs []float32
			for _, img := range imgs {
				embs = append(embs, fakeEmbed(img)...)
			}
			return codes, embs, nil
		}, K: fakeK, Batch: 4})
	require.NoError(t, err)
	r := filepath.Join(dir, "tokenized.tar")
	require.NoError(t, os.WriteFile(r, tok.Bytes(), 0o644))

	out, err := exec.Command(py, filepath.Join("testdata", "webdataset_ref.py"), "read", p, q, r+":arrays").Output()
	require.NoError(t, err)
	var got []json.RawMessage
	require.NoError(t, json.Unmarshal(out, &got))
	require.Len(t, got, 3)
	var a, b []refSample
	require.NoError(t, json.Unmarshal(got[0], &a))
	require.NoError(t, json.Unmarshal(got[1], &b))
	assert.Equal(t, asRef(samples), a)
	assert.Equal(t, loadRef(t, "py.json"), b)

	var c []struct {
		Key     string                       `json:"key"`
		Members [][2]string                  `json:"members"`
		Arrays  map[string][]json.RawMessage `json:"arrays"`
	}
	require.NoError(t, json.Unmarshal(got[2], &c))
	require.Len(t, c, res.Written)
	for _, s := range c {
		var exts []string
		for _, m := range s.Members {
			exts = append(exts, m[0])
		}
		assert.Equal(t, []string{"txt", "json", "codes.npy", "embed.npy"}, exts, s.Key)
		earr := s.Arrays["embed.npy"]
		require.Len(t, earr, 3, s.Key)
		var eshape []int
		var edtype string
		var evals []float64
		require.NoError(t, json.Unmarshal(earr[0], &eshape))
		require.NoError(t, json.Unmarshal(earr[1], &edtype))
		require.NoError(t, json.Unmarshal(earr[2], &evals))
		assert.Equal(t, []int{5}, eshape)
		assert.Equal(t, "float32", edtype)
		var e32 []float32
		for _, v := range evals {
			e32 = append(e32, float32(v))
		}
		assert.Equal(t, fakeEmbed(images[s.Key]), e32, s.Key)
		arr := s.Arrays["codes.npy"]
		require.Len(t, arr, 3, s.Key)
		var shape []int
		var dtype string
		var vals []int32
		require.NoError(t, json.Unmarshal(arr[0], &shape))
		require.NoError(t, json.Unmarshal(arr[1], &dtype))
		require.NoError(t, json.Unmarshal(arr[2], &vals))
		assert.Equal(t, []int{fakeN, fakeK}, shape)
		assert.Equal(t, "uint16", dtype)
		assert.Equal(t, fakeCodes(images[s.Key]), vals, s.Key)
	}
}

func TestSplitName(t *testing.T) {
	for name, want := range map[string][2]string{
		"a.jpg": {"a", "jpg"}, "d/e/a.seg.png": {"d/e/a", "seg.png"}, "d.x/a.b": {"d.x/a", "b"},
		"a.": {"a", ""},
	} {
		k, e, ok := SplitName(name)
		assert.True(t, ok, name)
		assert.Equal(t, want, [2]string{k, e}, name)
	}
	for _, name := range []string{"README", "d/.hidden", "d/noext", ".x"} {
		_, _, ok := SplitName(name)
		assert.False(t, ok, name)
	}
}

func TestReaderErrors(t *testing.T) {
	tarOf := func(names ...string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, n := range names {
			require.NoError(t, tw.WriteHeader(&tar.Header{Name: n, Size: 3, Mode: 0o644, Typeflag: tar.TypeReg}))
			_, err := tw.Write([]byte("abc"))
			require.NoError(t, err)
		}
		require.NoError(t, tw.Close())
		return buf.Bytes()
	}
	// A repeated extension (case-insensitively) within a sample.
	rd := NewReader(bytes.NewReader(tarOf("a.jpg", "a.JPG")))
	_, err := rd.Next()
	require.ErrorContains(t, err, "duplicate extension")
	_, err2 := rd.Next()
	require.Equal(t, err, err2, "errors are sticky")
	// The same key later, after another sample, is a new sample (as in
	// webdataset: grouping is by consecutive members).
	got := readAll(t, bytes.NewReader(tarOf("a.jpg", "b.jpg", "a.txt")))
	require.Len(t, got, 3)
	// Truncated.
	b := tarOf("a.jpg", "a.txt")
	_, err = io.ReadAll(io.LimitReader(bytes.NewReader(b), 0))
	require.NoError(t, err)
	rd = NewReader(bytes.NewReader(b[:512+2]))
	_, err = rd.Next()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "truncated")
	// Too large a member.
	rd = NewReader(bytes.NewReader(tarOf("a.jpg")))
	rd.MaxMember = 2
	_, err = rd.Next()
	require.ErrorContains(t, err, "limit 2")
	// An empty tar: no samples.
	var empty bytes.Buffer
	require.NoError(t, tar.NewWriter(&empty).Close())
	_, err = NewReader(&empty).Next()
	require.Equal(t, io.EOF, err)
}

func TestWriterRefuses(t *testing.T) {
	w := NewWriter(io.Discard)
	for _, s := range []*Sample{
		{Key: "", Members: []Member{{Ext: "jpg"}}},
		{Key: "a.b", Members: []Member{{Ext: "jpg"}}},
		{Key: "__x__/a", Members: []Member{{Ext: "jpg"}}},
		{Key: "__a", Members: []Member{{Ext: "x__"}}},
		{Key: "a", Members: nil},
		{Key: "a", Members: []Member{{Ext: ""}}},
		{Key: "a", Members: []Member{{Ext: "jpg"}, {Ext: "JPG"}}},
		{Key: "a", Members: []Member{{Ext: "x/y"}}},
	} {
		err := w.Write(s)
		require.Error(t, err, "%+v", s)
		assert.True(t, errors.Is(err, ErrBadSample), "%v", err)
	}
	require.NoError(t, w.Write(&Sample{Key: "d.x/a", Members: []Member{{Ext: "jpg"}}}))
	require.ErrorIs(t, w.Write(&Sample{Key: "d.x/a", Members: []Member{{Ext: "txt"}}}), ErrBadSample, "same key twice in a row")
}
