package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/unitok/unitok"
	"github.com/unitok/unitok/api"
	"github.com/unitok/unitok/batch"
	"github.com/unitok/unitok/batch/batchtest"
)

var testCfg = unitok.Config{InDim: 64, LatentDim: 32, NumCodebooks: 4, CodebookSize: 64, NumHeads: 4}

func newTok(t testing.TB) *unitok.Tokenizer {
	t.Helper()
	m, err := unitok.SynthModel(testCfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := unitok.New(m, unitok.WithDevice("cpu"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

// env is a server over a synthetic tokenizer with a fake image model.
type env struct {
	tok  *unitok.Tokenizer
	img  *batchtest.Images
	gate *batchtest.Gate // nil unless gated
	srv  *Server
	ts   *httptest.Server
	cl   *api.Client
}

func newEnv(t *testing.T, gated bool, mod func(*Config)) *env {
	t.Helper()
	e := &env{tok: newTok(t)}
	e.img = &batchtest.Images{FeatureEngine: e.tok, S: 4, N: 3, E: 5}
	var eng batch.FeatureEngine = e.img
	if gated {
		e.gate = batchtest.NewGate(e.img)
		eng = e.gate
	}
	cfg := Config{Engine: eng, Batch: batch.Options{MaxWait: time.Millisecond}}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	e.ts = httptest.NewServer(srv.Handler())
	e.cl = api.NewClient(e.ts.URL)
	e.cl.Token = cfg.AuthToken
	t.Cleanup(func() {
		if e.gate != nil {
			e.gate.Release()
		}
		e.ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return e
}

func randF(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func randCodes(r *rand.Rand, n, V int) []int32 {
	x := make([]int32, n)
	for i := range x {
		x[i] = int32(r.IntN(V))
	}
	return x
}

func bitsEqual(a, b []float32) bool {
	return len(a) == len(b) && slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

func solid(w, h int, red uint8) image.Image {
	im := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(im.Pix); i += 4 {
		im.Pix[i], im.Pix[i+3] = red, 255
	}
	return im
}

func pngBytes(t testing.TB, im image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, im); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// post sends body with the given headers and returns status, headers and body.
func post(t testing.TB, url, ctype, accept string, body []byte, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func get(t testing.TB, url string, hdr ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestRoutesBitIdentical: every array route, through the Go client (.npy)
// and as JSON, returns exactly what a direct library call returns, under
// concurrency so that requests share batches.
func TestRoutesBitIdentical(t *testing.T) {
	e := newEnv(t, false, nil)
	c := e.tok.Config()
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 9))
			B, N := 1+i%2, 5
			x := randF(r, B*N*c.InDim)
			want, _ := e.tok.Encode(x, B, N)
			got, err := e.cl.Encode(ctx, x, B, N)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("encode %d: %v", i, err)
			}
			wantF, _ := e.tok.Decode(want, B, N)
			gotF, err := e.cl.Decode(ctx, want, B, N)
			if err != nil || !bitsEqual(gotF, wantF) {
				t.Errorf("decode %d: %v", i, err)
			}
			M := 1 + i%5
			lat := randF(r, M*c.LatentDim)
			wantQ, _ := e.tok.Quantize(lat, M)
			gotQ, err := e.cl.Quantize(ctx, lat, M)
			if err != nil || !slices.Equal(gotQ, wantQ) {
				t.Errorf("quantize %d: %v", i, err)
			}
			wantL, _ := e.tok.Lookup(wantQ, M)
			gotL, err := e.cl.Lookup(ctx, wantQ, M)
			if err != nil || !bitsEqual(gotL, wantL) {
				t.Errorf("lookup %d: %v", i, err)
			}
			imgs := []image.Image{solid(3+i, 4, uint8(10*i))}
			wantT, _ := e.img.TokenizeImages(ctx, imgs)
			gotT, err := e.cl.TokenizeImages(ctx, imgs)
			if err != nil || !slices.Equal(gotT, wantT) {
				t.Errorf("tokenize %d: %v %v %v", i, err, gotT, wantT)
			}
			wantE, _ := e.img.EmbedImages(ctx, imgs)
			gotE, err := e.cl.EmbedImages(ctx, imgs)
			if err != nil || !bitsEqual(gotE, wantE) {
				t.Errorf("embed %d: %v", i, err)
			}
			wantD, _ := e.img.Detokenize(ctx, wantT, 1)
			gotD, err := e.cl.Detokenize(ctx, wantT, 1)
			if err != nil || !bitsEqual(gotD, wantD) {
				t.Errorf("detokenize %d: %v", i, err)
			}
		}()
	}
	wg.Wait()

	// JSON in, JSON out; (N, C) rank kept.
	r := rand.New(rand.NewPCG(1, 1))
	x := randF(r, 2*c.InDim)
	want, _ := e.tok.Encode(x, 1, 2)
	var sb strings.Builder
	sb.WriteString("[")
	for n := 0; n < 2; n++ {
		if n > 0 {
			sb.WriteString(",")
		}
		sb.WriteString("[")
		for j := 0; j < c.InDim; j++ {
			if j > 0 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, "%v", x[n*c.InDim+j])
		}
		sb.WriteString("]")
	}
	sb.WriteString("]")
	code, hdr, body := post(t, e.ts.URL+api.PathEncode, api.ContentJSON, "", []byte(sb.String()))
	var gotJ [][]int32
	if code != 200 || hdr.Get("Content-Type") != api.ContentJSON || json.Unmarshal(body, &gotJ) != nil {
		t.Fatalf("JSON encode: %d %s %s", code, hdr.Get("Content-Type"), body)
	}
	if len(gotJ) != 2 || !slices.Equal(slices.Concat(gotJ...), want) {
		t.Errorf("JSON encode: got %v want %v", gotJ, want)
	}
	// JSON in, .npy out by Accept; floats survive the JSON round trip.
	wantF, _ := e.tok.Lookup(want[:c.NumCodebooks], 1)
	js, _ := json.Marshal([][]int32{want[:c.NumCodebooks]})
	code, hdr, body = post(t, e.ts.URL+api.PathLookup, api.ContentJSON, api.ContentNPY, js)
	a, err := api.ParseNPY(body)
	if code != 200 || err != nil || !bitsEqual(a.F32, wantF) || !slices.Equal(a.Shape, []int{1, c.LatentDim}) {
		t.Errorf("lookup JSON->npy: %d %v %v", code, err, hdr)
	}
	code, _, body = post(t, e.ts.URL+api.PathLookup, api.ContentJSON, api.ContentJSON, js)
	var gotLJ [][]float32
	if code != 200 || json.Unmarshal(body, &gotLJ) != nil || !bitsEqual(gotLJ[0], wantF) {
		t.Errorf("lookup JSON->JSON: %d %s", code, body)
	}

	// Detokenize as one PNG and as multipart/mixed PNGs.
	codes := randCodes(r, 2*e.img.N*c.NumCodebooks, c.CodebookSize)
	wantD, _ := e.img.Detokenize(ctx, codes, 2)
	body1 := api.AppendNPY(nil, []int{1, e.img.N, c.NumCodebooks}, nil, codes[:e.img.N*c.NumCodebooks])
	code, hdr, body = post(t, e.ts.URL+api.PathDetokenize, api.ContentNPY, api.ContentPNG, body1)
	if code != 200 || hdr.Get("Content-Type") != api.ContentPNG {
		t.Fatalf("detokenize PNG: %d %s", code, body)
	}
	checkPNG(t, body, wantD[:3*16], 4)
	body2 := api.AppendNPY(nil, []int{2, e.img.N, c.NumCodebooks}, nil, codes)
	code, hdr, body = post(t, e.ts.URL+api.PathDetokenize, api.ContentNPY, "image/png", body2)
	mt, params, _ := mime.ParseMediaType(hdr.Get("Content-Type"))
	if code != 200 || mt != "multipart/mixed" {
		t.Fatalf("detokenize multipart: %d %s", code, hdr.Get("Content-Type"))
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for b := 0; b < 2; b++ {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := io.ReadAll(p)
		checkPNG(t, pb, wantD[b*48:(b+1)*48], 4)
	}

	// Several images in one multipart request.
	imgs := []image.Image{solid(5, 5, 1), solid(6, 2, 200), solid(1, 1, 7)}
	wantT, _ := e.img.TokenizeImages(ctx, imgs)
	gotT, err := e.cl.TokenizeImages(ctx, imgs)
	if err != nil || !slices.Equal(gotT, wantT) {
		t.Errorf("tokenize 3 images: %v", err)
	}
	// A single raw image body.
	code, _, body = post(t, e.ts.URL+api.PathTokenize, api.ContentPNG, api.ContentJSON, pngBytes(t, imgs[1]))
	var gotT1 [][][]int32
	if code != 200 || json.Unmarshal(body, &gotT1) != nil || !slices.Equal(slices.Concat(gotT1[0]...), wantT[len(wantT)/3:2*len(wantT)/3]) {
		t.Errorf("tokenize raw PNG: %d %s", code, body)
	}

	// GET routes.
	info, err := e.cl.Info(ctx)
	if err != nil || info.Model.NumCodebooks != c.NumCodebooks || info.Device != "cpu" || !info.Images || info.ImageSz != 4 {
		t.Errorf("info: %+v %v", info, err)
	}
	if code, b := get(t, e.ts.URL+api.PathHealth); code != 200 || string(b) != "ok\n" {
		t.Errorf("healthz: %d %q", code, b)
	}
	if code, _ := get(t, e.ts.URL+api.PathReady); code != 200 {
		t.Errorf("readyz: %d", code)
	}
	code, mb := get(t, e.ts.URL+api.PathMetrics)
	for _, name := range []string{`unitok_http_requests_total{code="200",route="/v1/encode"}`, "unitok_http_request_duration_seconds_bucket",
		`unitok_batch_items_bucket{op="encode"`, "unitok_batch_wait_seconds", "unitok_queue_depth 0", "unitok_http_inflight_requests 1",
		"unitok_tokens_total", "unitok_images_total", "unitok_batch_calls"} {
		if code != 200 || !strings.Contains(string(mb), name) {
			t.Errorf("metrics: no %q", name)
		}
	}
}

func checkPNG(t *testing.T, b []byte, want []float32, S int) {
	t.Helper()
	im, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("PNG: %v", err)
	}
	for y := 0; y < S; y++ {
		for x := 0; x < S; x++ {
			c := color.NRGBAModel.Convert(im.At(x, y)).(color.NRGBA)
			for ch, got := range []uint8{c.R, c.G, c.B} {
				w := uint8(math.Round((float64(want[ch*S*S+y*S+x]) + 1) * 127.5))
				if got != w {
					t.Fatalf("PNG pixel (%d,%d) channel %d = %d, want %d", x, y, ch, got, w)
				}
			}
		}
	}
}

// TestBadInputs: each bad request gets its status, kind and a message
// naming the problem.
func TestBadInputs(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxBodyBytes = 1 << 16; c.MaxImages = 2; c.MaxPixels = 100 })
	c := e.tok.Config()
	feats := func(shape ...int) []byte {
		n := 1
		for _, s := range shape {
			n *= s
		}
		return api.AppendNPY(nil, shape, make([]float32, n), nil)
	}
	nan := make([]float32, 2*c.InDim)
	nan[c.InDim+1] = float32(math.NaN())
	codes := api.AppendNPY(nil, []int{1, 2, c.NumCodebooks}, nil, []int32{0, 1, 2, 3, 4, 5, 6, int32(c.CodebookSize)})
	good := pngBytes(t, solid(5, 5, 3))
	mp := func(parts ...[]byte) (string, []byte) {
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		for _, p := range parts {
			pw, _ := w.CreateFormFile("image", "x.png")
			pw.Write(p)
		}
		w.Close()
		return w.FormDataContentType(), b.Bytes()
	}
	mt3, body3 := mp(good, good, good)
	mt1, bodyTrunc := mp(good[:len(good)/2])
	cases := []struct {
		name, path, ctype, accept string
		body                      []byte
		status                    int
		kind, msg                 string
	}{
		{"malformed npy", api.PathEncode, api.ContentNPY, "", []byte("\x93NUMPY garbage"), 400, api.KindBadInput, "malformed .npy"},
		{"truncated npy", api.PathEncode, api.ContentNPY, "", feats(2, c.InDim)[:100], 400, api.KindBadInput, "truncated"},
		{"wrong rank", api.PathEncode, api.ContentNPY, "", feats(c.InDim), 400, api.KindBadInput, "rank 1"},
		{"wrong width", api.PathEncode, api.ContentNPY, "", feats(1, 3, c.InDim+1), 400, api.KindBadInput, "last axis is 65, want C=64"},
		{"NaN", api.PathEncode, api.ContentNPY, "", api.AppendNPY(nil, []int{2, c.InDim}, nan, nil), 400, api.KindBadInput, "non-finite value NaN at row 1, column 1"},
		{"float codes", api.PathDecode, api.ContentNPY, "", feats(1, 1, c.NumCodebooks), 400, api.KindBadInput, "want an integer dtype"},
		{"code >= V", api.PathDecode, api.ContentNPY, "", codes, 400, api.KindBadInput, "code 64 at flat index 7 is out of range [0, 64)"},
		{"lookup wrong width", api.PathLookup, api.ContentNPY, "", api.AppendNPY(nil, []int{1, 3}, nil, []int32{1, 2, 3}), 400, api.KindBadInput, "want K=4"},
		{"quantize rank 3", api.PathQuantize, api.ContentNPY, "", feats(1, 1, c.LatentDim), 400, api.KindBadInput, "want (M, D)"},
		{"ragged JSON", api.PathQuantize, api.ContentJSON, "", []byte("[[1,2],[3]]"), 400, api.KindBadInput, "ragged"},
		{"non-integer JSON code", api.PathLookup, api.ContentJSON, "", []byte("[[1,2,3,4.5]]"), 400, api.KindBadInput, "32-bit integer"},
		{"JSON not an array", api.PathLookup, api.ContentJSON, "", []byte(`{"a":1}`), 400, api.KindBadInput, "want a JSON array"},
		{"truncated image", api.PathTokenize, mt1, "", bodyTrunc, 400, api.KindBadInput, "image 0"},
		{"garbage image", api.PathEmbed, api.ContentPNG, "", []byte("not an image"), 400, api.KindBadInput, "image header"},
		{"oversized body", api.PathEncode, api.ContentNPY, "", feats(300, c.InDim), 413, api.KindTooLarge, "exceeds"},
		{"too many images", api.PathTokenize, mt3, "", body3, 413, api.KindTooLarge, "more than 2 images"},
		{"too many pixels", api.PathTokenize, api.ContentPNG, "", pngBytes(t, solid(11, 10, 0)), 413, api.KindTooLarge, "11x10"},
		{"wrong content type", api.PathEncode, "text/plain", "", feats(1, c.InDim), 415, api.KindMediaType, "text/plain"},
		{"no content type", api.PathEncode, "", "", feats(1, c.InDim), 415, api.KindMediaType, "no Content-Type"},
		{"image route, npy body", api.PathTokenize, api.ContentNPY, "", feats(1, c.InDim), 415, api.KindMediaType, "want image/png"},
		{"not acceptable", api.PathEncode, api.ContentNPY, "text/csv", feats(1, c.InDim), 406, api.KindNotAcceptable, "text/csv"},
	}
	for _, tc := range cases {
		code, hdr, body := post(t, e.ts.URL+tc.path, tc.ctype, tc.accept, tc.body)
		var eb api.ErrorBody
		if err := json.Unmarshal(body, &eb); err != nil || hdr.Get("Content-Type") != api.ContentJSON {
			t.Errorf("%s: body %q is not a JSON error", tc.name, body)
			continue
		}
		if code != tc.status || eb.Error.Status != tc.status || eb.Error.Kind != tc.kind || !strings.Contains(eb.Error.Message, tc.msg) {
			t.Errorf("%s: %d %+v; want %d %s containing %q", tc.name, code, eb.Error, tc.status, tc.kind, tc.msg)
		}
	}
	// Chunked oversized body (no Content-Length).
	req, _ := http.NewRequest(http.MethodPost, e.ts.URL+api.PathEncode, io.MultiReader(bytes.NewReader(feats(300, c.InDim))))
	req.Header.Set("Content-Type", api.ContentNPY)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 413 {
		t.Errorf("chunked oversized body: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	if code, _ := get(t, e.ts.URL+api.PathEncode); code != 405 {
		t.Errorf("GET on a POST route: %d", code)
	}
	if code, _ := get(t, e.ts.URL+"/v2/nothing"); code != 404 {
		t.Errorf("unknown route: %d", code)
	}
	if code, _, body := post(t, e.ts.URL+"/v1/nothing", api.ContentNPY, "", nil); code != 404 || !strings.Contains(string(body), "no route POST /v1/nothing") {
		t.Errorf("POST to an unknown route: %d %s", code, body)
	}
	// The client surfaces kinds as sentinels.
	if _, err := e.cl.Lookup(context.Background(), []int32{0, 0, 0, 99}, 1); !errors.Is(err, api.ErrBadInput) {
		t.Errorf("client error: %v", err)
	}
}

// TestNoImageModel: without an image side the image routes answer 501.
func TestNoImageModel(t *testing.T) {
	tok := newTok(t)
	srv, err := New(Config{Engine: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	code, _, body := post(t, ts.URL+api.PathTokenize, api.ContentPNG, "", pngBytes(t, solid(2, 2, 0)))
	if code != 501 || !strings.Contains(string(body), api.KindNoImageModel) {
		t.Errorf("tokenize without image model: %d %s", code, body)
	}
}

// TestGPUGauges: the telemetry hook's values appear on /metrics; fields
// a GPU does not report (negative) are left out.
func TestGPUGauges(t *testing.T) {
	e := newEnv(t, false, func(c *Config) {
		c.GPUStats = func() []GPUStat {
			return []GPUStat{{Index: 0, Name: "H200", UtilizationPct: 87, MemoryUsedBytes: 1 << 30, MemoryTotal: 141e9,
				SMClockHz: 1.98e9, MemClockHz: -1, PowerWatts: 412.5, TemperatureC: 61, ThrottleReasons: 4}}
		}
	})
	_, b := get(t, e.ts.URL+api.PathMetrics)
	m := string(b)
	for _, want := range []string{`unitok_gpu_utilization_percent{gpu="0",name="H200"} 87`, `unitok_gpu_power_watts{gpu="0",name="H200"} 412.5`,
		`unitok_gpu_memory_used_bytes{gpu="0",name="H200"} 1.073741824e+09`, `unitok_gpu_throttle_reasons{gpu="0",name="H200"} 4`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(m, "unitok_gpu_memory_clock_hertz{") {
		t.Error("a negative (unreported) field was exported")
	}
}

// TestAuth: a missing or wrong token gets 401 on protected routes; open
// paths stay open; the right token passes.
func TestAuth(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.AuthToken = "s3cret" })
	lat := api.AppendNPY(nil, []int{1, testCfg.LatentDim}, make([]float32, testCfg.LatentDim), nil)
	for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "s3cret"}, {"Authorization", "Bearer s3cre"}} {
		code, hdr, _ := post(t, e.ts.URL+api.PathQuantize, api.ContentNPY, "", lat, h...)
		if code != 401 || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("token %v: %d", h, code)
		}
	}
	if code, _, _ := post(t, e.ts.URL+api.PathQuantize, api.ContentNPY, "", lat, "Authorization", "Bearer s3cret"); code != 200 {
		t.Errorf("right token: %d", code)
	}
	if code, _ := get(t, e.ts.URL+api.PathInfo); code != 401 {
		t.Errorf("info without token: %d", code)
	}
	for _, p := range []string{api.PathHealth, api.PathMetrics, api.PathReady} {
		if code, _ := get(t, e.ts.URL+p); code != 200 {
			t.Errorf("open path %s: %d", p, code)
		}
	}
	if _, err := e.cl.Info(context.Background()); err != nil {
		t.Errorf("client with token: %v", err)
	}
	closed := newEnv(t, false, func(c *Config) { c.AuthToken = "s3cret"; c.OpenPaths = []string{} })
	if code, _ := get(t, closed.ts.URL+api.PathMetrics); code != 401 {
		t.Errorf("metrics with no open paths: %d", code)
	}
}

// TestPanicRecovered: a panicking handler answers 500 and the server keeps
// serving.
func TestPanicRecovered(t *testing.T) {
	e := newEnv(t, false, func(c *Config) {
		c.DecodeImage = func(io.Reader, int) (image.Image, error) { panic("decoder bug") }
	})
	code, _, body := post(t, e.ts.URL+api.PathTokenize, api.ContentPNG, "", []byte("x"))
	if code != 500 || !strings.Contains(string(body), api.KindInternal) {
		t.Errorf("panic: %d %s", code, body)
	}
	if _, err := e.cl.Quantize(context.Background(), make([]float32, testCfg.LatentDim), 1); err != nil {
		t.Errorf("after a panic: %v", err)
	}
	if v := testutil.ToFloat64(e.srv.m.errors.WithLabelValues("panic")); v != 1 {
		t.Errorf("panic counter %v", v)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestOverload429: with the engine held and the queue full, the next
// request gets 429 with Retry-After at once, and the accepted ones still
// succeed with the right results.
func TestOverload429(t *testing.T) {
	e := newEnv(t, true, func(c *Config) { c.Batch = batch.Options{MaxBatch: 1, MaxWait: -1, QueueSize: 3} })
	c := e.tok.Config()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(4, 4))
	var wg sync.WaitGroup
	for i := range 4 {
		lat := randF(r, c.LatentDim)
		want, _ := e.tok.Quantize(lat, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := e.cl.Quantize(ctx, lat, 1)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("accepted request %d: %v", i, err)
			}
		}()
		if i == 0 {
			// The first must be running (held by the gate) before the
			// others queue, or all four could wait for a queue of three.
			waitFor(t, "one running", func() bool { return e.gate.Entered.Load() == 1 })
		}
	}
	waitFor(t, "one running and three queued", func() bool {
		return e.gate.Entered.Load() == 1 && e.srv.b.QueueDepth() == 3
	})
	_, err := e.cl.Quantize(ctx, randF(r, c.LatentDim), 1)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 429 || !errors.Is(err, api.ErrOverloaded) || ae.RetryAfter != time.Second {
		t.Fatalf("over the queue limit: %v", err)
	}
	e.gate.Release()
	wg.Wait()
}

// TestDeadline504: a request whose server-side deadline passes while its
// batch waits gets 504; a client that gives up mid-batch does not disturb
// the other request of the batch.
func TestDeadline504(t *testing.T) {
	e := newEnv(t, true, func(c *Config) {
		c.RequestTimeout = 100 * time.Millisecond
		c.Batch = batch.Options{MaxBatch: 8, MaxWait: 50 * time.Millisecond}
	})
	lat := make([]float32, testCfg.LatentDim)
	_, err := e.cl.Quantize(context.Background(), lat, 1)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 504 || ae.Kind != api.KindDeadline {
		t.Fatalf("held engine past the deadline: %v", err)
	}
	e.gate.Release()

	// Cancellation mid-batch over HTTP.
	e2 := newEnv(t, true, func(c *Config) { c.Batch = batch.Options{MaxBatch: 8, MaxWait: 20 * time.Millisecond} })
	c := e2.tok.Config()
	r := rand.New(rand.NewPCG(8, 8))
	x1, x2 := randF(r, 4*c.InDim), randF(r, 4*c.InDim)
	want2, _ := e2.tok.Encode(x2, 1, 4)
	cctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	var got2 []int32
	go func() { _, err := e2.cl.Encode(cctx, x1, 1, 4); errc <- err }()
	go func() {
		var err error
		got2, err = e2.cl.Encode(context.Background(), x2, 1, 4)
		errc <- err
	}()
	waitFor(t, "a batch of both requests at the engine", func() bool {
		return e2.gate.Entered.Load() == 1 && e2.srv.b.InFlight() == 2
	})
	cancel()
	time.Sleep(20 * time.Millisecond)
	e2.gate.Release()
	var errs []error
	errs = append(errs, <-errc, <-errc)
	nCanceled, nOK := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			nOK++
		case errors.Is(err, context.Canceled):
			nCanceled++
		}
	}
	if nOK != 1 || nCanceled != 1 || !slices.Equal(got2, want2) {
		t.Errorf("cancel mid-batch: %v, result equal %v", errs, slices.Equal(got2, want2))
	}
}

