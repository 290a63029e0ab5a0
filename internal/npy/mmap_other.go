//go:build !unix

package npy

import (
	"errors"
	"os"
)

const canMmap = false

func mmapFile(f *os.File, size int) ([]byte, error) { return nil, errors.New("mmap not supported") }

func munmap(b []byte) error { return nil }
