package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoders for image.Decode
	_ "image/jpeg"
	"image/png"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/unitok/unitok/api"
	"github.com/unitok/unitok/internal/npy"
)

// ErrTooManyPixels is matched by the error DecodeImage returns for an image
// over the pixel limit (413).
var ErrTooManyPixels = errors.New("too many pixels")

// DecodeStd decodes a PNG, JPEG or GIF with the standard library, checking
// the pixel count from the header before decoding.
// `unitok serve` sets Config.DecodeImage to internal/imageio's decoder
// (PIL's conversion rules); this one serves tests and other embedders.
func DecodeStd(r io.Reader, maxPixels int) (image.Image, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, badRequest("cannot read the image header: %v", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > maxPixels {
		return nil, fmt.Errorf("%w: %s image is %dx%d, over the limit of %d pixels", ErrTooManyPixels, format, cfg.Width, cfg.Height, maxPixels)
	}
	im, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, badRequest("%s image: %v", format, err)
	}
	return im, nil
}

// EncodePNGStd writes x, one (3, S, S) image in [-1, 1], as an 8-bit RGB
// PNG: round((v+1)*127.5), clamped.
// `unitok serve` uses internal/imageio's (the same arithmetic).
func EncodePNGStd(w io.Writer, x []float32, S int) error {
	im := image.NewNRGBA(image.Rect(0, 0, S, S))
	for y := 0; y < S; y++ {
		for xx := 0; xx < S; xx++ {
			o := im.PixOffset(xx, y)
			for c := 0; c < 3; c++ {
				v := math.Round((float64(x[c*S*S+y*S+xx]) + 1) * 127.5)
				im.Pix[o+c] = uint8(min(max(v, 0), 255))
			}
			im.Pix[o+3] = 255
		}
	}
	return png.Encode(w, im)
}

// readBody reads the whole body within MaxBodyBytes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, &httpError{http.StatusRequestEntityTooLarge, api.KindTooLarge,
			fmt.Sprintf("body of %d bytes exceeds the limit of %d", r.ContentLength, s.cfg.MaxBodyBytes)}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, err
	}
	if err != nil {
		return nil, badRequest("reading the body: %v", err)
	}
	return b, nil
}

func mediaType(h string) string {
	mt, _, err := mime.ParseMediaType(h)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(h))
	}
	return mt
}

// arrayFormat is the request's array format: npy or json, else 415.
func arrayFormat(r *http.Request) (string, error) {
	switch mt := mediaType(r.Header.Get("Content-Type")); mt {
	case api.ContentNPY, "application/octet-stream":
		return api.ContentNPY, nil
	case api.ContentJSON:
		return api.ContentJSON, nil
	case "":
		return "", &httpError{http.StatusUnsupportedMediaType, api.KindMediaType, "no Content-Type: want application/x-npy or application/json"}
	default:
		return "", &httpError{http.StatusUnsupportedMediaType, api.KindMediaType, fmt.Sprintf("Content-Type %q: want application/x-npy or application/json", mt)}
	}
}

// negotiate picks the response format from Accept among offers; def is
// used for a missing Accept or a wildcard. 406 when nothing fits.
func negotiate(r *http.Request, def string, offers ...string) (string, error) {
	accept := r.Header.Get("Accept")
	if strings.TrimSpace(accept) == "" {
		return def, nil
	}
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
				continue
			}
		}
		if mt == "*/*" {
			return def, nil
		}
		for _, o := range offers {
			if mt == o {
				return o, nil
			}
			if strings.HasSuffix(mt, "/*") && strings.HasPrefix(o, strings.TrimSuffix(mt, "*")) {
				if strings.HasPrefix(def, strings.TrimSuffix(mt, "*")) {
					return def, nil
				}
				return o, nil
			}
		}
	}
	return "", &httpError{http.StatusNotAcceptable, api.KindNotAcceptable,
		fmt.Sprintf("Accept %q: this route answers %s", accept, strings.Join(offers, ", "))}
}

// wireArray is a parsed request array.
type wireArray struct {
	shape []int
	f32   []float32
	i32   []int32
}