// TestShutdownUnderLoad: clients keep sending while the server drains.
// Every request the server accepted is answered exactly once (200 with the
// right result, or 503 once draining); the server's count of 200s equals
// the clients'; Serve returns nil.
func TestShutdownUnderLoad(t *testing.T) {
	tok := newTok(t)
	gate := batchtest.NewGate(tok)
	gate.Release()
	srv, err := New(Config{Engine: gate, Batch: batch.Options{MaxWait: time.Millisecond, QueueSize: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, 20*time.Second, "", "") }()
	base := "http://" + ln.Addr().String()
	c := tok.Config()
	r := rand.New(rand.NewPCG(2, 2))
	const N = 4
	x := randF(r, N*c.InDim)
	want, _ := tok.Encode(x, 1, N)
	body := api.AppendNPY(nil, []int{1, N, c.InDim}, x, nil)
	var ok, unavailable, transport, other atomic.Int64
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: w%2 == 0}}
			for i := 0; i < 2000; i++ {
				req, _ := http.NewRequest(http.MethodPost, base+api.PathEncode, bytes.NewReader(body))
				req.Header.Set("Content-Type", api.ContentNPY)
				resp, err := hc.Do(req)
				if err != nil {
					if !stopping.Load() {
						t.Errorf("transport error before the drain: %v", err)
					}
					transport.Add(1)
					return // the listener is closed
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					a, err := api.ParseNPY(b)
					if err != nil || !slices.Equal(a.I32, want) {
						t.Errorf("wrong result: %v", err)
					}
					ok.Add(1)
				case 503:
					unavailable.Add(1)
				default:
					other.Add(1)
					t.Errorf("status %d: %s", resp.StatusCode, b)
				}
			}
		}()
	}
	waitFor(t, "some load", func() bool { return ok.Load() > 50 })
	// Hold the engine so that requests are queued and in flight at the
	// signal, then let them finish during the drain.
	gate.Close()
	waitFor(t, "queued requests", func() bool { return srv.b.QueueDepth() > 4 })
	stopping.Store(true)
	stop()
	waitFor(t, "readyz to report draining", func() bool { return srv.draining.Load() })
	time.Sleep(50 * time.Millisecond)
	gate.Release()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after drain: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("drain did not finish")
	}
	wg.Wait()
	server200 := testutil.ToFloat64(srv.m.requests.WithLabelValues(api.PathEncode, "200"))
	server503 := testutil.ToFloat64(srv.m.requests.WithLabelValues(api.PathEncode, "503"))
	t.Logf("ok %d, 503 %d, transport errors after the drain %d; server counted %v and %v", ok.Load(), unavailable.Load(), transport.Load(), server200, server503)
	if server200 != float64(ok.Load()) || server503 != float64(unavailable.Load()) {
		t.Errorf("server answered %v x 200 and %v x 503, clients received %d and %d", server200, server503, ok.Load(), unavailable.Load())
	}
	if other.Load() != 0 {
		t.Errorf("%d unexpected statuses", other.Load())
	}
}

