//go:build !unix

package safetensors

import (
	"errors"
	"os"
)

const canMmap = false

func mmapFile(f *os.File, size int) ([]byte, error) { return nil, errors.New("mmap not supported") }

func munmap(b []byte) error { return nil }