// readArray reads an .npy or JSON array body. wantFloat selects float or
// integer data; name is used in messages ("features", "codes", ...).
func (s *Server) readArray(w http.ResponseWriter, r *http.Request, name string, wantFloat bool) (*wireArray, string, error) {
	format, err := arrayFormat(r)
	if err != nil {
		return nil, "", err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, "", err
	}
	if format == api.ContentNPY {
		a, err := npy.FromBytes(body)
		if err != nil {
			return nil, "", badRequest("%s: malformed .npy: %v", name, err)
		}
		out := &wireArray{shape: a.Shape}
		if wantFloat {
			if !a.DType.IsFloat() {
				return nil, "", badRequest("%s: dtype %s, want a float dtype", name, a.DType.Name())
			}
			out.f32, err = a.Float32()
		} else {
			if !a.DType.IsInt() {
				return nil, "", badRequest("%s: dtype %s, want an integer dtype", name, a.DType.Name())
			}
			out.i32, err = a.Int32()
		}
		if err != nil {
			return nil, "", badRequest("%s: %v", name, err)
		}
		return out, format, nil
	}
	a, err := parseJSONArray(body, wantFloat)
	if err != nil {
		return nil, "", badRequest("%s: %v", name, err)
	}
	return a, format, nil
}

// parseJSONArray reads a nested JSON array of numbers (rectangular).
func parseJSONArray(body []byte, wantFloat bool) (*wireArray, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("malformed JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("malformed JSON: data after the array")
	}
	a := &wireArray{}
	// Shape from the first element at each depth.
	for x := v; ; {
		l, ok := x.([]any)
		if !ok {
			break
		}
		a.shape = append(a.shape, len(l))
		if len(l) == 0 {
			break
		}
		x = l[0]
	}
	if len(a.shape) == 0 {
		return nil, errors.New("want a JSON array")
	}
	var walk func(x any, depth int, path string) error
	walk = func(x any, depth int, path string) error {
		if depth == len(a.shape) {
			n, ok := x.(json.Number)
			if !ok {
				return fmt.Errorf("element %s is %T, want a number", path, x)
			}
			if wantFloat {
				f, err := strconv.ParseFloat(string(n), 32)
				if err != nil {
					return fmt.Errorf("element %s: %v", path, err)
				}
				a.f32 = append(a.f32, float32(f))
			} else {
				i, err := strconv.ParseInt(string(n), 10, 32)
				if err != nil {
					return fmt.Errorf("element %s = %s: want a 32-bit integer", path, n)
				}
				a.i32 = append(a.i32, int32(i))
			}
			return nil
		}
		l, ok := x.([]any)
		if !ok || len(l) != a.shape[depth] {
			return fmt.Errorf("ragged array at %s: want %d elements", path, a.shape[depth])
		}
		for i, e := range l {
			if err := walk(e, depth+1, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(v, 0, ""); err != nil {
		return nil, err
	}
	if wantFloat && a.f32 == nil {
		a.f32 = []float32{}
	}
	if !wantFloat && a.i32 == nil {
		a.i32 = []int32{}
	}
	return a, nil
}

// writeArray answers with a float or int array in the chosen format.
func writeArray(w http.ResponseWriter, format string, shape []int, f32 []float32, i32 []int32) error {
	if format == api.ContentJSON {
		w.Header().Set("Content-Type", api.ContentJSON)
		buf := make([]byte, 0, 16*(len(f32)+len(i32))+64)
		buf = appendJSON(buf, shape, f32, i32)
		buf = append(buf, '\n')
		_, err := w.Write(buf)
		return err
	}
	w.Header().Set("Content-Type", api.ContentNPY)
	_, err := w.Write(api.AppendNPY(nil, shape, f32, i32))
	return err
}

func appendJSON(buf []byte, shape []int, f32 []float32, i32 []int32) []byte {
	if len(shape) == 0 {
		if f32 != nil {
			return strconv.AppendFloat(buf, float64(f32[0]), 'g', -1, 32)
		}
		return strconv.AppendInt(buf, int64(i32[0]), 10)
	}
	stride := 1
	for _, d := range shape[1:] {
		stride *= d
	}
	buf = append(buf, '[')
	for i := 0; i < shape[0]; i++ {
		if i > 0 {
			buf = append(buf, ',')
		}
		if f32 != nil {
			buf = appendJSON(buf, shape[1:], f32[i*stride:(i+1)*stride], nil)
		} else {
			buf = appendJSON(buf, shape[1:], nil, i32[i*stride:(i+1)*stride])
		}
	}
	return append(buf, ']')
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", api.ContentJSON)
	w.WriteHeader(status)
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}

// batchShape reads (B, N, W) or (N, W) (then B = 1); width must be want.
func batchShape(name string, shape []int, widthName string, want int) (B, N int, err error) {
	switch len(shape) {
	case 3:
		B, N = shape[0], shape[1]
	case 2:
		B, N = 1, shape[0]
	default:
		return 0, 0, badRequest("%s: rank %d %v, want (B, N, %s) or (N, %s)", name, len(shape), shape, widthName, widthName)
	}
	if w := shape[len(shape)-1]; w != want {
		return 0, 0, badRequest("%s: last axis is %d, want %s=%d", name, w, widthName, want)
	}
	if B <= 0 || N <= 0 {
		return 0, 0, badRequest("%s: empty shape %v", name, shape)
	}
	return B, N, nil
}

// rowShape reads (M, W); width must be want.
func rowShape(name string, shape []int, widthName string, want int) (int, error) {
	if len(shape) != 2 {
		return 0, badRequest("%s: rank %d %v, want (M, %s)", name, len(shape), shape, widthName)
	}
	if shape[1] != want {
		return 0, badRequest("%s: last axis is %d, want %s=%d", name, shape[1], widthName, want)
	}
	if shape[0] <= 0 {
		return 0, badRequest("%s: no rows", name)
	}
	return shape[0], nil
}

// outShape keeps the request's rank: (B, N, W) or (N, W).
func outShape(rank, B, N, W int) []int {
	if rank == 2 {
		return []int{N, W}
	}
	return []int{B, N, W}
}

func (s *Server) handleEncode(w http.ResponseWriter, r *http.Request) error {
	c := s.b.Config()
	a, format, err := s.readArray(w, r, "features", true)
	if err != nil {
		return err
	}
	B, N, err := batchShape("features", a.shape, "C", c.InDim)
	if err != nil {
		return err
	}
	out, err := negotiate(r, format, api.ContentNPY, api.ContentJSON)
	if err != nil {
		return err
	}
	codes, err := s.b.Encode(r.Context(), a.f32, B, N)
	if err != nil {
		return err
	}
	s.m.tokens.Add(float64(B * N))
	return writeArray(w, out, outShape(len(a.shape), B, N, c.NumCodebooks), nil, codes)
}

func (s *Server) handleDecode(w http.ResponseWriter, r *http.Request) error {
	c := s.b.Config()
	a, format, err := s.readArray(w, r, "codes", false)
	if err != nil {
		return err
	}
	B, N, err := batchShape("codes", a.shape, "K", c.NumCodebooks)
	if err != nil {
		return err
	}
	out, err := negotiate(r, format, api.ContentNPY, api.ContentJSON)
	if err != nil {
		return err
	}
	feats, err := s.b.Decode(r.Context(), a.i32, B, N)
	if err != nil {
		return err
	}
	s.m.tokens.Add(float64(B * N))
	return writeArray(w, out, outShape(len(a.shape), B, N, c.InDim), feats, nil)
}

func (s *Server) handleQuantize(w http.ResponseWriter, r *http.Request) error {
	c := s.b.Config()
	a, format, err := s.readArray(w, r, "latents", true)
	if err != nil {
		return err
	}
	M, err := rowShape("latents", a.shape, "D", c.LatentDim)
	if err != nil {
		return err
	}
	out, err := negotiate(r, format, api.ContentNPY, api.ContentJSON)
	if err != nil {
		return err
	}
	codes, err := s.b.Quantize(r.Context(), a.f32, M)
	if err != nil {
		return err
	}
	s.m.tokens.Add(float64(M))
	return writeArray(w, out, []int{M, c.NumCodebooks}, nil, codes)
}

func (s *Server) handleLookup(w http.ResponseWriter, r *http.Request) error {
	c := s.b.Config()
	a, format, err := s.readArray(w, r, "codes", false)
	if err != nil {
		return err
	}
	M, err := rowShape("codes", a.shape, "K", c.NumCodebooks)
	if err != nil {
		return err
	}
	out, err := negotiate(r, format, api.ContentNPY, api.ContentJSON)
	if err != nil {
		return err
	}
	lat, err := s.b.Lookup(r.Context(), a.i32, M)
	if err != nil {
		return err
	}
	s.m.tokens.Add(float64(M))
	return writeArray(w, out, []int{M, c.LatentDim}, lat, nil)
}

// readImages reads one image body (image/*) or several (multipart).
func (s *Server) readImages(w http.ResponseWriter, r *http.Request) ([]image.Image, error) {
	if s.b.ImageEngine() == nil {
		return nil, &httpError{http.StatusNotImplemented, api.KindNoImageModel, "the checkpoint has no image encoder/decoder"}
	}
	ct := r.Header.Get("Content-Type")
	mt, params, _ := mime.ParseMediaType(ct)
	isMultipart := strings.HasPrefix(mt, "multipart/")
	if !isMultipart && !strings.HasPrefix(mt, "image/") && mt != "application/octet-stream" {
		return nil, &httpError{http.StatusUnsupportedMediaType, api.KindMediaType,
			fmt.Sprintf("Content-Type %q: want image/png, image/jpeg, image/gif or multipart/form-data", mt)}
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	if !isMultipart {
		im, err := s.decodeImage(body, 0)
		if err != nil {
			return nil, err
		}
		return []image.Image{im}, nil
	}
	if params["boundary"] == "" {
		return nil, badRequest("multipart body without a boundary")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var imgs []image.Image
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, badRequest("multipart part %d: %v", i, err)
		}
		if len(imgs) == s.cfg.MaxImages {
			return nil, &httpError{http.StatusRequestEntityTooLarge, api.KindTooLarge,
				fmt.Sprintf("more than %d images in one request", s.cfg.MaxImages)}
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, badRequest("multipart part %d: %v", i, err)
		}
		im, err := s.decodeImage(data, i)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, im)
	}
	if len(imgs) == 0 {
		return nil, badRequest("multipart body holds no images")
	}
	return imgs, nil
}

func (s *Server) decodeImage(data []byte, i int) (image.Image, error) {
	im, err := s.cfg.DecodeImage(bytes.NewReader(data), s.cfg.MaxPixels)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			he.msg = fmt.Sprintf("image %d: %s", i, he.msg)
			return nil, he
		}
		if errors.Is(err, ErrTooManyPixels) {
			return nil, &httpError{http.StatusRequestEntityTooLarge, api.KindTooLarge, fmt.Sprintf("image %d: %v", i, err)}
		}
		return nil, badRequest("image %d: %v", i, err)
	}
	return im, nil
}

