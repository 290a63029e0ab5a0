//go:build !linux

package mmapfile

// Release does nothing here: pages of a mapping stay resident until Unmap.
func Release(m []byte, off, n int) {}
