package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sentinels matched with errors.Is on a client *Error.
var (
	ErrBadInput     = errors.New("bad input")
	ErrUnauthorized = errors.New("unauthorized")
	ErrOverloaded   = errors.New("overloaded")
	ErrDraining     = errors.New("server is draining")
	ErrDeadline     = errors.New("deadline exceeded on the server")
	ErrNoImageModel = errors.New("no image model")
	ErrTooLarge     = errors.New("request too large")
)

var kindErr = map[string]error{
	KindBadInput: ErrBadInput, KindUnauthorized: ErrUnauthorized, KindOverloaded: ErrOverloaded,
	KindDraining: ErrDraining, KindDeadline: ErrDeadline, KindNoImageModel: ErrNoImageModel,
	KindTooLarge: ErrTooLarge,
}

// Error is a server error response.
type Error struct {
	Status     int
	Kind       string
	Message    string
	RetryAfter time.Duration // from Retry-After, on 429 and 503
}

func (e *Error) Error() string {
	return fmt.Sprintf("unitok server: %d %s: %s", e.Status, e.Kind, e.Message)
}

// Unwrap maps the kind to one of the package's sentinels.
func (e *Error) Unwrap() error { return kindErr[e.Kind] }

// Client calls a unitok server. Its methods mirror the library's (and
// package batch's): flat row-major arrays with explicit shapes. It is safe
// for concurrent use.
type Client struct {
	BaseURL string       // e.g. "http://127.0.0.1:8080"
	HTTP    *http.Client // nil: http.DefaultClient
	Token   string       // bearer token, if the server wants one

	mu sync.Mutex
	k  int // K, cached from Info
}

// NewClient returns a client for baseURL.
func NewClient(baseURL string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/")}
}

// Encode turns features (B, N, C) into codes (B, N, K).
func (c *Client) Encode(ctx context.Context, features []float32, B, N int) ([]int32, error) {
	a, err := c.postArray(ctx, PathEncode, []int{B, N, -1}, features, nil)
	if err != nil {
		return nil, err
	}
	return a.ints()
}

// Decode turns codes (B, N, K) into features (B, N, C).
func (c *Client) Decode(ctx context.Context, codes []int32, B, N int) ([]float32, error) {
	a, err := c.postArray(ctx, PathDecode, []int{B, N, -1}, nil, codes)
	if err != nil {
		return nil, err
	}
	return a.floats()
}

// Quantize turns latents (M, D) into codes (M, K).
func (c *Client) Quantize(ctx context.Context, latents []float32, M int) ([]int32, error) {
	a, err := c.postArray(ctx, PathQuantize, []int{M, -1}, latents, nil)
	if err != nil {
		return nil, err
	}
	return a.ints()
}

// Lookup turns codes (M, K) into latents (M, D).
func (c *Client) Lookup(ctx context.Context, codes []int32, M int) ([]float32, error) {
	a, err := c.postArray(ctx, PathLookup, []int{M, -1}, nil, codes)
	if err != nil {
		return nil, err
	}
	return a.floats()
}

// Detokenize turns codes (B, N, K) into images (B, 3, S, S) in [-1, 1].
func (c *Client) Detokenize(ctx context.Context, codes []int32, B int) ([]float32, error) {
	K, err := c.numCodebooks(ctx)
	if err != nil {
		return nil, err
	}
	a, err := c.postArray(ctx, PathDetokenize, []int{B, -1, K}, nil, codes)
	if err != nil {
		return nil, err
	}
	return a.floats()
}

// TokenizeImages sends the images (as PNG) and returns codes (B, N, K).
func (c *Client) TokenizeImages(ctx context.Context, imgs []image.Image) ([]int32, error) {
	a, err := c.postImages(ctx, PathTokenize, imgs)
	if err != nil {
		return nil, err
	}
	return a.ints()
}

// EmbedImages sends the images (as PNG) and returns embeddings (B, E).
func (c *Client) EmbedImages(ctx context.Context, imgs []image.Image) ([]float32, error) {
	a, err := c.postImages(ctx, PathEmbed, imgs)
	if err != nil {
		return nil, err
	}
	return a.floats()
}

// Info returns the server's model, device and limits.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	body, _, err := c.do(ctx, http.MethodGet, PathInfo, "", nil, ContentJSON)
	if err != nil {
		return nil, err
	}
	var info Info
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("unitok server: /v1/info: %v", err)
	}
	return &info, nil
}

// postArray sends one array as .npy. shape holds the known dimensions and
// one -1 for the width the server knows (C, K or D), resolved from the data
// length.
func (c *Client) postArray(ctx context.Context, path string, shape []int, f32 []float32, i32 []int32) (*Array, error) {
	n := len(f32) + len(i32)
	known, free := 1, -1
	for i, s := range shape {
		if s < 0 {
			free = i
			continue
		}
		known *= s
	}
	if known <= 0 || n%known != 0 || (free < 0 && n != known) {
		return nil, fmt.Errorf("unitok client: %s: %d values do not fit shape %v", path, n, shape)
	}
	if free >= 0 {
		shape[free] = n / known
	}
	body := AppendNPY(nil, shape, f32, i32)
	resp, _, err := c.do(ctx, http.MethodPost, path, ContentNPY, body, ContentNPY)
	if err != nil {
		return nil, err
	}
	return ParseNPY(resp)
}

// numCodebooks returns K from /v1/info, fetched once.
func (c *Client) numCodebooks(ctx context.Context) (int, error) {
	c.mu.Lock()
	k := c.k
	c.mu.Unlock()
	if k > 0 {
		return k, nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.k = info.Model.NumCodebooks
	c.mu.Unlock()
	return info.Model.NumCodebooks, nil
}

func (c *Client) postImages(ctx context.Context, path string, imgs []image.Image) (*Array, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i, im := range imgs {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="image"; filename="%d.png"`, i))
		h.Set("Content-Type", ContentPNG)
		w, err := mw.CreatePart(h)
		if err != nil {
			return nil, err
		}
		if err := png.Encode(w, im); err != nil {
			return nil, fmt.Errorf("unitok client: image %d: %v", i, err)
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	resp, _, err := c.do(ctx, http.MethodPost, path, mw.FormDataContentType(), buf.Bytes(), ContentNPY)
	if err != nil {
		return nil, err
	}
	return ParseNPY(resp)
}

func (c *Client) do(ctx context.Context, method, path, ctype string, body []byte, accept string) ([]byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", accept)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, nil, decodeError(resp, b)
	}
	return b, resp.Header, nil
}

func decodeError(resp *http.Response, b []byte) error {
	e := &Error{Status: resp.StatusCode}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Kind != "" {
		e.Kind, e.Message = eb.Error.Kind, eb.Error.Message
	} else {
		e.Kind, e.Message = "http", strings.TrimSpace(string(b))
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

func (a *Array) ints() ([]int32, error) {
	if a.I32 == nil && len(a.F32) > 0 {
		return nil, errors.New("unitok client: server sent floats where codes were expected")
	}
	if a.I32 == nil {
		return []int32{}, nil
	}
	return a.I32, nil
}

func (a *Array) floats() ([]float32, error) {
	if a.F32 == nil && len(a.I32) > 0 {
		return nil, errors.New("unitok client: server sent codes where floats were expected")
	}
	if a.F32 == nil {
		return []float32{}, nil
	}
	return a.F32, nil
}
