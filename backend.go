package unitok

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// backend is one compute engine for a loaded Model. Inputs reaching a backend
// are already validated (shapes, finiteness, code ranges); codes are always
// in (M, K) row-major order here. Every method is safe for concurrent use.
type backend interface {
	// Name is the device string, "cpu" or "cuda:N".
	Name() string
	// QuantProj: x (B, N, C) -> dst (B, N, D).
	QuantProj(dst, x []float32, B, N int) error
	// PostQuantProj: z (B, N, D) -> dst (B, N, C).
	PostQuantProj(dst, z []float32, B, N int) error
	// Quantize: z (M, D) -> dst (M, K).
	Quantize(dst []int32, z []float32, M int) error
	// Lookup: codes (M, K) -> dst (M, D), the normalized codewords.
	Lookup(dst []float32, codes []int32, M int) error
	// Encode = QuantProj then Quantize: x (B, N, C) -> dst (B, N, K).
	Encode(dst []int32, x []float32, B, N int) error
	// Decode = Lookup then PostQuantProj: codes (B, N, K) -> dst (B, N, C).
	Decode(dst []float32, codes []int32, B, N int) error
	Close() error
}

// backendFactory builds a backend for m on the numbered device.
type backendFactory struct {
	// available reports whether the backend can run here (a GPU present);
	// a nil error means usable.
	available func(ordinal int) error
	open      func(m *Model, o *options, ordinal int) (backend, error)
}

var (
	backendsMu sync.RWMutex
	backends   = map[string]backendFactory{}
)

// registerBackend makes a device kind ("cpu", "cuda") selectable. Called from
// init functions; the CUDA backend registers itself only in cuda builds.
func registerBackend(kind string, f backendFactory) {
	backendsMu.Lock()
	defer backendsMu.Unlock()
	backends[kind] = f
}

// parseDevice splits "cuda:1" into ("cuda", 1); "cuda" is ordinal 0.
func parseDevice(s string) (kind string, ordinal int, err error) {
	kind, num, found := strings.Cut(strings.ToLower(strings.TrimSpace(s)), ":")
	if found {
		if _, err := fmt.Sscanf(num, "%d", &ordinal); err != nil || ordinal < 0 || fmt.Sprint(ordinal) != num {
			return "", 0, badInput("device", "bad device ordinal in %q", s)
		}
	}
	if kind != "cpu" && kind != "cuda" {
		return "", 0, badInput("device", "unknown device %q (want cpu, cuda or cuda:N)", s)
	}
	if kind == "cpu" && found {
		return "", 0, badInput("device", "cpu takes no ordinal: %q", s)
	}
	return kind, ordinal, nil
}

// openBackend picks and opens the backend named by o.device; "" means CUDA
// when this binary has it and a GPU is present, else CPU.
func openBackend(m *Model, o *options) (backend, error) {
	backendsMu.RLock()
	defer backendsMu.RUnlock()
	if o.device == "" || o.device == "auto" {
		if f, ok := backends["cuda"]; ok && f.available(0) == nil {
			return f.open(m, o, 0)
		}
		f, ok := backends["cpu"]
		if !ok {
			return nil, badInput("device", "no backend registered")
		}
		return f.open(m, o, 0)
	}
	kind, ord, err := parseDevice(o.device)
	if err != nil {
		return nil, err
	}
	f, ok := backends[kind]
	if !ok {
		return nil, &Error{Op: "device", Msg: fmt.Sprintf("%s requested but this binary was built without CUDA (build with -tags cuda)", o.device), Kind: ErrNoCUDA}
	}
	if err := f.available(ord); err != nil {
		return nil, err
	}
	return f.open(m, o, ord)
}

// Devices lists the device kinds compiled into this binary.
func Devices() []string {
	backendsMu.RLock()
	defer backendsMu.RUnlock()
	var out []string
	for k := range backends {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
