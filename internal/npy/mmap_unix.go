//go:build unix

package npy

import (
	"os"

	"golang.org/x/sys/unix"
)

const canMmap = true

func mmapFile(f *os.File, size int) ([]byte, error) {
	return unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
}

func munmap(b []byte) error { return unix.Munmap(b) }
