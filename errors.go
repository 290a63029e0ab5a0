package unitok

import (
	"errors"
	"fmt"
	"math"
)

// Sentinel errors, matched with errors.Is.
var (
	ErrBadInput    = errors.New("bad input")
	ErrOutOfMemory = errors.New("out of memory")
	ErrNoDevice    = errors.New("no CUDA device")
	ErrNoCUDA      = errors.New("built without CUDA")
	ErrClosed      = errors.New("tokenizer is closed")
)

// Error is the one error type of the package: the operation, what went
// wrong, and for CUDA failures the raw status and CUDA error code.
type Error struct {
	Op       string // "encode", "checkpoint", "cuda malloc", ...
	Msg      string // one line, names the problem
	Kind     error  // one of the sentinels, or nil
	Status   int    // unitok_status from csrc, 0 if not from CUDA
	CUDACode int    // cudaError_t, 0 if none
}

func (e *Error) Error() string {
	if e.Op == "" {
		return e.Msg
	}
	return e.Op + ": " + e.Msg
}

// Unwrap lets errors.Is match the sentinel kind.
func (e *Error) Unwrap() error { return e.Kind }

// closedErr is op's error on a closed tokenizer.
func closedErr(op string) error {
	return &Error{Op: op, Msg: "tokenizer is closed", Kind: ErrClosed}
}

func badInput(op, format string, args ...any) error {
	return &Error{Op: op, Msg: fmt.Sprintf(format, args...), Kind: ErrBadInput}
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
