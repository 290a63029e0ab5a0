// Package ckpt defines the read-only view of a tensor checkpoint that every
// checkpoint format (safetensors, PyTorch zip) presents to the loader.
package ckpt

import "fmt"

// DType names a stored element type, spelled as safetensors spells it
// ("F32", "F16", "BF16", "I64", ...).
type DType string

// Info describes one stored tensor.
type Info struct {
	Name  string
	DType DType
	Shape []int // row-major
}

// Elems returns the number of elements of the tensor.
func (i Info) Elems() int {
	n := 1
	for _, s := range i.Shape {
		n *= s
	}
	return n
}

// String renders the tensor as "name dtype [a b c]".
func (i Info) String() string { return fmt.Sprintf("%s %s %v", i.Name, i.DType, i.Shape) }

// Reader is an opened checkpoint. Implementations are safe for concurrent
// ReadFloat32 calls only if they say so; the core loader calls them
// serially, the image loader concurrently only for pth.File and
// safetensors.File, which say so.
type Reader interface {
	// Tensors lists every tensor the reader serves, in file order (for
	// PyTorch checkpoints, the core tensors; see pth.File.AllTensors).
	Tensors() []Info
	// ReadFloat32 returns the named tensor converted to float32 (from F32,
	// F16 or BF16), row-major and contiguous, in a freshly allocated slice.
	// An unknown name, an unsupported dtype or a short file is an error
	// that names the tensor.
	ReadFloat32(name string) ([]float32, error)
	// Metadata returns string metadata (safetensors __metadata__, or values
	// derived from a PyTorch checkpoint's args); never nil.
	Metadata() map[string]string
	// Close releases the file.
	Close() error
}

// Viewer is a Reader that can serve tensors without copying them: float32
// tensors stored little-endian, contiguous and 4-byte aligned in a
// memory-mapped file are returned as views of the mapping.
type Viewer interface {
	Reader
	// ViewFloat32 is ReadFloat32 that may return the reader's own memory
	// instead of a fresh slice; aliased says which. An aliased slice must
	// not be written (a read-only mapping faults) and is valid only until
	// Close, which unmaps it: a caller that keeps the values copies them.
	// Other dtypes (F16, BF16) are converted once, into a fresh slice.
	// Reading a mapping whose file was truncated underneath faults
	// (SIGBUS); a caller that must survive it reads under
	// debug.SetPanicOnFault.
	ViewFloat32(name string) (v []float32, aliased bool, err error)
	// Release says that the named tensor's view is not needed any more:
	// the pages it lies on may be dropped from resident memory (they are
	// read again from the file if touched, so a view stays valid until
	// Close either way). A no-op for tensors that were not aliased.
	Release(name string)
}