func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request) error {
	out, err := negotiate(r, api.ContentNPY, api.ContentNPY, api.ContentJSON)
	if err != nil {
		return err
	}
	imgs, err := s.readImages(w, r)
	if err != nil {
		return err
	}
	codes, err := s.b.TokenizeImages(r.Context(), imgs)
	if err != nil {
		return err
	}
	s.m.images.Add(float64(len(imgs)))
	K := s.b.Config().NumCodebooks
	B := len(imgs)
	return writeArray(w, out, []int{B, len(codes) / (B * K), K}, nil, codes)
}

func (s *Server) handleEmbed(w http.ResponseWriter, r *http.Request) error {
	out, err := negotiate(r, api.ContentNPY, api.ContentNPY, api.ContentJSON)
	if err != nil {
		return err
	}
	imgs, err := s.readImages(w, r)
	if err != nil {
		return err
	}
	emb, err := s.b.EmbedImages(r.Context(), imgs)
	if err != nil {
		return err
	}
	s.m.images.Add(float64(len(imgs)))
	B := len(imgs)
	return writeArray(w, out, []int{B, len(emb) / B}, emb, nil)
}

func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request) error {
	ie := s.b.ImageEngine()
	if ie == nil {
		return &httpError{http.StatusNotImplemented, api.KindNoImageModel, "the checkpoint has no image encoder/decoder"}
	}
	c := s.b.Config()
	a, format, err := s.readArray(w, r, "codes", false)
	if err != nil {
		return err
	}
	B, N, err := batchShape("codes", a.shape, "K", c.NumCodebooks)
	if err != nil {
		return err
	}
	def := format
	out, err := negotiate(r, def, api.ContentPNG, api.ContentNPY, api.ContentJSON)
	if err != nil {
		return err
	}
	x, err := s.b.Detokenize(r.Context(), a.i32, B)
	if err != nil {
		return err
	}
	s.m.images.Add(float64(B))
	S := ie.ImageSize()
	if out != api.ContentPNG {
		return writeArray(w, out, []int{B, 3, S, S}, x, nil)
	}
	_ = N
	per := 3 * S * S
	if B == 1 {
		var buf bytes.Buffer
		if err := s.cfg.EncodePNG(&buf, x[:per], S); err != nil {
			return err
		}
		w.Header().Set("Content-Type", api.ContentPNG)
		_, err := w.Write(buf.Bytes())
		return err
	}
	// Several images: multipart/mixed, one PNG part each.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for b := 0; b < B; b++ {
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", api.ContentPNG)
		h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%d.png"`, b))
		pw, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		if err := s.cfg.EncodePNG(pw, x[b*per:(b+1)*per], S); err != nil {
			return err
		}
	}
	if err := mw.Close(); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	_, err = w.Write(buf.Bytes())
	return err
}