// TestDrainingAnswers503: after StartDrain, /readyz and API routes answer
// 503 with Retry-After, /healthz stays 200.
func TestDrainingAnswers503(t *testing.T) {
	e := newEnv(t, false, nil)
	e.srv.StartDrain()
	if code, _ := get(t, e.ts.URL+api.PathReady); code != 503 {
		t.Errorf("readyz while draining: %d", code)
	}
	if code, _ := get(t, e.ts.URL+api.PathHealth); code != 200 {
		t.Errorf("healthz while draining: %d", code)
	}
	_, err := e.cl.Quantize(context.Background(), make([]float32, testCfg.LatentDim), 1)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 503 || !errors.Is(err, api.ErrDraining) || ae.RetryAfter != time.Second {
		t.Errorf("API while draining: %v", err)
	}
}

// TestTLS: Serve with a certificate answers over HTTPS.
func TestTLS(t *testing.T) {
	ts := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate
	defer ts.Close()
	cert := ts.TLS.Certificates[0]
	dir := t.TempDir()
	certPEM, keyPEM := pemEncode(t, cert)
	os.WriteFile(dir+"/cert.pem", certPEM, 0o600)
	os.WriteFile(dir+"/key.pem", keyPEM, 0o600)
	tok := newTok(t)
	srv, err := New(Config{Engine: tok})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, 5*time.Second, dir+"/cert.pem", dir+"/key.pem") }()
	cl := api.NewClient("https://" + ln.Addr().String())
	cl.HTTP = ts.Client()
	if _, err := cl.Info(context.Background()); err != nil {
		t.Errorf("info over TLS: %v", err)
	}
	stop()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
