//go:build !unix

// Package mmapfile maps whole files read-only, for the .npy and safetensors
// readers (large inputs are mapped, not read).
package mmapfile

import (
	"errors"
	"os"
)

// Supported reports whether Map works on this platform.
const Supported = false

// Map is unavailable here; callers read the file instead.
func Map(f *os.File, size int) ([]byte, error) { return nil, errors.New("mmap not supported") }

// Unmap does nothing here.
func Unmap(b []byte) error { return nil }
