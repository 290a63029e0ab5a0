//go:build linux

package mmapfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// Release drops the resident pages of bytes [off, off+n) of a mapping m
// returned by Map (widened to whole pages): they stop counting towards the
// process's resident memory, and a later access reads them again from the
// file (MADV_DONTNEED on a shared file mapping), so the content stays
// valid. It is a hint: errors are ignored.
func Release(m []byte, off, n int) {
	if n <= 0 || off < 0 || off >= len(m) {
		return
	}
	// madvise wants a page-aligned start (a mapping starts on a page) and
	// rounds the length up to whole pages itself.
	lo := off &^ (os.Getpagesize() - 1)
	_ = unix.Madvise(m[lo:min(off+n, len(m))], unix.MADV_DONTNEED)
}
