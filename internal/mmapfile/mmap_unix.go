//go:build unix

// Package mmapfile maps whole files read-only, for the .npy and safetensors
// readers (large inputs are mapped, not read).
package mmapfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// Supported reports whether Map works on this platform.
const Supported = true

// Map maps the first size bytes of f read-only (shared).
func Map(f *os.File, size int) ([]byte, error) {
	return unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
}

// Unmap releases a mapping returned by Map.
func Unmap(b []byte) error { return unix.Munmap(b) }
