// Package api holds the wire types of the unitok server and a Go client for
// it. It uses the standard library only, so services can link the client
// without pulling in the engine.
//
// Arrays travel as NumPy .npy bodies (Content-Type application/x-npy;
// float32 as '<f4', codes as '<i4'), or as JSON nested arrays for small
// requests (Content-Type application/json). Responses take the format the
// Accept header asks for, else the request's format. Errors are JSON
// ErrorBody values with the HTTP status of their kind.
package api

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Content types.
const (
	ContentNPY  = "application/x-npy"
	ContentJSON = "application/json"
	ContentPNG  = "image/png"
)

// Routes.
const (
	PathTokenize   = "/v1/tokenize"
	PathDetokenize = "/v1/detokenize"
	PathEmbed      = "/v1/embed"
	PathEncode     = "/v1/encode"
	PathDecode     = "/v1/decode"
	PathQuantize   = "/v1/quantize"
	PathLookup     = "/v1/lookup"
	PathInfo       = "/v1/info"
	PathHealth     = "/healthz"
	PathReady      = "/readyz"
	PathMetrics    = "/metrics"
)

// Error kinds in ErrorBody.Kind.
const (
	KindBadInput      = "bad_input"      // 400
	KindUnauthorized  = "unauthorized"   // 401
	KindNotFound      = "not_found"      // 404
	KindMethod        = "method"         // 405
	KindNotAcceptable = "not_acceptable" // 406
	KindTooLarge      = "too_large"      // 413
	KindMediaType     = "media_type"     // 415
	KindOverloaded    = "overloaded"     // 429
	KindInternal      = "internal"       // 500
	KindNoImageModel  = "no_image_model" // 501
	KindDraining      = "draining"       // 503
	KindDeadline      = "deadline"       // 504
	KindCanceled      = "canceled"       // 499 (client went away; rarely seen)
	KindDevice        = "device"         // 500 (CUDA, out of memory)
)

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail names the problem.
type ErrorDetail struct {
	Status  int    `json:"status"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Info is the body of GET /v1/info.
type Info struct {
	Model   ModelInfo `json:"model"`
	Device  string    `json:"device"`
	Layout  string    `json:"layout"` // "bnk" or "bkn"
	Metric  string    `json:"metric"`
	Images  bool      `json:"images"`               // the image routes are served
	ImageSz int       `json:"image_size,omitempty"` // S, when Images
	Limits  Limits    `json:"limits"`
	Batch   BatchInfo `json:"batch"`
	Version string    `json:"version,omitempty"`
}

// ModelInfo is the tokenizer core's configuration.
type ModelInfo struct {
	Checkpoint   string `json:"checkpoint,omitempty"`
	InDim        int    `json:"in_dim"`        // C
	LatentDim    int    `json:"latent_dim"`    // D
	NumCodebooks int    `json:"num_codebooks"` // K
	CodebookSize int    `json:"codebook_size"` // V
	NumHeads     int    `json:"num_heads"`
	Causal       bool   `json:"causal"`
}

// Limits are the server's request limits.
type Limits struct {
	MaxBodyBytes     int64 `json:"max_body_bytes"`
	MaxImages        int   `json:"max_images"`
	MaxPixels        int   `json:"max_pixels"`
	RequestTimeoutMS int64 `json:"request_timeout_ms"`
}

// BatchInfo is the batcher's configuration.
type BatchInfo struct {
	MaxBatch  int   `json:"max_batch"`
	MaxTokens int   `json:"max_tokens"`
	MaxWaitUS int64 `json:"max_wait_us"`
	QueueSize int   `json:"queue_size"`
	Workers   int   `json:"workers"`
}

// Array is a decoded wire array: float32 or int32 data with its shape.
type Array struct {
	Shape []int
	F32   []float32 // set for float arrays
	I32   []int32   // set for integer arrays
}

// AppendNPY appends a version 1.0 .npy file holding a float32 ('<f4') or
// int32 ('<i4') array to dst.
func AppendNPY(dst []byte, shape []int, f32 []float32, i32 []int32) []byte {
	descr := "<f4"
	n := len(f32)
	if f32 == nil {
		descr, n = "<i4", len(i32)
	}
	dims := make([]string, len(shape))
	for i, s := range shape {
		dims[i] = strconv.Itoa(s)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, tuple)
	pad := 64 - (10+len(h)+1)%64
	if pad == 64 {
		pad = 0
	}
	h += strings.Repeat(" ", pad) + "\n"
	dst = append(dst, "\x93NUMPY\x01\x00"...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(h)))
	dst = append(dst, h...)
	dst = slicesGrow(dst, 4*n)
	if f32 != nil {
		for _, v := range f32 {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	} else {
		for _, v := range i32 {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(v))
		}
	}
	return dst
}

func slicesGrow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		return nb
	}
	return b
}

// ParseNPY reads a .npy file holding '<f4' or '<i4' data, as the server
// writes them. (The server itself accepts any numeric dtype.)
func ParseNPY(b []byte) (*Array, error) {
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" {
		return nil, errors.New("npy: not a .npy file")
	}
	var hl, off int
	switch b[6] {
	case 1:
		hl, off = int(binary.LittleEndian.Uint16(b[8:10])), 10
	case 2, 3:
		if len(b) < 12 {
			return nil, errors.New("npy: truncated header")
		}
		hl, off = int(binary.LittleEndian.Uint32(b[8:12])), 12
	default:
		return nil, fmt.Errorf("npy: unsupported version %d", b[6])
	}
	if len(b) < off+hl {
		return nil, errors.New("npy: truncated header")
	}
	h := string(b[off : off+hl])
	data := b[off+hl:]
	descr := between(h, "'descr':", ",")
	descr = strings.Trim(strings.TrimSpace(descr), "'\"")
	if strings.Contains(between(h, "'fortran_order':", ","), "True") {
		return nil, errors.New("npy: fortran order is not supported")
	}
	st := between(h, "'shape': (", ")")
	var shape []int
	n := 1
	for _, f := range strings.Split(st, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("npy: bad shape %q", st)
		}
		shape = append(shape, d)
		n *= d
	}
	if len(data) != 4*n {
		return nil, fmt.Errorf("npy: have %d data bytes, want %d for shape %v", len(data), 4*n, shape)
	}
	a := &Array{Shape: shape}
	switch descr {
	case "<f4":
		a.F32 = make([]float32, n)
		for i := range a.F32 {
			a.F32[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case "<i4":
		a.I32 = make([]int32, n)
		for i := range a.I32 {
			a.I32[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
		}
	default:
		return nil, fmt.Errorf("npy: dtype %q (want <f4 or <i4)", descr)
	}
	return a, nil
}

func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	if j := strings.Index(s, end); j >= 0 {
		return s[:j]
	}
	return s
}
